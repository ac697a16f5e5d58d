"""What model a comparison trains: a built-in one by name, or the user's factory.

:class:`ModelSpec` names the model; :func:`is_model_factory` tells a factory
(``MODULE:FUNCTION`` or ``path/file.py:FUNCTION``) from a built-in name, and :data:`SWAPPABLE`
lists the activation kinds ``--swap`` replaces. Nothing here imports a framework.

Example:
    >>> ModelSpec.make("deep-mlp", depth=3, width=8).label
    'deep-mlp 3x8'
    >>> ModelSpec("mynet.py:build").is_factory
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["MODELS", "SWAPPABLE", "ModelSpec", "UserModelError", "factory_name", "is_model_factory", "parse_swap"]

MODELS = ("mlp", "deep-mlp", "seed-cnn", "resnet20")

#: Activation kinds ``--swap`` accepts (spocu.torch.replace.ACTIVATION_CLASSES and KNOWN_CLASSES); a dotted
#: class path (``mypkg.layers.StarReLU``) is accepted too.
SWAPPABLE = ("relu", "gelu", "silu", "swish", "elu", "selu", "celu", "tanh", "sigmoid", "mish", "leaky_relu", "relu6",
             "hardswish", "quick_gelu", "softplus")  # fmt: skip


def parse_swap(value: Any) -> str | None:
    """``--swap``'s kinds as the protocol records them: lower-case names and dotted class paths, comma-joined.

    Example:
        >>> parse_swap(["ReLU", "relu6"]), parse_swap("gelu, timm.layers.activations.GELUTanh"), parse_swap(None)
        ('relu,relu6', 'gelu,timm.layers.activations.GELUTanh', None)
    """
    if value is None:
        return None
    items = value.replace(",", " ").split() if isinstance(value, str) else [str(v).strip() for v in value]
    if not items:
        raise ValueError("--swap needs at least one activation kind")
    kinds = []
    for item in items:
        kind = item if "." in item.strip(".") else item.strip().lower().replace("-", "_")
        if "." not in kind and kind not in SWAPPABLE:
            raise ValueError(
                f"--swap {item}: not an activation kind; choose one of {', '.join(SWAPPABLE)}, or a dotted class path"
            )
        if kind not in kinds:
            kinds.append(kind)
    return ",".join(kinds)


class UserModelError(ValueError):
    """A model factory cannot be imported, called or used; the message names it."""


def factory_name(text: str) -> str:
    """How a factory is named in files and tables: ``package.module:function`` or ``file.py:function``
    (a file's name, not its folder: the protocol should not change when the experiment is resumed elsewhere)."""
    module_text, _, function_name = text.rpartition(":")
    if module_text.endswith(".py") or "/" in module_text or "\\" in module_text:
        return f"{Path(module_text).name}:{function_name}"
    return text


def is_model_factory(text: str) -> bool:
    """True for ``MODULE:FUNCTION`` or ``path/file.py:FUNCTION`` (a built-in model name has no colon)."""
    module, sep, function = text.rpartition(":")
    return bool(sep and module and function)


@dataclass(frozen=True)
class ModelSpec:
    """``mlp`` (``hidden`` widths), ``deep-mlp`` (``depth`` layers of ``width``), ``seed-cnn``,
    ``resnet20``, or a user's factory ``MODULE:FUNCTION`` / ``path/file.py:FUNCTION``.

    ``seed-cnn``: Conv2D 32 3x3 valid -> MaxPool 2 -> Conv2D 64 3x3 valid -> MaxPool 2 ->
    Flatten -> Dense (42,442 parameters on 32x32x3 inputs); a pool is skipped where the
    feature map is smaller than 2x2 (8x8 digits). ``resnet20``: the CIFAR ResNet-20 of He et
    al. 2016 (:class:`spocu.experiments.models.torch_models.ResNet20`). A factory
    (:mod:`spocu.experiments.models.factories`) carries ``swap`` (the activation kind it hard-wires,
    or None) and ``source_sha256`` (a hash of its source file, for the protocol).
    """

    name: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)
    swap: str | None = None
    source_sha256: str | None = None
    #: --allow-partial-swap: train although ops of the swapped kind still run (their count is recorded)
    allow_partial_swap: bool = False
    #: what the swap replaced, measured on the model before training ("35 of 35 relu (3 modules, ...)")
    swap_report: str | None = None
    swap_left: int | None = None

    def __post_init__(self) -> None:
        if is_model_factory(self.name):
            object.__setattr__(self, "hidden", ())
            return
        if self.swap is not None:
            raise ValueError(
                f"--swap applies to a model factory (--model MODULE:FUNCTION or file.py:FUNCTION), not to {self.name}"
            )
        if self.name not in MODELS:
            raise ValueError(
                f"unknown model {self.name!r}; choose one of {', '.join(MODELS)}, or a factory MODULE:FUNCTION or path/to/file.py:FUNCTION"
            )
        fixed = self.name in ("seed-cnn", "resnet20")
        if not fixed and (not self.hidden or any(int(h) < 1 for h in self.hidden)):
            raise ValueError(f"{self.name} needs at least one hidden layer of width >= 1, got {self.hidden}")
        object.__setattr__(self, "hidden", () if fixed else tuple(int(h) for h in self.hidden))

    @property
    def is_factory(self) -> bool:
        """A user's model factory (``MODULE:FUNCTION``), not a built-in model."""
        return self.name not in MODELS

    def protocol(self) -> dict[str, Any]:
        """The model's part of the protocol (a factory adds its swap and source hash)."""
        data: dict[str, Any] = {"name": self.name, "hidden": list(self.hidden)}
        if self.is_factory:
            data.update(name=factory_name(self.name), swap=self.swap, source_sha256=self.source_sha256)
            if self.swap is not None:
                data.update(swap_report=self.swap_report, swap_left=self.swap_left)
        return data

    @classmethod
    def make(
        cls, name: str, hidden: tuple[int, ...] | None = None, depth: int | None = None, width: int | None = None
    ) -> ModelSpec:
        """The spec of built-in model ``name`` from the command line's options: ``deep-mlp`` is ``depth``
        layers of ``width`` units (default 16 x 64), ``mlp`` its ``hidden`` widths (default 64, 64); a
        factory or a fixed network takes none.

        Example:
            >>> ModelSpec.make("deep-mlp", depth=3, width=8).hidden
            (8, 8, 8)
        """
        if name == "deep-mlp":
            depth = 16 if depth is None else depth
            width = 64 if width is None else width
            if depth < 1 or width < 1:
                raise ValueError(f"deep-mlp needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
            return cls(name, (width,) * depth)
        if name == "mlp":
            return cls(name, tuple(hidden) if hidden else (64, 64))
        return cls(name, ())

    def check_input(self, input_shape: tuple[int, ...], dataset: str = "this dataset") -> None:
        """Raise ValueError if the model cannot take inputs of ``input_shape`` (seed-cnn needs images).

        Example:
            >>> ModelSpec("seed-cnn").check_input((30,), "wdbc")
            Traceback (most recent call last):
            ...
            ValueError: --model seed-cnn needs images (channels, height, width); wdbc has 30 features: use --model mlp or deep-mlp
        """
        if self.name == "resnet20" and len(input_shape) != 3:
            shape = f"{input_shape[0]} features" if len(input_shape) == 1 else f"inputs of shape {tuple(input_shape)}"
            raise ValueError(
                f"--model resnet20 needs images (channels, height, width); {dataset} has {shape}: use --model mlp or deep-mlp"
            )
        if self.name != "seed-cnn":
            return
        if len(input_shape) != 3:
            shape = f"{input_shape[0]} features" if len(input_shape) == 1 else f"inputs of shape {tuple(input_shape)}"
            raise ValueError(
                f"--model seed-cnn needs images (channels, height, width); {dataset} has {shape}: use --model mlp or deep-mlp"
            )
        _, height, width = input_shape
        for _ in range(2):  # two 3x3 valid convolutions, each followed by a 2x2 pool where the map allows
            if height < 3 or width < 3:
                raise ValueError(
                    f"--model seed-cnn: {dataset}'s {input_shape[1]}x{input_shape[2]} images are too small for its two 3x3 convolutions"
                )
            height, width = height - 2, width - 2
            if height >= 2 and width >= 2:
                height, width = height // 2, width // 2

    @property
    def label(self) -> str:
        """The model's name for tables and reports, e.g. ``mlp 64-64``, ``deep-mlp 16x64`` or a factory's
        name with what it swapped.
        """
        if self.is_factory:
            return factory_name(self.name) + (f" ({self.swap} swapped)" if self.swap else "")
        if self.name in ("seed-cnn", "resnet20"):
            return self.name
        if self.name == "deep-mlp":
            return f"deep-mlp {len(self.hidden)}x{self.hidden[0]}"
        return "mlp " + "-".join(map(str, self.hidden))
