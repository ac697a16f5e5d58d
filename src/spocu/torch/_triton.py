"""Hand-written Triton kernels for SPOCU on CUDA (and on CPU with ``TRITON_INTERPRET=1``).

One program per ``BLOCK`` elements on a flat 1-D grid over ``numel``. The output
is written in ``torch.empty_like(x)``'s layout; inputs are read either flat
(dense tensors of any layout: contiguous, channels-last, transposed, ...) or,
for non-dense views (stepped slices, expanded tensors), through their strides
(up to 4 dims after merging; more dims fall back to one dense copy). Math is
done in float32 for float16/bfloat16/float32 inputs and in float64 for
float64, with the coefficients read from a small device tensor (a Python float
argument would be rounded to float32). The clamps are written with
``tl.where`` so that NaN propagates (``tl.maximum`` would drop it).

``triton`` is imported lazily: the package works without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from contextlib import nullcontext
from functools import lru_cache

import torch

from spocu._llvm import triton_conflict
from spocu.torch import _eager
from spocu.torch._constants import KernelConstants, compute_dtype
from spocu.torch._layout import is_dense, is_plain

__all__ = ["available", "forward", "backward", "unavailable_reason"]

BLOCK = 1024
NUM_WARPS = 4
_MAX_DIMS = 4


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def llvm_conflict() -> str | None:
    """Why importing Triton now would abort the process (see :mod:`spocu._llvm`), else None."""
    return triton_conflict()


@lru_cache(maxsize=1)
def _installed() -> bool:
    # find_spec walks sys.path (~0.25 ms) until triton is imported: asked once per process
    return "triton" in sys.modules or importlib.util.find_spec("triton") is not None


@lru_cache(maxsize=1)
def _interpreter_misreads() -> str | None:
    """Why Triton's CPU interpreter would read wrong values here, else None.

    The interpreter of triton 3.0 (the release torch 2.4 requires) misreads tensors under
    NumPy 2 (a kernel that adds 100 to ``arange(7.)`` returns garbage; with NumPy 1.26 it is
    right). The releases from 3.2 on, which the tests use, read correctly.
    """
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    try:
        release = tuple(int(part) for part in version("triton").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return None
    if release < (3, 2) and int(np.__version__.split(".")[0]) >= 2:
        return f"Triton {version('triton')}'s CPU interpreter misreads tensors under NumPy {np.__version__} (triton >= 3.2 reads them right)"
    return None


def unavailable_reason(x: torch.Tensor | torch.device) -> str | None:
    """None if the Triton kernels can run on the tensor (or device) ``x``, else why not."""
    device = x.device if isinstance(x, torch.Tensor) else torch.device(x)
    if not _installed():
        return "the triton package is not installed"
    conflict = llvm_conflict()
    if conflict is not None:
        return conflict
    if device.type == "cuda":
        return None
    if device.type == "cpu" and _interpret():
        return _interpreter_misreads()
    return f"Triton kernels run on CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got device {device.type!r}"


def available(device: torch.device) -> bool:
    return unavailable_reason(device) is None


_reload_lock = threading.Lock()


def _kernels():
    """The module holding the @triton.jit kernels, defined for the current ``TRITON_INTERPRET``.

    Imported on first use (it imports triton); reloaded if ``TRITON_INTERPRET``
    changed since, because Triton fixes compiled-vs-interpreted when it decorates.
    """
    from spocu.torch import _triton_kernels

    if _triton_kernels.INTERPRETED != _interpret():
        with _reload_lock:
            if _triton_kernels.INTERPRETED != _interpret():
                importlib.reload(_triton_kernels)
    return _triton_kernels


@lru_cache(maxsize=1024)
def _table(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device)


def _storage_order(out: torch.Tensor) -> list[int]:
    """Dims of the dense tensor ``out`` from outermost to innermost in memory."""
    return sorted(range(out.dim()), key=lambda d: (-out.stride(d), -out.shape[d]))


def _strided_view(t: torch.Tensor, order: list[int]) -> tuple[list[int], list[int]] | None:
    """(sizes, strides) of ``t`` walked in ``order``, merged and left-padded to 4 dims; None if > 4."""
    sizes, strides = [], []
    for d in order:
        if t.shape[d] == 1:
            continue
        if sizes and strides[-1] == t.stride(d) * t.shape[d]:
            sizes[-1] *= t.shape[d]
            strides[-1] = t.stride(d)
        else:
            sizes.append(t.shape[d])
            strides.append(t.stride(d))
    if len(sizes) > _MAX_DIMS:
        return None
    pad = _MAX_DIMS - len(sizes)
    return [1] * pad + sizes, [0] * pad + strides


def _operand(t: torch.Tensor, out: torch.Tensor, order: list[int]):
    """(tensor, sizes, strides, strided?) describing how the kernel reads ``t`` into ``out``'s order."""
    if is_dense(t) and all(t.stride(d) == out.stride(d) for d in range(t.dim()) if t.shape[d] != 1):
        return t, None, False
    view = _strided_view(t, order)
    if view is None:  # too many non-mergeable dims: one dense copy
        return torch.empty_like(out, dtype=t.dtype).copy_(t), None, False
    return t, view, True


_UNIT_SIZES = (1,) * _MAX_DIMS
_ZERO_STRIDES = (0,) * _MAX_DIMS


def _on_device(x: torch.Tensor):
    """Make x's GPU current for the launch, unless it already is (entering the context costs ~5 us)."""
    if x.is_cuda and x.device.index != torch.cuda.current_device():
        return torch.cuda.device(x.device)
    return nullcontext()


def _check(x: torch.Tensor) -> None:
    reason = unavailable_reason(x)
    if reason is not None:
        raise RuntimeError(f"spocu backend 'triton' is not available: {reason}")


def forward(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s(x) with the Triton kernel; output in ``torch.empty_like(x)``'s layout."""
    _check(x)
    if not is_plain(x):  # a legacy-vmap (gradcheck) batched tensor: plain ops batch it
        return _eager.forward(x, k)
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    kern = _kernels()
    if x.is_contiguous():  # the common case: no layout to work out
        src, strided, sizes, strides = x, False, _UNIT_SIZES, _ZERO_STRIDES
    else:
        src, view, strided = _operand(x, out, _storage_order(out))
        sizes, strides = view if strided else (_UNIT_SIZES, _ZERO_STRIDES)
    table = _table(k.forward_table(), compute_dtype(x.dtype), x.device)
    with _on_device(x):
        kern.spocu_forward_kernel[(kern.triton.cdiv(n, BLOCK),)](
            src, out, table, n, sizes[1], sizes[2], sizes[3], *strides,
            STRIDED=strided, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out


def backward(grad: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """grad * s'(x) with the Triton kernel; output in ``torch.empty_like(x)``'s layout."""
    _check(x)
    if not is_plain(grad, x):  # a legacy-vmap (gradcheck) batched tensor: plain ops batch it
        return _eager.backward(grad, x, k)
    out = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return out
    kern = _kernels()
    if x.is_contiguous() and grad.is_contiguous() and grad.shape == x.shape:  # the common case
        xs, gs, x_strided, g_strided = x, grad, False, False
        sizes, xt, gt = _UNIT_SIZES, _ZERO_STRIDES, _ZERO_STRIDES
    else:
        order = _storage_order(out)
        xs, xview, x_strided = _operand(x, out, order)
        gs, gview, g_strided = _operand(grad, out, order)
        # both strided reads must walk the same merged shape; if they merged differently, copy grad
        if x_strided and g_strided and xview[0] != gview[0]:
            gs, gview, g_strided = torch.empty_like(out, dtype=grad.dtype).copy_(grad), None, False
        sizes = (xview if x_strided else gview if g_strided else (_UNIT_SIZES, _ZERO_STRIDES))[0]
        xt = xview[1] if x_strided else _ZERO_STRIDES
        gt = gview[1] if g_strided else _ZERO_STRIDES
    table = _table(k.backward_table(), compute_dtype(x.dtype), x.device)
    with _on_device(x):
        kern.spocu_backward_kernel[(kern.triton.cdiv(n, BLOCK),)](
            gs, xs, out, table, n, sizes[1], sizes[2], sizes[3], *xt, *gt,
            X_STRIDED=x_strided, G_STRIDED=g_strided, BLOCK=BLOCK, num_warps=NUM_WARPS,
        )  # fmt: skip
    return out
