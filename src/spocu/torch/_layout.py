"""Flat, storage-order views: how the fused kernels see a tensor of any shape.

An elementwise op does not care about shape, only about pairing each input
element with its output element. For a *dense* tensor (non-overlapping, no
gaps: contiguous, channels-last, transposed, any permutation) the elements
fill one block of storage, so the kernels run over that block as a 1-D array
and the output gets the input's strides (``torch.empty_like`` semantics, which
is also what the ops' fake implementations promise). Non-dense inputs (stepped
slices, expanded views) are first copied into ``torch.empty_like``'s layout.

Example:
    >>> import torch
    >>> x = torch.arange(6.0).reshape(2, 3).t()
    >>> is_dense(x), is_dense(x[::2])
    (True, False)
    >>> flat(x).tolist()  # storage order, not logical order
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import torch

from spocu.torch._compat import dispatch_mode_active
from spocu.torch._compat import is_functorch_wrapped as _is_functorch_wrapped
from spocu.torch._compat import is_legacy_batched as _is_legacy_batched

__all__ = ["is_dense", "is_plain", "flat", "has_raw_storage", "same_layout", "dense_like"]

_STRIDED = torch.strided
_TENSOR = torch.Tensor
_PARAMETER = torch.nn.Parameter


def is_plain(*tensors: torch.Tensor) -> bool:
    """True if no tensor is a ``torch.func``/vmap wrapper (which the fused kernels cannot read)."""
    for t in tensors:  # a loop, not any(genexpr): called on every fused call, where ~1 us counts
        if _is_functorch_wrapped(t) or _is_legacy_batched(t):
            return False
    return True


def has_raw_storage(*tensors: torch.Tensor) -> bool:
    """True if raw-pointer kernels may read and write these tensors: each exactly ``torch.Tensor``
    or ``nn.Parameter`` (no other subclass: FakeTensor, DTensor, FunctionalTensor, logging wrappers), strided, not a
    ``torch.func`` wrapper, and no ``TorchDispatchMode`` active (which would make the outputs fake).
    Everything else takes the composite ops, which respect ``__torch_function__``/``__torch_dispatch__``.
    """
    for t in tensors:  # (module-level names, no genexpr: every fused call asks, where ~0.1 us counts)
        kind = type(t)
        if (
            (kind is not _TENSOR and kind is not _PARAMETER)
            or t.layout is not _STRIDED
            or _is_functorch_wrapped(t)
            or _is_legacy_batched(t)
        ):
            return False
    return not dispatch_mode_active()


def is_dense(t: torch.Tensor) -> bool:
    """True if ``t``'s elements exactly fill ``numel`` consecutive storage slots."""
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(t.shape, t.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same shape and the same strides on every dimension that has more than one element."""
    return a.shape == b.shape and all(sa == sb for n, sa, sb in zip(a.shape, a.stride(), b.stride()) if n != 1)


def flat(t: torch.Tensor) -> torch.Tensor:
    """The 1-D storage-order view of a dense tensor."""
    return t.as_strided((t.numel(),), (1,), t.storage_offset())


def dense_like(t: torch.Tensor, layout_of: torch.Tensor | None = None) -> torch.Tensor:
    """``t`` itself if it is dense in the layout of ``layout_of`` (default: its own), else a dense copy."""
    ref = t if layout_of is None else layout_of
    if is_dense(t) and (layout_of is None or same_layout(t, layout_of)):
        return t
    return torch.empty_like(ref, dtype=t.dtype).copy_(t)
