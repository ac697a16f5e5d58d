"""SPOCU as C++ autograd nodes: ``torch.ops.spocu_cpu.fixed``, ``.learnable`` and ``.learnable_raw``.

A Python :class:`torch.autograd.Function` costs about 40 us per forward + backward
however small the tensor (binding, the context object, the Python backward), which
on a 32 × 64 layer is most of the call. :file:`_torch_node.cpp` records the same
node in C++: it saves only ``x`` (a ``SavedVariable``: saved-tensor hooks and the
in-place version check apply as for any op), computes with the kernel library's
own entry points (handed over by ``spocu_node_bind``, so the results are the same
bits as :mod:`spocu.torch._cpp`'s), and for ``create_graph`` backward calls
``spocu_cpu::fixed_derivative``, implemented here with the differentiable Python
Functions of :mod:`spocu.torch._autograd` (as it does for a gradient without storage,
such as ``gradcheck``'s batched gradients). ``spocu_cpu.learnable`` does the same for
tensor parameters (one shared set, or one per channel along dim 1): it keeps ``x``
and the C-element parameters, returns the parameters' gradients from the kernels'
per-channel sums, and its ``create_graph`` backward is ``spocu_cpu::learnable_derivative``
(the plain differentiable formulas of :mod:`spocu.torch._learnable`). On a small
layer (Linear 64 -> 64, batch 32, 2-core machine) a learnable per-channel SPOCU costs
about 420 us over ReLU per forward + backward through the Python Function, 215 us
through ``learnable``, and 137 us through ``spocu_cpu.learnable_raw``, which the module
calls with its raw weights: it also holds the module's softplus/sigmoid map, computed
and differentiated with the ATen ops autograd would record for :mod:`spocu.core`'s map
(checked bit for bit at load time), one node instead of eight.

Unlike the kernel library it needs PyTorch's C++ headers, so it is built per torch
version, and only when asked for: :func:`spocu.torch.build_kernels` builds it with
:func:`torch.utils.cpp_extension.load` (about 15 s on 2 cores the first time, then
torch's extension cache) and loads it in the calling thread. Nothing builds it in
the background; until it is built, or where it cannot be (no compiler or headers, a
failed self-check), the Python ``autograd.Function`` serves every call, with the same
bits (the node is checked against it, bit for bit, when it loads), so building it
mid-process changes the speed of small calls, never a result.

It serves eager calls only: under ``torch.func`` transforms, forward-mode AD,
``torch.compile``, export and tracing the Python paths run, as before.

Example:
    >>> import torch
    >>> from spocu.torch import _node
    >>> _node.state() in ("idle", "building", "ready", "failed", "disabled")
    True
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from spocu.core import LEARNABLE_FLOOR, LEARNABLE_MARGIN
from spocu.torch import _cpp
from spocu.torch._compat import op_entry, outside_modes
from spocu.torch._constants import KernelConstants, kernel_constants
from spocu.torch._learnable import _SPAN, _cap  # (beta = margin + _SPAN * sigmoid(raw))

__all__ = ["apply", "apply_learnable", "apply_learnable_raw", "available", "build", "state", "reason"]

SOURCE = Path(__file__).with_name("_torch_node.cpp")
#: the kernel library's dtypes in the order spocu_node_bind takes them
_BIND_ORDER = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

#: ``SPOCU_TORCH_NODE=0``: never build or load the node (the Python Function serves; same results)
ENV_VAR = "SPOCU_TORCH_NODE"
#: switched off by tests (and by nothing else) to exercise the Python Function on the same calls
ENABLED = True

_lock = threading.RLock()
_op: Any = None  # torch.ops.spocu_cpu.fixed's C++ entry once ready (read without the lock: one assignment)
_learnable_op: Any = None  # torch.ops.spocu_cpu.learnable's, set before _op
_learnable_raw_op: Any = None  # torch.ops.spocu_cpu.learnable_raw's, set before _op
_state = "idle"  # idle -> ready | failed | disabled, only through build()
_reason: str | None = None
_path: Path | None = None
_derivative_library: Any = None  # keeps the Python implementations of spocu_cpu::*_derivative registered


def state() -> str:
    """``"idle"``, ``"building"``, ``"ready"``, ``"failed"`` or ``"disabled"`` (:data:`ENV_VAR`)."""
    return _state


def reason() -> str | None:
    """Why the node is not serving calls (None when ready or not asked for yet)."""
    return _reason if _state != "ready" else None


def library_path() -> Path | None:
    return _path


def available() -> bool:
    """True when eager calls go through the C++ node."""
    return _op is not None and ENABLED


def learnable_available() -> bool:
    """True when eager calls with CPU tensor parameters go through the C++ learnable node."""
    return _learnable_op is not None and ENABLED


def learnable_raw_available() -> bool:
    """True when the learnable module's eager calls go through the C++ node with its parameterization."""
    return _learnable_raw_op is not None and ENABLED


# ---------------------------------------------------------------- building and loading


def _fixed_derivative(grad: torch.Tensor, x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float):
    """grad * s'(x) for the node's backward under ``create_graph`` (differentiable) or with a
    batched/wrapped gradient (the kernel module's plain-ops fallback reads it)."""
    from spocu.core import cached_params
    from spocu.torch._autograd import derivative

    k = kernel_constants(cached_params(alpha, beta, gamma, c), x.dtype)
    if not torch.is_grad_enabled():
        return _cpp.backward(grad, x, k)
    return derivative(grad, x, k, _cpp)


def _learnable_derivative(grad, x, alpha, beta, gamma, c: float) -> tuple[torch.Tensor, ...]:
    """[dL/dx, dL/dalpha, dL/dbeta, dL/dgamma] for the learnable node's backward under ``create_graph``
    or with a batched gradient: the plain formulas, differentiable to any order."""
    from spocu.torch._learnable import _broadcast_shape, _plain_backward

    shaped = [_broadcast_shape(p, x) for p in (alpha, beta, gamma)]
    grads = _plain_backward(grad, x, *shaped, c, (True, True, True, True))
    return (grads[0], *(g.reshape(p.shape) for g, p in zip(grads[1:], (alpha, beta, gamma))))


def _learnable_raw_derivative(grad, x, raw_alpha, raw_beta, raw_gamma, c: float) -> tuple[torch.Tensor, ...]:
    """[dL/dx, dL/draw_alpha, dL/draw_beta, dL/draw_gamma] for the learnable_raw node's backward under
    ``create_graph`` or with a batched gradient: the plain formulas and the map's derivatives
    (softplus' = sigmoid), differentiable to any order."""
    from spocu.core import learnable_positive, learnable_unit

    alpha, beta, gamma = (
        learnable_positive(raw_alpha, torch),
        learnable_unit(raw_beta, torch),
        learnable_positive(raw_gamma, torch),
    )
    d_x, d_alpha, d_beta, d_gamma = _learnable_derivative(grad, x, alpha, beta, gamma, c)
    sigmoid_beta = torch.sigmoid(raw_beta)
    return (d_x, d_alpha * torch.sigmoid(raw_alpha), d_beta * _SPAN * sigmoid_beta * (1 - sigmoid_beta),
            d_gamma * torch.sigmoid(raw_gamma))  # fmt: skip


def _entry(name: str) -> Any:
    return op_entry(getattr(torch.ops.spocu_cpu, name).default)


def _load(path: Path) -> tuple[Any, Any, Any]:
    """Load, bind and check the node library; returns the ops' C++ entries (fixed, learnable, learnable_raw)."""
    global _derivative_library
    handle = ctypes.CDLL(str(path))  # (cpp_extension.load has loaded it: the same handle)
    if handle.spocu_node_abi_version() != 2:
        raise RuntimeError(f"{path} is from another version of spocu")
    kernels = _cpp._lib

    def pointers(kind: str) -> Any:
        return (ctypes.c_void_p * 4)(
            *(ctypes.cast(kernels[kind, dtype], ctypes.c_void_p).value for dtype in _BIND_ORDER)
        )

    handle.spocu_node_bind(pointers("forward"), pointers("backward"))
    handle.spocu_node_bind_learnable(pointers("learnable_forward"), pointers("learnable_backward"),
                                     ctypes.c_void_p(ctypes.addressof(_cpp._SHIFT)))  # fmt: skip
    if _derivative_library is None:
        library = torch.library.Library("spocu_cpu", "IMPL")
        library.impl("fixed_derivative", _fixed_derivative, "CompositeImplicitAutograd")
        library.impl("learnable_derivative", _learnable_derivative, "CompositeImplicitAutograd")
        library.impl("learnable_raw_derivative", _learnable_raw_derivative, "CompositeImplicitAutograd")
        _derivative_library = library
    op, learnable_op, learnable_raw_op = _entry("fixed"), _entry("learnable"), _entry("learnable_raw")
    _self_check(op)
    _self_check_learnable(learnable_op)
    _self_check_learnable_raw(learnable_raw_op)
    return op, learnable_op, learnable_raw_op


def _self_check(op: Any) -> None:
    """The node must give the kernel library's bits, forward and backward (a mismatched build: not used)."""
    from spocu.core import SPOCUParams

    x, g = _cpp.self_check_inputs(101)
    for params in (SPOCUParams(), SPOCUParams(c=1.5)):
        for dtype in (torch.float64, torch.float32, torch.bfloat16):
            k = kernel_constants(params, dtype)
            forward_table, backward_table = tables(k)
            xd = x.to(dtype).requires_grad_()
            gd = g.to(dtype)
            with torch.enable_grad():
                y = op(xd, forward_table, backward_table, params.alpha, params.beta, params.gamma, params.c)
                # (y * gd).sum(): its gradient at y is exactly gd; explicit grad_outputs would make
                # autograd import sympy on first use (0.8 s, under the caller's GIL)
                (dx,) = torch.autograd.grad((y * gd).sum(), xd)
            want_y = _cpp._run_forward(_cpp._lib, xd.detach(), k)
            want_dx = _cpp._run_backward(_cpp._lib, gd, xd.detach(), k)
            if not (torch.equal(y.detach(), want_y) and torch.equal(dx, want_dx)):
                raise RuntimeError(f"the autograd node disagrees with the kernel library ({dtype})")


def _same_bits(node: Callable, reference: Callable, inputs: list[torch.Tensor], g: torch.Tensor) -> bool:
    """Whether ``node`` and ``reference`` give the same value bits and gradient bits for every input."""
    results = []
    for fn in (node, reference):
        leaves = [t.detach().clone().requires_grad_() for t in inputs]
        with torch.enable_grad():
            y = fn(*leaves)
            grads = torch.autograd.grad((y * g).sum(), leaves)  # (y * g).sum(): no sympy (see _self_check)
        results.append((y.detach(), *grads))
    return all(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True) for a, b in zip(*results))


def _self_check_learnable(op: Any) -> None:
    """The learnable node must give the Python Function's bits (the same kernels), values and all gradients."""
    from spocu.torch._learnable import _CppKernels, _FusedLearnableSPOCU

    x0, g0 = _cpp.self_check_inputs(116)  # 120 values, infinities among them
    # each dtype slot and each layout path (row, shared, pixel) once: it runs while the caller's
    # first calls do, under the same GIL
    cases = ((torch.float64, "per channel", (5, 4, 6), 4), (torch.float32, "channels last", (2, 3, 4, 5), 3),
             (torch.bfloat16, "shared", (120,), 1), (torch.float16, "per channel", (5, 4, 6), 4))  # fmt: skip
    for dtype, label, shape, channels in cases:
        x = x0.to(dtype).reshape(shape)
        if label == "channels last":
            x = x.contiguous(memory_format=torch.channels_last)
        params = [
            torch.linspace(lo, hi, channels, dtype=torch.float32, device="cpu")
            for lo, hi in ((2.5, 3.5), (0.4, 0.8), (1.5, 4.0))
        ]
        node = lambda *a: op(*a, 2.5, _cap(dtype))  # noqa: E731
        if not _same_bits(
            node, lambda *a: _FusedLearnableSPOCU.apply(*a, 2.5, _CppKernels), [x, *params], g0.to(dtype).reshape(shape)
        ):
            raise RuntimeError(f"the learnable autograd node disagrees with the kernel library ({dtype}, {label})")


def _self_check_learnable_raw(op: Any) -> None:
    """The raw-weight node must give the bits of the module's own composition: spocu.core's map
    (autograd through softplus, sigmoid, mul, add), then the learnable Python Function."""
    from spocu.core import learnable_positive, learnable_unit
    from spocu.torch._learnable import _CppKernels, _FusedLearnableSPOCU

    def composed(x, ra, rb, rg):
        return _FusedLearnableSPOCU.apply(x, learnable_positive(ra, torch), learnable_unit(rb, torch),
                                          learnable_positive(rg, torch), 2.5, _CppKernels)  # fmt: skip

    x0, g0 = _cpp.self_check_inputs(116)
    # raw weights on both sides of softplus's linear threshold (20)
    raws = [
        torch.linspace(lo, hi, 4, dtype=torch.float32, device="cpu")
        for lo, hi in ((-3.0, 25.0), (-2.0, 2.0), (0.5, 30.0))
    ]
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        node = lambda *a: apply_learnable_raw(*a, 2.5, op=op)  # noqa: E731
        if not _same_bits(node, composed, [x0.to(dtype).reshape(5, 4, 6), *raws], g0.to(dtype).reshape(5, 4, 6)):
            raise RuntimeError(f"the learnable_raw autograd node disagrees with the module's composition ({dtype})")


def build(verbose: bool = False) -> str:
    """Build (or take from torch's extension cache) and load the node now, in this thread; returns
    :func:`state`. Needs the kernel library (:mod:`spocu.torch._cpp`), a C++ compiler, ninja and
    torch's headers; on any failure the Python Function keeps serving and :func:`reason` says why."""
    global _op, _learnable_op, _learnable_raw_op, _state, _reason, _path
    with _lock:
        if _state in ("ready", "failed", "disabled"):
            return _state
        if os.environ.get(ENV_VAR, "1").strip() == "0":
            _state, _reason = "disabled", f"{ENV_VAR}=0"
            return _state
        try:
            if not _cpp.ready():
                raise RuntimeError(f"the kernel library is not loaded ({_cpp.unavailable_reason()})")
            from torch.utils import cpp_extension

            path = cpp_extension.load(name="spocu_torch_node", sources=[str(SOURCE)], extra_cflags=["-O2", "-w"],
                                      is_python_module=False, verbose=verbose)  # fmt: skip
            if path is None:  # torch 2.4 returns nothing: the library is the one torch.ops has just loaded
                path = next(p for p in torch.ops.loaded_libraries if Path(p).name.startswith("spocu_torch_node"))
            _path = Path(path)
            with outside_modes():
                op, learnable_op, learnable_raw_op = _load(_path)
        except Exception as exc:  # noqa: BLE001 -- any failure means "the Python Function", which is exact too
            _state, _reason = "failed", _cpp.failure_reason(exc)
            return _state
        _learnable_op, _learnable_raw_op, _op = learnable_op, learnable_raw_op, op
        _state = "ready"
        return _state


# ---------------------------------------------------------------- calls


def tables(k: KernelConstants) -> tuple[torch.Tensor, torch.Tensor]:
    """``k``'s coefficient tables as the node reads them: the kernel module's, as float64 tensors
    (a node keeps a reference: no lifetime issue)."""
    entry = _cpp._tables(k)
    return entry[3], entry[4]


def apply(x: torch.Tensor, k: KernelConstants, alpha: float, beta: float, gamma: float, c: float) -> torch.Tensor:
    """s(x) through the C++ node (only when :func:`available`; eager, no transform active)."""
    forward_table, backward_table = tables(k)
    return _op(x, forward_table, backward_table, alpha, beta, gamma, c)


def apply_learnable(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float
) -> torch.Tensor:
    """s(x) with CPU tensor parameters of one count (1, or x.shape[1]) through the C++ node
    (only when :func:`available`; eager, no transform active, x's dtype one the kernels compute)."""
    return _learnable_op(x, alpha, beta, gamma, c, _cap(x.dtype))


def apply_learnable_raw(
    x: torch.Tensor, raw_alpha: torch.Tensor, raw_beta: torch.Tensor, raw_gamma: torch.Tensor, c: float, op: Any = None
) -> torch.Tensor:
    """s(x) of a learnable :class:`spocu.torch.SPOCU` from its raw weights (α, γ = softplus(raw) + floor,
    β = margin + (1 - 2 margin) sigmoid(raw), as :mod:`spocu.core`) through one C++ node (only when
    :func:`learnable_raw_available`; eager, no transform active, CPU, one count: 1 or x's channels)."""
    return (op or _learnable_raw_op)(x, raw_alpha, raw_beta, raw_gamma, LEARNABLE_FLOOR, LEARNABLE_MARGIN,
                                     _SPAN, c, _cap(x.dtype))  # fmt: skip
