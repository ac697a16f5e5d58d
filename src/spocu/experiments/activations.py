"""Activations by name, with parameters: ``"spocu"``, ``"spocu(c=1)"``, ``"elu(alpha=0.5)"``.

:func:`parse_activation` turns such a string into an :class:`ActivationSpec`: the
canonical name (defaults omitted, so ``spocu(c=1.0)`` and ``spocu(c=1)`` are the same
activation), its parameters, its customary weight initialization and a factory for the
PyTorch module. The spec itself is framework-neutral (a Keras engine builds its own layer
from ``name`` and ``params``).

Customary initializations (all layers, biases zero; see :data:`INIT_SCHEMES`):

============================  =================  ====================================================
activation                    init               why
============================  =================  ====================================================
selu                          lecun-normal       required for self-normalization (Klambauer et al. 2017)
spocu, spocu(learnable=True)  lecun-normal       SPOCU is built for self-normalization like SELU
prelu                         he-normal          He et al. 2015 (one learned slope, 0.25 at first)
relu, elu, gelu, silu, mish   he-normal          Kaiming normal, fan_in, gain sqrt(2) (He et al. 2015)
tanh, sigmoid                 glorot-normal      Glorot & Bengio 2010
============================  =================  ====================================================

Examples:
    >>> spec = parse_activation("spocu(c=1.0)")
    >>> spec.canonical, spec.init
    ('spocu(c=1)', 'lecun-normal')
    >>> parse_activation("relu").init
    'he-normal'
    >>> split_activation_list("spocu(alpha=3, beta=0.5), relu,selu")
    ['spocu(alpha=3, beta=0.5)', 'relu', 'selu']
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, check_kernel_range
from spocu.experiments.user_code import import_named, is_user_code, source_file, source_sha256

if TYPE_CHECKING:  # torch is imported where a module is built, not with this module
    import torch

__all__ = [
    "ACTIVATIONS",
    "INIT_SCHEMES",
    "OWN_INIT",
    "ActivationSpec",
    "parse_activation",
    "split_activation_list",
]

#: Weight-initialization schemes: (distribution of the shared draw z, std or bound as a function of fan_in, fan_out).
#: Normal schemes draw z ~ N(0, 1) and scale it; uniform schemes draw z ~ U(-1, 1) and scale it. So two
#: activations whose schemes share a distribution start from the same draws, differing only by a constant scale.
INIT_SCHEMES: dict[str, tuple[str, str]] = {
    "lecun-normal": ("normal", "std = sqrt(1 / fan_in)"),
    "he-normal": ("normal", "std = sqrt(2 / fan_in)"),
    "glorot-normal": ("normal", "std = sqrt(2 / (fan_in + fan_out))"),
    "glorot-uniform": ("uniform", "bound = sqrt(6 / (fan_in + fan_out))"),
    "torch-default": ("uniform", "bound = 1 / sqrt(fan_in) (nn.Linear/Conv2d's own init; biases zero here)"),
}

#: The init of a user's model factory (``--model MODULE:FUNCTION``) when no --init is given: the weights
#: its code draws (under the run's seed), not re-drawn.
OWN_INIT = "own"


@dataclass(frozen=True)
class _Kind:
    params: dict[str, Any]  # parameter -> default
    init: str
    init_reason: str


#: The customary init of the user's own activation (``MODULE:NAME``): unknown, so the ReLU family's; ``--init`` overrides it.
USER_INIT = ("he-normal", "your activation: He normal, as for the ReLU family (--init sets another)")

#: Known activations: parameters with defaults, customary init and why.
ACTIVATIONS: dict[str, _Kind] = {
    "spocu": _Kind(
        {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA, "gamma": DEFAULT_GAMMA, "c": DEFAULT_C, "learnable": False},
        "lecun-normal",
        "designed like SELU for self-normalizing networks, so SELU's LeCun normal",
    ),
    "relu": _Kind({}, "he-normal", "He et al. 2015 derived it for ReLU"),
    "prelu": _Kind(
        {"init": 0.25}, "he-normal", "He et al. 2015 introduced PReLU (one learned slope, 0.25 at first) with this init"
    ),
    "selu": _Kind({}, "lecun-normal", "required by SELU's self-normalization (Klambauer et al. 2017)"),
    "gelu": _Kind({"approximate": "none"}, "he-normal", "ReLU-like; He normal as for ReLU"),
    "elu": _Kind({"alpha": 1.0}, "he-normal", "ReLU-like; He normal as for ReLU"),
    "silu": _Kind({}, "he-normal", "ReLU-like; He normal as for ReLU"),
    "mish": _Kind({}, "he-normal", "ReLU-like; He normal as for ReLU"),
    "tanh": _Kind({}, "glorot-normal", "Glorot & Bengio 2010 derived it for tanh/sigmoid"),
    "sigmoid": _Kind({}, "glorot-normal", "Glorot & Bengio 2010 derived it for tanh/sigmoid"),
}

_SPEC_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if math.isinf(value):
        return "inf"
    return f"{value:.15g}"


def _parse_value(name: str, key: str, text: str, default: Any) -> Any:
    text = text.strip()
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"activation {name!r}: {key}={text!r} must be True or False")
        return text.lower() in ("true", "1")
    if isinstance(default, str):
        if not re.fullmatch(r"[A-Za-z_]+", text):
            raise ValueError(f"activation {name!r}: {key}={text!r} must be a word such as {default!r}")
        return text
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"activation {name!r}: {key}={text!r} is not a number") from None
    if math.isnan(value) or (math.isinf(value) and not (name == "spocu" and key == "c")):
        raise ValueError(f"activation {name!r}: {key}={text.strip()} is not a finite number")
    return value


@dataclass(frozen=True)
class ActivationSpec:
    """A parsed activation: ``name``, the parameters that differ from the defaults, and its init.

    ``canonical`` is the string that identifies the activation in files and tables;
    ``slug`` is its file-name-safe form (``spocu(c=1)`` -> ``spocu_c-1``).
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    init_override: str | None = field(default=None, compare=False)
    #: the user's activation (``MODULE:NAME`` or ``file.py:NAME``): its source file's sha256 (first 16 digits)
    source_sha256: str | None = field(default=None, compare=False)

    @property
    def is_user(self) -> bool:
        """The user's own activation, named ``MODULE:NAME`` or ``path/to/file.py:NAME``."""
        return is_user_code(self.name)

    @property
    def all_params(self) -> dict[str, Any]:
        """Every parameter of the activation, defaults filled in."""
        if self.is_user:
            return {}
        values = dict(ACTIVATIONS[self.name].params)
        values.update(self.params)
        return values

    @property
    def canonical(self) -> str:
        """The activation's name in files and tables: ``name(key=value, ...)``, defaults left out.

        Example:
            >>> parse_activation("spocu(c=1.0, alpha=3.0937)").canonical
            'spocu(c=1)'
        """
        if not self.params:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={_format_value(v)}" for k, v in self.params) + ")"

    @property
    def slug(self) -> str:
        """``canonical`` made safe for a file name (``spocu(c=1)`` -> ``spocu_c-1``; ``nets/act.py:f`` -> ``act.py-f``)."""
        if self.is_user:  # a file's name, not its folder, and the function's
            module, _, function = self.name.rpartition(":")
            return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{Path(module).name}-{function}")
        text = self.canonical.replace(", ", "_").replace("(", "_").replace(")", "").replace("=", "-")
        return re.sub(r"[^A-Za-z0-9_.+-]", "-", text)

    @property
    def customary_init(self) -> str:
        """The init scheme customary for this activation (see the module docstring's table)."""
        return USER_INIT[0] if self.is_user else ACTIVATIONS[self.name].init

    @property
    def init(self) -> str:
        """The init scheme this activation is trained with (the override, if any, else the customary one)."""
        return self.init_override or self.customary_init

    @property
    def init_reason(self) -> str:
        """Why this activation trains with its init, in words (the report shows it)."""
        if self.init_override == OWN_INIT:
            return "the model's own: its factory's code, under the run's seed"
        if self.init_override and self.init_override != self.customary_init:
            return f"--init {self.init_override} (customary: {self.customary_init})"
        return USER_INIT[1] if self.is_user else ACTIVATIONS[self.name].init_reason

    def with_init(self, scheme: str | None) -> ActivationSpec:
        """The same activation trained with ``scheme`` ("customary" or None: its own)."""
        if scheme in (None, "customary"):
            return replace(self, init_override=None)
        if scheme == OWN_INIT:
            return replace(self, init_override=OWN_INIT)
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"unknown init scheme {scheme!r}; choose customary or one of {', '.join(INIT_SCHEMES)}")
        return replace(self, init_override=scheme)

    def user_object(self) -> Any:
        """The user's function or class (imported once per process; its source checked against ``source_sha256``)."""
        obj, digest = load_user_activation(self.name)
        if self.source_sha256 is not None and digest != self.source_sha256:
            raise ValueError(
                f"--activations {self.name}: its source changed during the experiment (sha256 {self.source_sha256}, now {digest})"
            )
        return obj

    def torch_module(self) -> torch.nn.Module:
        """A fresh ``torch.nn.Module`` computing this activation (SPOCU via :class:`spocu.torch.SPOCU`)."""
        import torch.nn as nn

        if self.is_user:
            return _user_torch_module(self.name, self.user_object())
        p = self.all_params
        if self.name == "spocu":
            from spocu.torch import SPOCU

            return SPOCU(alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"], c=p["c"], learnable=p["learnable"])
        factories = {
            "relu": lambda: nn.ReLU(),
            "prelu": lambda: nn.PReLU(num_parameters=1, init=p["init"]),
            "selu": lambda: nn.SELU(),
            "gelu": lambda: nn.GELU(approximate=p["approximate"]),
            "elu": lambda: nn.ELU(alpha=p["alpha"]),
            "silu": lambda: nn.SiLU(),
            "mish": lambda: nn.Mish(),
            "tanh": lambda: nn.Tanh(),
            "sigmoid": lambda: nn.Sigmoid(),
        }
        return factories[self.name]()


def parse_activation(text: str, init: str | None = None) -> ActivationSpec:
    """Parse ``name`` or ``name(key=value, ...)`` into an :class:`ActivationSpec`.

    Keys are the activation's parameters (SPOCU: alpha, beta, gamma, c, checked against
    the paper's domain by :class:`spocu.core.SPOCUParams`); ``inf`` is a number.
    ``init`` overrides the customary initialization.

    Raises:
        ValueError: naming the unknown activation or parameter, or the bad value.

    Examples:
        >>> parse_activation("spocu(alpha=3.0937, c=inf)").canonical
        'spocu'
        >>> parse_activation("spocu(beta=2)")
        Traceback (most recent call last):
        ...
        ValueError: activation 'spocu(beta=2)': SPOCU parameter beta=2.0 is out of range: beta must lie in the open interval (0, 1)
    """
    if is_user_code(text.strip()):
        name = text.strip()
        _, digest = load_user_activation(name)
        return ActivationSpec(name, source_sha256=digest).with_init(init)
    match = _SPEC_RE.match(text)
    if not match:
        raise ValueError(f"cannot parse activation {text!r}: expected name or name(key=value, ...)")
    name = match.group(1).lower().replace("-", "_")
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {match.group(1)!r}; choose one of {', '.join(ACTIVATIONS)}")
    defaults = ACTIVATIONS[name].params
    given: dict[str, Any] = {}
    body = (match.group(2) or "").strip()
    if body:
        for item in body.split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key or not value.strip():
                raise ValueError(f"cannot parse activation {text!r}: {item.strip()!r} is not key=value")
            if key not in defaults:
                known = ", ".join(defaults) or "none"
                raise ValueError(f"activation {name!r} has no parameter {key!r}; its parameters: {known}")
            if key in given:
                raise ValueError(f"activation {text!r}: parameter {key!r} given twice")
            given[key] = _parse_value(name, key, value, defaults[key])
    if name == "spocu":
        numbers = {k: v for k, v in {**defaults, **given}.items() if k != "learnable"}
        try:
            spocu_params = SPOCUParams(**numbers)
            check_kernel_range(spocu_params.alpha, spocu_params.gamma)  # compare trains in float32
        except (TypeError, ValueError) as error:
            raise ValueError(f"activation {text!r}: {error}") from None
        given = {
            **{k: v for k, v in spocu_params.as_dict().items() if k in given},
            **({"learnable": given["learnable"]} if "learnable" in given else {}),
        }
    if name == "gelu" and given.get("approximate", "none") not in ("none", "tanh"):
        raise ValueError(f"activation {text!r}: approximate must be none or tanh")
    params = tuple((k, given[k]) for k in defaults if k in given and given[k] != defaults[k])
    return ActivationSpec(name, params).with_init(init)


def split_activation_list(text: str) -> list[str]:
    """Split ``"spocu(c=1, beta=0.5), relu"`` at the commas outside parentheses."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


# ----------------------------------------------------------------------------- the user's activation

_LOADED: dict[str, tuple[Any, str | None, float | None]] = {}


def load_user_activation(text: str) -> tuple[Any, str | None]:
    """The user's activation named ``MODULE:NAME`` or ``file.py:NAME`` and its source hash.

    A function (``f(x)`` elementwise on a tensor), a ``torch.nn.Module`` class (instantiated
    without arguments at each place) or a Keras callable or layer class. Imported once per
    process, again if its file changed.

    Raises:
        ValueError: it does not import, is missing, or is not callable (the message names it).
    """
    module_text = text.rpartition(":")[0]
    path = Path(module_text).expanduser() if module_text.endswith(".py") or "/" in module_text else None
    stamp = path.stat().st_mtime_ns if path is not None and path.is_file() else None
    cached = _LOADED.get(text)
    if cached is not None and cached[2] == stamp:
        return cached[0], cached[1]
    _, obj = import_named(text, f"--activations {text}", ValueError)
    if not callable(obj):
        raise ValueError(
            f"--activations {text}: {text.rpartition(':')[2]} is a {type(obj).__name__}, not a function or class"
        )
    digest = source_sha256(source_file(obj) or path)
    _LOADED[text] = (obj, digest, stamp)
    return obj, digest


def _user_torch_module(name: str, obj: Any):
    """A fresh ``nn.Module`` of the user's activation: its class instantiated, or its function wrapped."""
    import inspect

    import torch.nn as nn

    if inspect.isclass(obj):
        if not issubclass(obj, nn.Module):
            raise ValueError(f"--activations {name}: {obj.__name__} is a class but not a torch.nn.Module (for PyTorch)")
        try:
            return obj()
        except Exception as error:
            raise ValueError(
                f"--activations {name}: {obj.__name__}() failed: {type(error).__name__}: {error}"
            ) from None

    class UserActivation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.function = obj

        def forward(self, x):
            return self.function(x)

        def extra_repr(self) -> str:
            return name

    return UserActivation()
