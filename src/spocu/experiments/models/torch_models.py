"""The compared networks in PyTorch, and their seeded initialization.

- ``seed-cnn``: Conv2d(C, 32, 3) -> act -> MaxPool 2 -> Conv2d(32, 64, 3) -> act -> MaxPool 2 ->
  Flatten -> Linear(., classes). "valid" convolutions; on 32x32x3 inputs 896 + 18,496 + 23,050 =
  42,442 parameters, as in the seed's Keras model. For other image sizes the layers adapt
  (28x28x1: 34,826 parameters); a pool is skipped where the map is below 2x2 (8x8 digits).
- ``mlp`` / ``deep-mlp``: Flatten -> [Linear -> act] per hidden width -> Linear(., classes).
- ``resnet20``: :class:`ResNet20`, the CIFAR ResNet-20 of He et al. 2016 (269,722 parameters
  for 3 x 32 x 32 inputs and 10 classes), with the activation wherever the paper has ReLU.

:func:`initialize` draws every weight from one generator seeded by the run's seed, in layer
order: z ~ N(0, 1) (normal schemes) or z ~ U(-1, 1) (uniform schemes), then multiplies by the
scheme's std or bound (:data:`spocu.experiments.activations.INIT_SCHEMES`). Biases are zero. So
with the same seed, ReLU (He normal) and SELU (LeCun normal) start from the same draws,
the ReLU weights being exactly sqrt(2) times the SELU ones.

Example:
    >>> from spocu.experiments.activations import parse_activation
    >>> from spocu.experiments.models.spec import ModelSpec
    >>> net = build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("relu"))
    >>> count_parameters(net)
    42442
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from spocu.experiments.activations import INIT_SCHEMES, OWN_INIT, ActivationSpec
from spocu.experiments.models.factories import (
    ModelFactory,
    UserModelError,
    call_factory,
    check_output,
    check_trainable,
    checked_and_swapped,
    load_spec_factory,
)
from spocu.experiments.models.spec import ModelSpec
from spocu.experiments.seeding import STREAM_INIT, derive_seed

__all__ = [
    "ResNet20",
    "build_model",
    "build_torch_model",
    "initialize",
    "count_parameters",
    "macs_per_sample",
    "probe_forward",
]


class _BasicBlock(nn.Module):
    """conv3x3 -> BN -> act -> conv3x3 -> BN, + shortcut, -> act (He et al. 2016, Fig. 2 left).

    Option-A shortcut (the paper's choice for CIFAR): the identity, and where the block halves
    the map and widens it, the input subsampled by 2 (every other pixel) with zero channels
    appended -- no parameters.
    """

    def __init__(self, channels_in: int, channels_out: int, stride: int, activation) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.act1 = activation()
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.act2 = activation()
        self.stride = stride
        self.extra_channels = channels_out - channels_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels:
            x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # zero channels after the input's
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet20(nn.Module):
    r"""The CIFAR ResNet-20 of He et al. 2016 (Deep Residual Learning, Sec. 4.2), activation swappable.

    conv3x3(16) -> BN -> act -> 3 stages x 3 basic blocks (16, 32, 64 channels; stages 2 and 3
    start with stride 2) -> global average pooling -> Linear(64, classes): 6n + 2 = 20 weighted
    layers for n = 3, 19 activations. Convolutions have no bias (batch norm follows);
    shortcuts are option A (identity; subsample + zero channels where the shape changes), so
    the parameters are those of the convolutions, batch norms and the classifier:
    269,722 for 3 x 32 x 32 inputs and 10 classes ("0.27M" in the paper's Table 6).

    ``activation``: a zero-argument factory of the activation module, called at each place.

    Example:
        >>> count_parameters(ResNet20(3, 10, torch.nn.ReLU))
        269722
    """

    def __init__(self, channels: int, num_classes: int, activation, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), activation())
        stages, width = [], 16
        for stage, out in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(_BasicBlock(width, out, stride, activation))
                width = out
        self.blocks = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ResNet-20's forward: stem, the three stages, global average pooling, the linear classifier."""
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, activation: ActivationSpec, seed: int = 0
) -> nn.Module:
    """The network ``spec`` for inputs of ``input_shape`` (features, or C x H x W) and ``num_classes`` outputs.

    A model factory (:mod:`spocu.experiments.models.factories`) is called under ``seed``; the built-in
    models are drawn by :func:`initialize`.
    """
    if spec.is_factory:
        factory = load_spec_factory(spec)
        return build_torch_model(
            factory, activation, input_shape, num_classes, seed, allow_partial_swap=spec.allow_partial_swap
        )
    if spec.name == "resnet20":
        if len(input_shape) != 3:
            raise ValueError(
                f"resnet20 needs image inputs (channels, height, width); this dataset has {input_shape} features: use mlp"
            )
        return ResNet20(input_shape[0], num_classes, activation.torch_module)
    if spec.name == "seed-cnn":
        if len(input_shape) != 3:
            raise ValueError(
                f"seed-cnn needs image inputs (channels, height, width); this dataset has {input_shape} features: use mlp"
            )
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
    """Set every Linear/Conv2d weight to scale(scheme) * z, z drawn in layer order from ``seed``; biases to 0.

    ``scheme`` :data:`~spocu.experiments.activations.OWN_INIT` leaves a user's model as its factory drew it.
    """
    if scheme == OWN_INIT:
        return
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
    """The number of trainable scalars (parameters with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def macs_per_sample(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass through the Linear and Conv2d layers (per sample).

    Traced on a zero batch of two in :func:`probe_forward` (eval mode, no grad): the model's
    mode, buffers (BatchNorm running statistics) and the global RNG state are as before.
    """
    total = 0

    def count(module: nn.Module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            total += (
                output.shape[1] * output.shape[2] * output.shape[3] * module.in_channels * math.prod(module.kernel_size)
            )

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        probe_forward(model, torch.zeros((2, *input_shape)))
    finally:
        for hook in hooks:
            hook.remove()
    return total  # counted per layer from its shapes: per sample, whatever the batch


def probe_forward(model: nn.Module, batch: torch.Tensor, *, training: bool = False):
    """``model(batch)`` as a side-effect-free probe: eval mode (or ``training``), no grad, the RNG forked.

    Every module's ``training`` flag and every buffer (BatchNorm's running mean, variance and
    batch count; a user's own buffers) are restored bit for bit afterwards, and the global torch
    RNG state is untouched -- so a sizing or checking probe changes nothing the training sees.
    Use a batch of at least two: some layers are undefined on one sample even outside training.
    """
    modes = [(module, module.training) for module in model.modules()]
    buffers = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.train(training)
            return model(batch)
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                if buffer.shape == saved.shape:
                    buffer.copy_(saved)
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def seeded_factory_call(seed: int) -> Iterator[None]:
    """torch, numpy and random seeded from ``seed`` inside; their states restored after."""
    import torch

    python_state, numpy_state, default_dtype = random.getstate(), np.random.get_state(), torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        value = derive_seed(seed, STREAM_INIT, 2)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            torch.set_default_dtype(default_dtype)  # a factory's torch.set_default_dtype stays inside it


def build_torch_model(
    factory: ModelFactory,
    activation: ActivationSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int,
    init: str | None = None,
    allow_partial_swap: bool = False,
):
    """The factory's ``nn.Module`` for ``activation``, built under ``seed``; checked on a zero batch.

    ``init``: a scheme of :data:`~spocu.experiments.activations.INIT_SCHEMES` to re-draw the
    weights with (as the built-in models), or None to keep the model's own initialization.

    One probe forward (eval mode, no grad state kept) checks what runs: with ``--swap``, that no op
    of the swapped kinds is left (else refused unless ``allow_partial_swap``; the model's
    ``spocu_swap`` records what was swapped); without, that the activations the factory was given
    run, reach the output, and no other activation kind runs beside them.
    """
    given: list = []

    def make_activation():
        module = activation.torch_module()
        given.append(module)
        return module

    with seeded_factory_call(seed):
        if factory.swap is None:
            model = call_factory(factory, (make_activation, tuple(input_shape), num_classes), {})
        else:
            model = call_factory(factory, (), factory.swap_kwargs(num_classes, tuple(input_shape)))
    model = checked_and_swapped(factory, model, nn.Module, "torch.nn.Module", lambda m, *_: m, None, ())
    if factory.swap is not None:
        model = _swapped(factory, model, activation, input_shape, allow_partial_swap)
    if init is not None:
        initialize(model, init, derive_seed(seed, STREAM_INIT))
    wrong = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.dtype != torch.float32})
    if wrong:
        raise UserModelError(
            f"--model {factory.name}: the model's parameters are {', '.join(wrong)}; spocu compare trains in float32: "
            "build it in float32 (no torch.set_default_dtype or .double() in the factory)"
        )
    try:
        output = probe_forward(model, torch.zeros((2, *input_shape)))
    except Exception as error:
        raise UserModelError(
            f"--model {factory.name}: a batch of shape {(2, *input_shape)} does not go through the model: {type(error).__name__}: {error}"
        ) from None
    check_output(factory, output, num_classes, "PyTorch")
    check_trainable(factory, sum(p.numel() for p in model.parameters() if p.requires_grad))
    if factory.swap is None and not given:
        raise UserModelError(
            f"--model {factory.name}: never called activation(), so the compared activations would all train the same "
            "network; use activation() where the activation goes (or --swap NAME for a model with its own activation)"
        )
    if factory.swap is None:
        _check_activation_used(factory, model, given, input_shape)
    return model


def _places(counts, limit: int = 3) -> str:
    """``counts`` ((kind, place) -> ops) as "12 relu: 8 in layer1.0 (net.py:20); 4 in ..."."""
    by_kind: dict[str, int] = {}
    for (kind, _), n in counts.items():
        by_kind[kind] = by_kind.get(kind, 0) + n
    places = sorted(counts.items(), key=lambda item: -item[1])
    where = "; ".join(f"{n} {kind} in {place}" for (kind, place), n in places[:limit])
    more = f"; and {len(places) - limit} more places" if len(places) > limit else ""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(by_kind.items())) + f" ({where}{more})"


def _swapped(factory: ModelFactory, model, activation: ActivationSpec, input_shape, allow_partial_swap: bool):
    """``model`` with --swap's kinds replaced, checked by one probe forward; refused if any op of them is left."""
    import warnings

    from spocu.torch.replace import replace_activations

    label = f"--model {factory.name} --swap {factory.swap.replace(',', ' ')}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # what is left is refused or recorded below, in one line
            report = replace_activations(model, factory.swap_kinds, activation.torch_module,
                                         example_inputs=torch.zeros((2, *input_shape)), strict=False, report=True)  # fmt: skip
    except (ValueError, TypeError) as error:
        raise UserModelError(f"{label}: {error}") from None
    except Exception as error:  # the probe forward: the user's model, anything it raises is a one-line refusal
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        raise UserModelError(
            f"--model {factory.name}: a batch of shape {(2, *input_shape)} does not go through the model: {detail}"
        ) from None
    if report.left and not allow_partial_swap:
        raise UserModelError(
            f"{label}: {report.left_count} ops of the swapped kind still run after the swap ({report.summary()}): "
            f"{report.where_left()}; the compared arms would still run them: use --allow-partial-swap to train anyway "
            "(the count is recorded)"
        )
    report.model.spocu_swap = {"summary": report.summary(), "left": report.left_count}
    return report.model


def _check_activation_used(factory: ModelFactory, model, given: list, input_shape) -> None:
    """One probe forward: the given activations run, their outputs reach the model's output, and no other kind runs."""
    from spocu.torch.replace import count_activations

    outputs: list = []
    ran: list[int] = []

    def record(module, args, output):
        ran.append(id(module))
        outputs.append(output)

    handles = [module.register_forward_hook(record) for module in given]
    result: list = []
    try:
        others = count_activations(model, torch.zeros((2, *input_shape)), call=lambda x: result.append(model(x)),
                                   exclude=given, grad=True)  # fmt: skip
    finally:
        for handle in handles:
            handle.remove()
    name = f"--model {factory.name}"
    if not ran:
        ran_instead = f"; it runs {_places(others)} instead" if others else ""
        raise UserModelError(
            f"{name}: called activation() {len(given)} times but never runs what it returned{ran_instead}, so every compared "
            "arm would train the same network; call the modules activation() returns in forward"
        )
    if others:
        raise UserModelError(
            f"{name}: runs other activations beside the one it was given: {_places(others)}; every compared arm would "
            "keep them: use activation() there too (or --swap NAME to swap a hard-wired kind)"
        )
    tracked = [t for t in outputs if isinstance(t, torch.Tensor) and t.requires_grad]
    output = result[0] if result else None
    if tracked and isinstance(output, torch.Tensor) and output.requires_grad:
        grads = torch.autograd.grad(output.float().sum(), tracked, allow_unused=True)
        unused = sum(g is None for g in grads)
        if unused:
            raise UserModelError(
                f"{name}: {unused} of {len(tracked)} calls of the activation it was given do not reach the model's output "
                "(their results are thrown away), so the compared arms would differ less than they should; use each "
                "activation's result"
            )
