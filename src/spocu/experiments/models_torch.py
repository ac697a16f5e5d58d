"""The compared networks in PyTorch, and their seeded initialization.

- ``seed-cnn``: Conv2d(C, 32, 3) -> act -> MaxPool 2 -> Conv2d(32, 64, 3) -> act -> MaxPool 2 ->
  Flatten -> Linear(., classes). "valid" convolutions; on 32x32x3 inputs 896 + 18,496 + 23,050 =
  42,442 parameters, as in the seed's Keras model. For other image sizes the layers adapt
  (28x28x1: 34,826 parameters); a pool is skipped where the map is below 2x2 (8x8 digits).
- ``mlp`` / ``deep-mlp``: Flatten -> [Linear -> act] per hidden width -> Linear(., classes).

:func:`initialize` draws every weight from one generator seeded by the run's seed, in layer
order: z ~ N(0, 1) (normal schemes) or z ~ U(-1, 1) (uniform schemes), then multiplies by the
scheme's std or bound (:data:`spocu.experiments.activations.INIT_SCHEMES`). Biases are zero. So
with the same seed, ReLU (He normal) and SELU (LeCun normal) start from the same draws,
the ReLU weights being exactly sqrt(2) times the SELU ones.

Example:
    >>> from spocu.experiments.activations import parse_activation
    >>> from spocu.experiments.config import ModelSpec
    >>> net = build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("relu"))
    >>> count_parameters(net)
    42442
"""

from __future__ import annotations

import math

import torch
from torch import nn

from spocu.experiments.activations import INIT_SCHEMES, ActivationSpec
from spocu.experiments.config import ModelSpec

__all__ = ["build_model", "initialize", "count_parameters", "macs_per_sample"]


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, activation: ActivationSpec) -> nn.Sequential:
    """The network ``spec`` for inputs of ``input_shape`` (features, or C x H x W) and ``num_classes`` outputs."""
    if spec.name == "seed-cnn":
        if len(input_shape) != 3:
            raise ValueError(f"seed-cnn needs image inputs (channels, height, width); this dataset has {input_shape} features: use mlp")
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out in (32, 64):
            if height < 3 or width < 3:
                raise ValueError(f"seed-cnn: a {height}x{width} feature map is too small for a 3x3 valid convolution")
            layers += [nn.Conv2d(channels, out, 3), activation.torch_module()]
            channels, height, width = out, height - 2, width - 2
            if height >= 2 and width >= 2:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
        layers += [nn.Flatten(), nn.Linear(channels * height * width, num_classes)]
        return nn.Sequential(*layers)
    features = math.prod(input_shape)
    layers = [nn.Flatten()]
    for width in spec.hidden:
        layers += [nn.Linear(features, width), activation.torch_module()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _fans(weight: torch.Tensor) -> tuple[int, int]:
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    return weight.shape[1] * receptive, weight.shape[0] * receptive


def _scale(scheme: str, fan_in: int, fan_out: int) -> float:
    return {
        "lecun-normal": math.sqrt(1.0 / fan_in),
        "he-normal": math.sqrt(2.0 / fan_in),
        "glorot-normal": math.sqrt(2.0 / (fan_in + fan_out)),
        "glorot-uniform": math.sqrt(6.0 / (fan_in + fan_out)),
        "torch-default": 1.0 / math.sqrt(fan_in),
    }[scheme]


@torch.no_grad()
def initialize(model: nn.Module, scheme: str, seed: int) -> None:
    """Set every Linear/Conv2d weight to scale(scheme) * z, z drawn in layer order from ``seed``; biases to 0."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}")
    distribution = INIT_SCHEMES[scheme][0]
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            shape = module.weight.shape
            if distribution == "normal":
                z = torch.randn(shape, generator=generator, dtype=torch.float64)
            else:
                z = torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1
            fan_in, fan_out = _fans(module.weight)
            module.weight.copy_((z * _scale(scheme, fan_in, fan_out)).to(module.weight.dtype))
            if module.bias is not None:
                module.bias.zero_()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def macs_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass through the Linear and Conv2d layers (one zero sample traced)."""
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            total += output.shape[1] * output.shape[2] * output.shape[3] * module.in_channels * math.prod(module.kernel_size)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape)))
    finally:
        for hook in hooks:
            hook.remove()
    return total
