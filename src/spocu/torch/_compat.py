"""Every private PyTorch name spocu touches, in one place, each with a public fallback.

torch's private API changes between releases without notice. Nothing else in
``spocu.torch`` may name it (``tests/test_torch/test_shape.py`` greps the package):
a new torch release that moves a name breaks this module only, and every
function here degrades to a public (if slower or more conservative) answer when
its private name is missing. The versions named are those the private names were
checked on; ``.ci/torch-versions`` runs the torch tests on the oldest supported
torch and the pinned one.

Example:
    >>> dispatch_mode_active()
    False
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from functools import lru_cache

import torch

__all__ = [
    "TorchDispatchMode",
    "dispatch_mode_active",
    "dual_level_open",
    "mark_constant_result",
    "onnx_exporting",
    "outside_modes",
    "register_vmap",
    "torch_export_running",
    "functorch_active",
    "is_functorch_wrapped",
    "is_legacy_batched",
]

_C = torch._C
_functorch = getattr(_C, "_functorch", None)

# torch 2.4-2.13: torch._C._len_torch_dispatch_stack (TorchDispatchModes: FakeTensorMode,
# LoggingTensorMode, ...). Fallback: assume one is active (the composite ops then run: correct, slower).
_len_dispatch_stack = getattr(_C, "_len_torch_dispatch_stack", None)


def dispatch_mode_active() -> bool:
    """A ``TorchDispatchMode`` is active: every tensor made now may be a fake or logged one."""
    return True if _len_dispatch_stack is None else _len_dispatch_stack() > 0


# torch 2.4-2.13: torch._C._functorch.is_functorch_wrapped_tensor / is_legacy_batchedtensor.
# Fallback: treat every tensor as wrapped (composite ops: correct, slower).
_wrapped = getattr(_functorch, "is_functorch_wrapped_tensor", None)
_legacy = getattr(_functorch, "is_legacy_batchedtensor", None)


def _always(t: torch.Tensor) -> bool:
    return True


# The C++ checks themselves where they exist: every fused call asks both, and a Python frame
# around each would cost ~0.1 us per question.
#: ``is_functorch_wrapped(t)``: ``t`` is a torch.func wrapper (grad/vmap/functionalize level), which
#: has no storage of its own
is_functorch_wrapped: Callable[[torch.Tensor], bool] = _wrapped if _wrapped is not None else _always
#: ``is_legacy_batched(t)``: ``t`` is a legacy-vmap batched tensor (gradcheck's batched checks)
is_legacy_batched: Callable[[torch.Tensor], bool] = _legacy if _legacy is not None else _always


# torch 2.4-2.13: torch._C._are_functorch_transforms_active. Fallback: the public
# torch._C._functorch.peek_interpreter_stack is not public either, so assume active
# (the transform-safe Python Functions then serve: correct, slower).
_transforms = getattr(_C, "_are_functorch_transforms_active", None)


def functorch_active() -> bool:
    """A ``torch.func`` transform (grad, vmap, jvp, functionalize) is running."""
    return True if _transforms is None else bool(_transforms())


# torch 2.4-2.13: torch.utils._python_dispatch._disable_current_modes (pops every TorchDispatchMode
# for the block) and torch._C.DisableTorchFunction (TorchFunctionModes, e.g. `with torch.device(...)`).
# Fallback: no change (callers pass devices explicitly and check the outcome).
try:
    from torch.utils._python_dispatch import _disable_current_modes
except ImportError:  # pragma: no cover - another torch
    _disable_current_modes = contextlib.nullcontext
_disable_function = getattr(_C, "DisableTorchFunction", contextlib.nullcontext)


@contextlib.contextmanager
def outside_modes():
    """Run the block with no ``TorchDispatchMode`` or ``TorchFunctionMode`` active (spocu's own
    one-time work, such as the kernels' load-time self-check, inside a caller's FakeTensorMode)."""
    with _disable_current_modes(), _disable_function():
        yield


# torch 2.5-2.13: torch.compiler._is_exporting_flag, what torch.compiler.is_exporting() returns.
# Read directly because Dynamo in torch 2.11 answers the call itself with True under a plain
# torch.compile (seen on an H200 with torch 2.11.0+cu130), which sent compiled models down the
# export path; the module attribute is traced as its real value. Fallback: the public call
# (torch >= 2.5). torch 2.4 has neither: there torch.export is not told apart from torch.compile,
# whose traced path (standard ops under the default backend) it then records.
_is_exporting = getattr(torch.compiler, "is_exporting", lambda: False)


def torch_export_running() -> bool:
    """``torch.export`` is recording (always False on torch 2.4, which cannot say)."""
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return _is_exporting() if flag is None else bool(flag)


@lru_cache(maxsize=1)
def _onnx_flags() -> Callable[[], bool] | None:
    # torch 2.9-2.13: the flags torch.onnx.is_in_onnx_export reads, without its ~3 us of imports
    # on every call. Fallback: torch.onnx.is_in_onnx_export() (public).
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return None
    if not hasattr(_flags, "_is_onnx_exporting") or not hasattr(GLOBALS, "in_onnx_export"):
        return None
    return lambda: bool(GLOBALS.in_onnx_export or _flags._is_onnx_exporting)


def onnx_exporting() -> bool:
    """An ONNX exporter is recording (call only once ``torch.onnx`` is imported)."""
    flags = _onnx_flags()
    return flags() if flags is not None else torch.onnx.is_in_onnx_export()


def mark_constant_result(fn: Callable) -> Callable:
    """:func:`torch.compiler.assume_constant_result` without importing Dynamo (~1 s) at import time.

    Dynamo runs such a function at trace time and records its result as a constant. While
    Dynamo is not loaded yet the marker it reads is set directly (torch 2.4-2.13:
    ``fn._dynamo_marked_constant``, what ``torch._dynamo.decorators.assume_constant_result``
    sets). Fallback, where a torch reads it elsewhere: Dynamo traces into ``fn`` (correct;
    one more guard).
    """
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True
    return fn


# torch 2.4-2.13: torch.autograd.forward_ad._current_level (-1 when no dual level is open; a module
# global that dual_level() rebinds, so read on every call) and torch._C._functorch.peek_interpreter_stack
# (None outside torch.func transforms). Fallback: assume a transform is active (the transform-safe
# Python Functions serve). Both looked up once here: every fused eager call asks (~0.2 us instead of ~0.5).
_forward_ad = torch.autograd.forward_ad
_peek = getattr(_functorch, "peek_interpreter_stack", None)


if _peek is not None and isinstance(getattr(_forward_ad, "_current_level", None), int):

    def transforms_active() -> bool:
        """A ``torch.func`` transform or a forward-mode AD level is active (tensors may be wrappers or duals)."""
        return _forward_ad._current_level >= 0 or _peek() is not None

    def dual_level_open() -> bool:
        """A forward-mode AD level is open (``forward_ad.dual_level``; ``torch.func.jvp``/``jacfwd`` open
        one too): only then can an autograd Function be asked for its ``jvp``."""
        return _forward_ad._current_level >= 0

else:  # pragma: no cover - another torch

    def transforms_active() -> bool:
        """A ``torch.func`` transform or a forward-mode AD level is active (tensors may be wrappers or duals)."""
        return True

    def dual_level_open() -> bool:
        """A forward-mode AD level may be open (this torch cannot say)."""
        return True


# torch 2.4-2.13: the dispatcher guards that run a kernel below autograd (as custom-op kernels
# run). Fallback: no guard (correct; Dynamo may compile one more copy, the op records one more node).
below_autograd = getattr(_C, "_AutoDispatchBelowAutograd", contextlib.nullcontext)
below_ad_inplace_or_view = getattr(_C, "_AutoDispatchBelowADInplaceOrView", contextlib.nullcontext)


# torch 2.4-2.13: torch.autograd.forward_ad._set_fwd_grad_enabled. Fallback: no change.
def forward_grad_enabled(mode: bool):
    """Context manager: forward-mode AD on or off for the block."""
    import torch.autograd.forward_ad as forward_ad

    setter = getattr(forward_ad, "_set_fwd_grad_enabled", None)
    return setter(mode) if setter is not None else contextlib.nullcontext()


# torch 2.4-2.13: torch._functorch.utils.enable_single_level_autograd_function, what torch.func
# does to apply an autograd.Function at one transform level. Fallback: none (the ops then
# apply the Function through its public apply, which handles transforms itself).
def single_level_autograd_function():
    try:
        from torch._functorch.utils import enable_single_level_autograd_function
    except ImportError:  # pragma: no cover - another torch
        return contextlib.nullcontext()
    return enable_single_level_autograd_function()


@contextlib.contextmanager
def outside_functorch():
    """Hide ``torch.func`` state (and the legacy vmap nesting of gradcheck's batched checks) for the block.

    torch 2.4-2.13: torch._C._vmapmode_increment/decrement_nesting and torch._C._DisableFuncTorch.
    Fallback: nothing hidden (the caller only passes plain tensors; Dynamo may recompile).
    """
    inc, dec = getattr(_C, "_vmapmode_increment_nesting", None), getattr(_C, "_vmapmode_decrement_nesting", None)
    disable = getattr(_C, "_DisableFuncTorch", contextlib.nullcontext)
    if inc is None or dec is None:
        with disable():
            yield
        return
    # the legacy vmap keeps only a nesting depth: leave it for the call
    depth = inc() - 1
    dec()
    for _ in range(depth):
        dec()
    try:
        with disable():
            yield
    finally:
        for _ in range(depth):
            inc()


def inductor_fma_options() -> dict[str, object]:
    """Inductor options that let the C++ compiler fuse multiply-adds into FMAs (its default is
    ``-ffp-contract=off``). torch 2.4-2.13: torch._inductor.config.cpp.enable_floating_point_contract_flag,
    a string (the -ffp-contract value) from torch 2.5, a bool in torch 2.4 (True: the flag is left
    out, and GCC's default for C++ is ``fast``). Fallback: {} (Inductor's defaults: separate
    multiplies and adds)."""
    try:
        import torch._inductor.config as config
    except ImportError:  # pragma: no cover - another torch
        return {}
    current = getattr(config.cpp, "enable_floating_point_contract_flag", None)
    if current is None:
        return {}
    return {"cpp.enable_floating_point_contract_flag": True if isinstance(current, bool) else "fast"}


def dynamo_supported() -> bool:
    """``torch.compile`` can run in this Python. torch 2.4-2.13: torch._dynamo.is_dynamo_supported.
    Fallback: True (a failing compile is caught and reported by the caller)."""
    try:
        import torch._dynamo as dynamo

        return bool(dynamo.is_dynamo_supported())
    except AttributeError:  # pragma: no cover - another torch
        return True
    except Exception:  # noqa: BLE001 -- any failure to even ask means "no"
        return False


def op_entry(overload):
    """An ``OpOverload``'s C++ entry, without ``OpOverload.__call__``'s Python frame (~1 us a call).
    torch 2.4-2.13: ``overload._op``. Fallback: the overload itself (public, a frame slower)."""
    return getattr(overload, "_op", overload)


# torch 2.4-2.13: torch._functorch.pyfunctorch.retrieve_all_functorch_interpreters and
# torch._C._functorch.TransformType. torch.func.functionalize has no rule for autograd.Function
# ("NYI: Functionalize rule for custom_function_call"), so under it SPOCU is written in
# differentiable standard ops. Fallback: False (the Functions; functionalize then raises).
def functionalize_active() -> bool:
    """A ``torch.func.functionalize`` level is on the transform stack."""
    try:
        from torch._C._functorch import TransformType
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    except ImportError:  # pragma: no cover - another torch
        return False
    return any(i.key() == TransformType.Functionalize for i in retrieve_all_functorch_interpreters())


def register_vmap(op: str, rule: Callable, lib) -> None:
    """Give the custom op ``op`` its vmap rule (public ``torch.library.register_vmap``, torch >= 2.5).

    torch 2.4 has no public way to: there the op keeps none, and ``torch.func.vmap`` runs
    functorch's per-sample fallback (the same values, slower, with its performance warning).
    """
    register = getattr(torch.library, "register_vmap", None)
    if register is not None:
        register(op, rule, lib=lib)


# torch 2.4-2.13: torch.utils._python_dispatch.TorchDispatchMode, the base class of dispatch modes
# (what spocu.torch.replace counts ops with). No public home yet; no fallback: it has been in that
# module since torch 1.13.
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
