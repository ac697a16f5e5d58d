r"""Swap the activations of any PyTorch model, modules and functional calls: :func:`replace_activations`.

Two things are swapped:

- **modules** of the named kind (``nn.ReLU``, ``nn.GELU``, timm's ``GELU``, Hugging Face's
  ``GELUActivation``, ...) are replaced in the module tree, so ``state_dict``, ``repr`` and the
  optimizer see the new ones, exactly as if the model had been written with them;
- **functional calls** (``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``, ``x.relu_()``,
  ``F.gelu``, ``F.silu``, ``F.relu6``, ``F.elu``, ``F.hardswish``, ... and their in-place forms)
  inside ``forward`` are code, not submodules. They are swapped by a ``TorchFunctionMode`` that is
  active while the model (or a module holding such calls) runs: forward pre/post hooks enter and
  leave it. Each call site of each module gets its own ``new()`` instance, registered in that
  module as ``spocu_calls`` (``layer1.0.spocu_calls.forward_L23``), so learnable parameters are
  saved, loaded and optimized like any other and are never shared between blocks.

Why a mode and not a ``torch.fx`` rewrite (measured, see docs/pytorch.md): the mode works on every
model, including the ones fx cannot trace (control flow on values, Hugging Face models, ``*args``
forwards), keeps the model's own class and methods, and survives ``state_dict`` save/load,
``deepcopy``, ``torch.save`` of the whole model, ``torch.compile``, train/eval, gradient
checkpointing of modules and DDP; its cost is Python work per torch call in eager mode.

Call :func:`replace_activations` with ``example_inputs`` and it also *checks*: one forward (eval
mode, no grad) counts every op of the swapped kind that still runs (a fused kernel, a call it
cannot see) and raises -- or with ``strict=False`` warns -- naming how many and where.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import sys
import textwrap
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal, cast, overload

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from spocu._llvm import triton_conflict
from spocu.torch._compat import TorchDispatchMode

__all__ = [
    "ACTIVATION_CLASSES",
    "FUNCTIONAL_KINDS",
    "KNOWN_CLASSES",
    "SwapReport",
    "count_activations",
    "replace_activations",
]

#: Names accepted for ``old`` (case-insensitive; any class name of ``torch.nn`` works too).
ACTIVATION_CLASSES: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "elu": nn.ELU,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "mish": nn.Mish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "hardswish": nn.Hardswish,
    "softplus": nn.Softplus,
}

_ALIASES = {"swish": "silu", "hard_swish": "hardswish", "gelu_tanh": "gelu", "gelu_new": "gelu", "gelu_fast": "gelu",
            "gelu_pytorch_tanh": "gelu", "quickgelu": "quick_gelu"}  # fmt: skip

#: Third-party activation classes each kind also matches, by ``(package, class name)``; matched on
#: the class's ``__module__`` and name (any class in its MRO), so timm/transformers are never imported.
KNOWN_CLASSES: dict[str, tuple[tuple[str, str], ...]] = {
    "relu": (("timm", "ReLU"),),
    "relu6": (("timm", "ReLU6"),),
    "gelu": (
        ("timm", "GELU"),
        ("timm", "GELUTanh"),
        ("transformers", "GELUActivation"),
        ("transformers", "NewGELUActivation"),
        ("transformers", "FastGELUActivation"),
        ("transformers", "GELUTanh"),
        ("transformers", "PytorchGELUTanh"),
        ("transformers", "AccurateGELUActivation"),
        ("transformers", "ClippedGELUActivation"),
    ),
    "quick_gelu": (
        ("timm", "QuickGELU"),
        ("transformers", "QuickGELUActivation"),
        ("open_clip", "QuickGELU"),
    ),
    "silu": (
        ("timm", "Swish"),
        ("timm", "SwishMe"),
        ("timm", "SiLU"),
        ("transformers", "SiLUActivation"),
    ),
    "mish": (("timm", "Mish"), ("timm", "MishMe"), ("transformers", "MishActivation")),
    "hardswish": (("timm", "HardSwish"), ("timm", "HardSwishMe")),
    "sigmoid": (("timm", "Sigmoid"),),
    "tanh": (("timm", "Tanh"),),
    "leaky_relu": (),
    "elu": (),
    "selu": (),
    "celu": (),
    "softplus": (),
}


def _functions(*names: str) -> tuple[Any, ...]:
    found = []
    for name in names:
        owner_name, _, attr = name.rpartition(".")
        owner = {"F": F, "torch": torch, "Tensor": torch.Tensor}[owner_name]
        if hasattr(owner, attr):
            found.append(getattr(owner, attr))
    return tuple(found)


#: Functional forms swapped and counted, by kind. tanh, sigmoid and softplus are left out on purpose:
#: they also serve as gates, attention and parametrizations, so a call is not necessarily an activation.
FUNCTIONAL_KINDS: dict[str, tuple[Any, ...]] = {
    "relu": _functions("F.relu", "F.relu_", "torch.relu", "torch.relu_", "Tensor.relu", "Tensor.relu_"),
    "relu6": _functions("F.relu6"),
    "leaky_relu": _functions("F.leaky_relu", "F.leaky_relu_"),
    "gelu": _functions("F.gelu"),
    "silu": _functions("F.silu"),
    "elu": _functions("F.elu", "F.elu_"),
    "selu": _functions("F.selu", "torch.selu", "torch.selu_"),
    "celu": _functions("F.celu", "F.celu_", "torch.celu", "torch.celu_"),
    "mish": _functions("F.mish"),
    "hardswish": _functions("F.hardswish"),
}
_FUNCTION_KIND = {function: kind for kind, functions in FUNCTIONAL_KINDS.items() for function in functions}


def _aten_kind(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The activation kind an aten op computes (what still runs after a swap), or None."""
    name: str = func.__name__.split(".")[0].rstrip("_")  # "relu.default" / "relu_.default" -> "relu"
    if name in ("relu", "gelu", "silu", "mish", "hardswish", "leaky_relu"):
        return name
    if name == "hardtanh":
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        return "relu6" if (float(low), float(high)) == (0.0, 6.0) else None
    if name == "elu":
        _, scale, input_scale = (list(args[1:4]) + [1.0, 1.0, 1.0])[:3]
        if abs(float(scale) - 1.0507009873554805) < 1e-6:
            return "selu"
        return "elu" if float(input_scale) == 1.0 and float(scale) == 1.0 else "celu"
    return None


#: What ``old`` may be: a name, a dotted class path, a ``torch.nn.Module`` class, or a tuple/list of them.
Old = str | type[nn.Module] | tuple[str | type[nn.Module], ...] | list[str | type[nn.Module]]


@dataclass(frozen=True)
class _Target:
    """What ``old`` names: torch classes, third-party (package, name) pairs, dotted paths, functional kinds."""

    classes: tuple[type, ...]
    known: tuple[tuple[str, str], ...]
    dotted: tuple[str, ...]
    kinds: tuple[str, ...]  # kinds whose functional calls are swapped and whose ops are counted
    labels: tuple[str, ...]  # as the user named them, for messages

    def matches(self, module: nn.Module) -> bool:
        if isinstance(module, self.classes):
            return True
        for cls in type(module).__mro__:
            package = cls.__module__.split(".")[0]
            if (
                package,
                cls.__name__,
            ) in self.known or f"{cls.__module__}.{cls.__qualname__}" in self.dotted:
                return True
        return False

    def describe(self) -> str:
        parts = [f"{c.__module__}.{c.__qualname__}" for c in self.classes]
        parts += [f"{package}'s {name}" for package, name in self.known]
        parts += list(self.dotted)
        return ", ".join(parts)


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    return _ALIASES.get(key, key)


def _target(old: Old) -> _Target:
    items = tuple(old) if isinstance(old, (tuple, list)) else (old,)
    if not items:
        raise ValueError("replace_activations: old is empty; name at least one activation class")
    classes: list[type] = []
    known: list[tuple[str, str]] = []
    dotted: list[str] = []
    kinds: list[str] = []
    labels: list[str] = []
    for item in items:
        if isinstance(item, str) and "." in item.strip() and not item.strip().startswith("."):
            dotted.append(item.strip())  # a class by its dotted path, matched without importing it
            labels.append(item.strip())
        elif isinstance(item, str):
            key = _canonical(item)
            found = ACTIVATION_CLASSES.get(key) or next(
                (
                    c
                    for n, c in vars(nn).items()
                    if n.lower() == key and isinstance(c, type) and issubclass(c, nn.Module)
                ),
                None,
            )
            if found is None and key not in KNOWN_CLASSES:
                raise ValueError(
                    f"replace_activations: unknown activation {item!r}; use a torch.nn class, a dotted class path or one of "
                    f"{', '.join(sorted(set(ACTIVATION_CLASSES) | set(KNOWN_CLASSES)))}"
                )
            if found is not None:
                classes.append(found)
            known.extend(KNOWN_CLASSES.get(key, ()))
            kind = next((k for k, c in ACTIVATION_CLASSES.items() if c is found), key) if found is not None else key
            kind = _ALIASES.get(kind, kind)
            if kind in FUNCTIONAL_KINDS:
                kinds.append(kind)
            labels.append(key)
        elif isinstance(item, type) and issubclass(item, nn.Module):
            classes.append(item)
            class_kind = next((k for k, c in ACTIVATION_CLASSES.items() if c is item), None)
            if class_kind is not None and _ALIASES.get(class_kind, class_kind) in FUNCTIONAL_KINDS:
                kinds.append(_ALIASES.get(class_kind, class_kind))
            labels.append(item.__name__)
        else:
            raise TypeError(
                f"replace_activations: old must be a torch.nn.Module class, a name, or a tuple of them, not {item!r}"
            )
    return _Target(
        tuple(classes),
        tuple(dict.fromkeys(known)),
        tuple(dotted),
        tuple(dict.fromkeys(kinds)),
        tuple(labels),
    )


# -- the functional swap -------------------------------------------------------------------------------------------

_TORCH_DIR = os.path.dirname(torch.__file__)
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_THIS_FILE = __file__


class _State(threading.local):
    def __init__(self) -> None:
        #: (module whose hook entered, kinds, mode it entered or None, its shared replacement or None)
        self.stack: list[tuple[nn.Module, tuple[str, ...], Any, nn.Module | None]] = []
        self.paused = 0  # > 0 while a replacement runs: its own ops are not swapped or counted
        self.calls: Counter[tuple[int, str]] | None = None  # (owner id, site key) -> swapped calls, while counting
        self.make: Callable[[], nn.Module] | None = None  # during the probe: makes replacements for new sites
        self.found: list[tuple[nn.Module, str]] = []  # (owner, "file:line") of the sites the probe added


_STATE = _State()


def _user_frame() -> FrameType | None:
    """The innermost Python frame outside torch and this module (the call site of an intercepted call)."""
    frame: FrameType | None = sys._getframe(2)
    while frame is not None and (
        frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == _THIS_FILE
    ):
        frame = frame.f_back
    return frame


def _site_key(code_name: str, line: int) -> str:
    return f"{code_name.strip('<>')}_L{line}"


def _is_inplace(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if func.__name__.endswith("_"):
        return True
    if kwargs.get("inplace"):
        return True
    try:  # F.relu(x, True), F.elu(x, 1.0, True), ...
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return False
    return (
        "inplace" in parameters and len(args) > parameters.index("inplace") and bool(args[parameters.index("inplace")])
    )


class _SwapMode(TorchFunctionMode):
    """Calls of the swapped kinds' functionals go to the calling module's replacement instead."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        super().__init__()
        self.kinds = kinds

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        kind = _FUNCTION_KIND.get(func)
        if kind is None or kind not in self.kinds or _STATE.paused:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        replacement, owner, key = _lookup()
        _STATE.paused += 1
        try:
            y = replacement(x)
        finally:
            _STATE.paused -= 1
        if _STATE.calls is not None:
            _STATE.calls[(id(owner), key)] += 1
        if _is_inplace(func, args, kwargs):
            return x.copy_(y)
        return y


def _lookup_frames() -> tuple[nn.Module, nn.Module | None, str]:
    return _replacement_for(_user_frame())


#: what the function mode calls; _compile_safe_lookup() makes it a torch.compiler.disable'd function
_lookup = _lookup_frames


def _compile_safe_lookup() -> None:
    """Frames cannot be traced: under torch.compile each swapped call is a graph break.

    Applied on the first swap, not at import: ``torch.compiler.disable`` imports Dynamo and, with
    it, Triton, whose LLVM aborts the process beside an already loaded TensorFlow's. In such a
    process (:func:`spocu._llvm.triton_conflict`) it is not applied at all: nothing there can
    run torch.compile, which would import Triton too.
    """
    global _lookup
    if _lookup is _lookup_frames and triton_conflict() is None:
        _lookup = torch.compiler.disable(_lookup_frames)


def _replacement_for(frame: FrameType | None) -> tuple[nn.Module, nn.Module | None, str]:
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "an unknown place"
    key = _site_key(frame.f_code.co_name, frame.f_lineno) if frame is not None else ""
    owner = None
    if frame is not None and frame.f_code.co_argcount:  # the method's first argument: its module
        owner = frame.f_locals.get(frame.f_code.co_varnames[0])
    # spocu_calls is always the ModuleDict that replace_activations (or the probe, below) added
    calls = cast("nn.ModuleDict | None", owner._modules.get("spocu_calls") if isinstance(owner, nn.Module) else None)
    if calls is not None and key in calls:
        return calls[key], owner, key
    if (
        _STATE.make is not None and isinstance(owner, nn.Module) and not isinstance(owner, _CONTAINERS)
    ):  # the probe forward: a site seen only now
        if calls is None:
            calls = nn.ModuleDict()
            owner.add_module("spocu_calls", calls)
        calls[key] = _STATE.make()
        _STATE.found.append((owner, where))
        return calls[key], owner, key
    for module, _, _, fallback in reversed(_STATE.stack):  # a call site found only at run time: the shared one
        if fallback is not None:
            return fallback, module, "any"
    if not isinstance(owner, nn.Module):
        raise RuntimeError(  # noqa: TRY004 - the model's code, not an argument, is at fault
            f"replace_activations: the functional activation call at {where} is in a function outside any module's "
            "method (a helper), so no module can hold its replacement's parameters; use a replacement without "
            "parameters, or call a module there"
        )
    raise RuntimeError(
        f"replace_activations: the functional activation call at {where} has no replacement: it was not found in "
        "the source of the model's modules, and the replacement has parameters, which must exist before training; "
        "call replace_activations with example_inputs= (its forward creates them)"
    )


class _EnterSwap:
    """Forward pre-hook: make the functional swap active while this module runs (picklable, deep-copyable).

    ``fallback`` (on the model itself, when the replacement has no parameters) serves the calls that
    were not found in any module's source: a helper function's, a ``self.activation = F.relu`` attribute's.
    It is kept here, not as a submodule, so that containers (``nn.Sequential``) are not changed.
    """

    def __init__(self, kinds: tuple[str, ...], fallback: nn.Module | None = None) -> None:
        self.kinds = kinds
        self.fallback = fallback

    def __call__(self, module: nn.Module, args: Any) -> None:
        _compile_safe_lookup()  # a model unpickled in a new process has the hooks without a replace_activations call
        top = _STATE.stack[-1] if _STATE.stack else None
        mode = None
        if top is None or top[1] != self.kinds or _STATE.paused:
            mode = _SwapMode(self.kinds)
            mode.__enter__()
        _STATE.stack.append((module, self.kinds, mode, self.fallback))


class _LeaveSwap:
    """Forward hook (``always_call=True``): undo :class:`_EnterSwap`, also when forward raised."""

    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        if _STATE.stack and _STATE.stack[-1][0] is module:
            mode = _STATE.stack.pop()[2]
            if mode is not None:
                mode.__exit__(None, None, None)


class _Pause:
    """Pre-hook of every replacement: its own ops are neither swapped nor counted."""

    def __call__(self, module: nn.Module, args: Any) -> None:
        _STATE.paused += 1


class _Resume:
    def __call__(self, module: nn.Module, args: Any, output: Any) -> None:
        _STATE.paused = max(0, _STATE.paused - 1)


def _hook_on(module: nn.Module, kinds: tuple[str, ...], fallback: nn.Module | None = None) -> None:
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, _EnterSwap) and hook.kinds == kinds:
            hook.fallback = hook.fallback or fallback
            return
    module.register_forward_pre_hook(_EnterSwap(kinds, fallback))
    module.register_forward_hook(_LeaveSwap(), always_call=True)


def _mark_replacement(module: nn.Module) -> nn.Module:
    module.register_forward_pre_hook(_Pause())
    module.register_forward_hook(_Resume(), always_call=True)
    return module


def _call_sites(cls: type, kinds: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """``(function name, file, line)`` of every functional call of ``kinds`` in ``cls``'s own methods (and its bases')."""
    names = {f.__name__ for kind in kinds for f in FUNCTIONAL_KINDS[kind]}
    sites = []
    for base in cls.__mro__:
        if base in (nn.Module, object) or base.__module__.startswith("torch."):
            continue
        try:
            lines, start = inspect.getsourcelines(base)
            filename = inspect.getsourcefile(base) or "?"
            tree = ast.parse(textwrap.dedent("".join(lines)))
        except (OSError, TypeError, SyntaxError):
            continue
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            own = function.args.args[0].arg if function.args.args else None
            for node in ast.walk(function):
                if not (
                    isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names
                ):
                    continue
                receiver = node.func.value
                if isinstance(receiver, ast.Name) and receiver.id == own:  # self.relu(x): a submodule, not a functional
                    continue
                sites.append((function.name, filename, start + node.lineno - 1))
    return sorted(set(sites), key=lambda s: (s[1], s[2]))


def _has_state(module: nn.Module) -> bool:
    """Parameters or buffers: a replacement that cannot be shared, or kept outside the module tree."""
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


# -- the report ----------------------------------------------------------------------------------------------------


@dataclass
class SwapReport:
    """What :func:`replace_activations` replaced, and (with ``example_inputs``) what one forward then ran.

    ``modules``: path -> class name of every replaced module. ``call_sites``: path of every module
    holding functional calls -> list of ``file:line`` sites swapped there. After a probe forward,
    ``module_calls`` / ``functional_calls`` count the replacements' calls and ``left`` maps each
    place where an op of the swapped kind still ran (``path (file:line)``) to its count.
    """

    model: nn.Module
    kinds: tuple[str, ...]
    labels: tuple[str, ...]
    modules: dict[str, str] = field(default_factory=dict)
    call_sites: dict[str, list[str]] = field(default_factory=dict)
    probed: bool = False
    module_calls: int = 0
    functional_calls: int = 0
    left: dict[str, int] = field(default_factory=dict)

    @property
    def left_count(self) -> int:
        """How many ops of the swapped kinds still ran in the probe forward (0 before a probe)."""
        return sum(self.left.values())

    def summary(self) -> str:
        """One line: ``"35 of 35 relu (3 modules, 32 functional calls)"`` after a probe; sites otherwise."""
        what = "/".join(self.labels)
        sites = sum(len(s) for s in self.call_sites.values())
        if not self.probed:
            return f"{what}: {len(self.modules)} modules and {sites} functional call sites replaced (not run)"
        swapped = self.module_calls + self.functional_calls
        modules = f"{len(self.modules)} modules"
        if self.module_calls != len(self.modules):  # a module called at several places, or not at all
            modules = f"{self.module_calls} calls of {len(self.modules)} modules"
        return f"{swapped} of {swapped + self.left_count} {what} ({modules}, {self.functional_calls} functional calls)"

    def where_left(self, limit: int = 3) -> str:
        """The ``limit`` places where most unswapped ops ran, as ``"COUNT in PLACE; ..."``, and how many
        places more.
        """
        places = sorted(self.left.items(), key=lambda item: -item[1])
        text = "; ".join(f"{count} in {place}" for place, count in places[:limit])
        return text + (f"; and {len(places) - limit} more places" if len(places) > limit else "")


# -- counting what runs --------------------------------------------------------------------------------------------


class _OpCounter(TorchDispatchMode):
    """Counts aten ops of activation kinds by place (module path and source line), outside replacements."""

    def __init__(self, paths: dict[int, str]) -> None:
        super().__init__()
        self.paths = paths
        self.module_stack: list[str] = []
        self.counts: Counter[tuple[str, str]] = Counter()  # (kind, place) -> ops

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if not _STATE.paused:
            kind = _aten_kind(func, args, kwargs)
            if kind is not None:
                frame: FrameType | None = sys._getframe(1)
                while frame is not None and (
                    frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == _THIS_FILE
                ):
                    frame = frame.f_back
                line = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "?"
                path = self.module_stack[-1] if self.module_stack else ""
                self.counts[(kind, f"{path or '(model)'} ({line})")] += 1
        return func(*args, **kwargs)


@contextlib.contextmanager
def _module_paths(counter: _OpCounter) -> Iterator[None]:
    def enter(module: nn.Module, args: Any) -> None:
        counter.module_stack.append(
            counter.paths.get(id(module), counter.module_stack[-1] if counter.module_stack else "")
        )

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if counter.module_stack:
            counter.module_stack.pop()

    handles = [
        torch.nn.modules.module.register_module_forward_pre_hook(enter),
        torch.nn.modules.module.register_module_forward_hook(leave, always_call=True),
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _as_args(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def count_activations(
    model: nn.Module,
    example_inputs: Any,
    call: Callable[..., Any] | None = None,
    exclude: Iterable[nn.Module] = (),
    grad: bool = False,
) -> Counter[tuple[str, str]]:
    """Run one forward of ``model`` (eval mode, no grad unless ``grad``, modes restored) and count activation ops.

    Returns a ``Counter`` mapping ``(kind, "path (file:line)")`` to the number of aten ops of that
    activation kind (relu, gelu, silu, relu6, elu, selu, celu, leaky_relu, mish, hardswish) that ran
    there, whether called as a module, a functional or a Tensor method. Ops run inside a
    replacement made by :func:`replace_activations`, or inside a module of ``exclude``, are not
    counted. ``call`` (default: the model) is what runs the inputs.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.GELU())
        >>> sorted((kind, place.split()[0], n) for (kind, place), n in count_activations(net, torch.zeros(1, 2)).items())
        [('gelu', '3', 1), ('relu', '1', 1)]
    """
    conflict = triton_conflict()
    if conflict is not None:  # a Python dispatch mode makes torch import Dynamo, hence Triton: LLVM would abort
        raise RuntimeError(f"count_activations (the swap check) cannot run the model in this process: {conflict}")
    paths = {id(m): name for name, m in model.named_modules()}
    counter = _OpCounter(paths)
    training = {m: m.training for m in model.modules()}
    handles = []
    for module in exclude:
        handles.append(module.register_forward_pre_hook(_Pause()))
        handles.append(module.register_forward_hook(_Resume(), always_call=True))
    model.eval()
    try:
        with torch.set_grad_enabled(grad), _module_paths(counter), counter:
            (call or model)(*_as_args(example_inputs))
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.training = flag
    return Counter({key: n for key, n in counter.counts.items()})


# -- the public function -------------------------------------------------------------------------------------------


@overload
def replace_activations(
    module: nn.Module,
    old: Old,
    new: Callable[[], nn.Module],
    *,
    example_inputs: Any = None,
    strict: bool = True,
    report: Literal[False] = False,
) -> nn.Module: ...


@overload
def replace_activations(
    module: nn.Module,
    old: Old,
    new: Callable[[], nn.Module],
    *,
    example_inputs: Any = None,
    strict: bool = True,
    report: Literal[True],
) -> SwapReport: ...


@overload
def replace_activations(
    module: nn.Module,
    old: Old,
    new: Callable[[], nn.Module],
    *,
    example_inputs: Any = None,
    strict: bool = True,
    report: bool,
) -> nn.Module | SwapReport: ...


def replace_activations(
    module: nn.Module,
    old: Old,
    new: Callable[[], nn.Module],
    *,
    example_inputs: Any = None,
    strict: bool = True,
    report: bool = False,
) -> nn.Module | SwapReport:
    r"""Replace, in place and recursively, every activation of kind ``old`` by ``new()``: modules and functional calls.

    ``old`` is a name (``"relu"``, ``"gelu"``, ``"silu"``, ``"relu6"``, ``"quick_gelu"``, ... see
    :data:`ACTIVATION_CLASSES` and :data:`KNOWN_CLASSES`, or any ``torch.nn`` class name), a dotted
    class path (``"mypkg.layers.StarReLU"``, matched by name without importing it), a class
    (``nn.ReLU``), or a tuple/list of these. A name matches the ``torch.nn`` class and the known
    third-party ones (``"gelu"``: ``nn.GELU``, timm's ``GELU``/``GELUTanh``, Hugging Face's
    ``GELUActivation``/``NewGELUActivation``/``FastGELUActivation``, ...). ``new`` is a class or a
    zero-argument factory (``SPOCU``, ``lambda: SPOCU(c=1.0)``); it is called once per replaced
    module and once per functional call site of each module, so learnable parameters are never shared.

    Functional calls of the kinds relu, relu6, leaky_relu, gelu, silu, elu, selu, celu, mish and
    hardswish (``F.relu(x)``, ``torch.relu(x)``, ``x.relu()``, ``x.relu_()``, ``F.relu(x, inplace=True)``,
    ``F.gelu``, ``F.silu``, ...) are swapped while the model runs by a ``TorchFunctionMode`` entered
    by forward hooks (on the model and on every module whose source holds such calls); the
    replacement of the call at ``forward`` line 23 of ``layer1.0`` is ``layer1.0.spocu_calls.forward_L23``.
    In-place forms write the result into their input, as they would have. Functional tanh, sigmoid
    and softplus are not swapped (they are also gates and parametrizations). With ``new`` without
    parameters, calls found only at run time (a helper function outside the model's classes) use a
    shared ``spocu_calls.any``; with parameters they raise instead of sharing them.

    With ``example_inputs`` (a tensor or a tuple of the forward's arguments) one forward is run
    (eval mode, no grad, modes restored) that counts the replacements' calls and every op of the
    swapped kind that still ran; any left raises ``ValueError`` naming the count and where (with
    ``strict=False`` a ``UserWarning``). Without it, nothing is run and only what is found in the
    module tree and the modules' source is reported.

    Returns ``module`` (or ``new()`` if ``module`` itself is an ``old``); with ``report=True`` a
    :class:`SwapReport` (``.model``, ``.modules``, ``.call_sites``, ``.summary()``).

    Raises:
        ValueError: nothing matched, an unknown name, or (``strict``) ops of the kind left after the swap.
        TypeError: ``new`` is a module instance (it would be shared) or does not return a module.

    Examples:
        >>> import torch
        >>> from torch.nn import functional as F
        >>> from spocu.torch import SPOCU
        >>> class Block(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.fc, self.act = torch.nn.Linear(2, 2), torch.nn.ReLU()
        ...     def forward(self, x):
        ...         return F.relu(self.fc(self.act(x)))
        >>> result = replace_activations(Block(), "relu", SPOCU, example_inputs=torch.zeros(1, 2), report=True)
        >>> result.summary()
        '2 of 2 relu (1 modules, 1 functional calls)'
        >>> sorted(result.model.spocu_calls)  # doctest: +ELLIPSIS
        ['forward_L...']
    """
    _compile_safe_lookup()
    if not isinstance(module, nn.Module):
        raise TypeError(f"replace_activations: module must be a torch.nn.Module, not {type(module).__name__}")
    target = _target(old)
    if isinstance(new, nn.Module):
        raise TypeError(
            f"replace_activations: new is a module instance ({type(new).__name__}); pass its class or a zero-argument "
            "factory (lambda: ...) so that every place gets its own instance"
        )
    if not callable(new):
        raise TypeError(f"replace_activations: new must be a class or a zero-argument factory, not {new!r}")

    def make() -> nn.Module:
        replacement = new()
        if not isinstance(replacement, nn.Module):
            raise TypeError(f"replace_activations: new() returned {type(replacement).__name__}, not a torch.nn.Module")
        return _mark_replacement(replacement)

    if target.matches(module):
        replacement = make()
        result = SwapReport(
            replacement,
            target.kinds,
            target.labels,
            modules={"": type(module).__name__},
        )
        return result if report else replacement
    result = SwapReport(module, target.kinds, target.labels)
    seen: set[int] = set()

    def visit(parent: nn.Module, prefix: str) -> None:
        if id(parent) in seen:
            return
        seen.add(id(parent))
        for name, child in list(parent.named_children()):
            path = f"{prefix}{name}"
            if name == "spocu_calls":
                continue
            if target.matches(child):
                result.modules[path] = type(child).__name__
                setattr(parent, name, make())  # also right for Sequential/ModuleList/ModuleDict: keys are names
            else:
                visit(child, path + ".")

    visit(module, "")
    if target.kinds:
        sites_by_class: dict[type, list[tuple[str, str, int]]] = {}
        for path, owner in list(module.named_modules()):
            if any(path == p or path.startswith(p + ".") for p in result.modules) or "spocu_calls" in path.split("."):
                continue
            sites = sites_by_class.setdefault(type(owner), _call_sites(type(owner), target.kinds))
            if not sites or isinstance(
                owner, _CONTAINERS
            ):  # a container's children are its layers: served by the shared one
                continue
            calls = owner._modules.get("spocu_calls")
            if calls is None:
                calls = nn.ModuleDict()
                owner.add_module("spocu_calls", calls)
            for function, _filename, line in sites:
                key = _site_key(function, line)
                if key not in calls:
                    calls[key] = make()
            result.call_sites[path] = [f"{os.path.basename(filename)}:{line}" for _, filename, line in sites]
            _hook_on(owner, target.kinds)
        shared = make()
        _hook_on(module, target.kinds, None if _has_state(shared) else shared)

    if example_inputs is not None:
        _probe(result, example_inputs, make if target.kinds else None)
    nothing = not result.modules and not result.call_sites and not (result.probed and result.functional_calls)
    if nothing:
        searched = target.describe()
        functional = f" nor calls {', '.join(target.kinds)} functionally" if target.kinds else ""
        raise ValueError(
            f"replace_activations: no submodule of {type(module).__name__} is a {searched}{functional}; nothing replaced"
            + (
                _found_instead(module)
                if example_inputs is not None
                else " (a call in a helper function is found only by running the model: pass example_inputs=)"
            )
        )
    if result.left:
        message = (
            f"replace_activations: {result.left_count} {'/'.join(target.labels)} ops still ran after the swap "
            f"({result.summary()}): {result.where_left()}"
        )
        if strict:
            raise ValueError(message)
        warnings.warn(message, UserWarning, stacklevel=2)
    if _is_transformers_model(module):  # save_pretrained must keep the swap, or refuse
        from spocu.transformers import after_swap

        after_swap(module, result.modules, result.call_sites)
    elif any(cls.__module__.split(".")[0] == "transformers" for cls in type(module).__mro__):
        warnings.warn(
            f"replace_activations: {type(module).__name__} is a part of a transformers model; the whole model's "
            "save_pretrained/from_pretrained will not keep this swap: swap the whole model to have it kept or refused",
            UserWarning,
            stacklevel=2,
        )
    return result if report else module


def _is_transformers_model(module: nn.Module) -> bool:
    return hasattr(module, "config") and any(
        cls.__module__.split(".")[0] == "transformers" for cls in type(module).__mro__
    )


def _found_instead(module: nn.Module) -> str:
    kinds = sorted({type(m).__name__ for m in module.modules() if _activation_like(m)})
    return f" (activation modules it has: {', '.join(kinds)})" if kinds else ""


def _activation_like(module: nn.Module) -> bool:
    return any(isinstance(module, cls) for cls in ACTIVATION_CLASSES.values()) or any(
        (cls.__module__.split(".")[0], cls.__name__) in {pair for pairs in KNOWN_CLASSES.values() for pair in pairs}
        for cls in type(module).__mro__
    )


def _probe(result: SwapReport, example_inputs: Any, make: Callable[[], nn.Module] | None) -> None:
    model = result.model
    replacements = {id(m) for m in model.modules() if any(isinstance(h, _Pause) for h in m._forward_pre_hooks.values())}
    site_instances = {id(m) for name, m in model.named_modules() if ".spocu_calls." in f".{name}"}
    module_calls: Counter[int] = Counter()

    def count(module: nn.Module, args: Any) -> None:
        if id(module) in replacements and id(module) not in site_instances and _STATE.paused == 0:
            module_calls[id(module)] += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    _STATE.calls, _STATE.make, _STATE.found = Counter(), make, []
    try:
        counts = count_activations(model, example_inputs)
        functional = sum(_STATE.calls.values())
        paths = {id(m): name for name, m in model.named_modules()}
        for (
            owner,
            where,
        ) in _STATE.found:  # sites only the forward showed: their modules now enter the swap too
            _hook_on(owner, result.kinds)
            result.call_sites.setdefault(paths.get(id(owner), "?"), []).append(os.path.basename(where))
    finally:
        _STATE.calls, _STATE.make, _STATE.found = None, None, []
        handle.remove()
    kinds = set(result.kinds)
    result.probed = True
    result.module_calls = sum(module_calls.values())
    result.functional_calls = functional
    result.left = {place: n for (kind, place), n in counts.items() if kind in kinds}
