"""Plain-PyTorch kernels for SPOCU with fixed parameters (the reference "eager" path).

SPOCU is evaluated as ``P(clamp(x, lo, hi))`` with ``P(x) = sum_k e_k x^k`` (see
:mod:`spocu.torch._constants`), so the forward is one clamp plus a degree-8
Horner loop and the backward needs only ``x``. :func:`forward` and
:func:`backward` run inside autograd Functions (no graph is recorded there), so
they update their own buffers in place; :func:`differentiable_forward` is the
out-of-place form for exported graphs, written with ``where`` so that autograd
through it keeps SPOCU's convention (s' = 0 at both kinks and on the flat pieces).
These functions run on any device and under any tracer (Dynamo, ``torch.export``,
ONNX), which is why they are also what an outer ``torch.compile`` fuses.
"""

from __future__ import annotations

import torch

from spocu.torch._constants import KernelConstants, compute_dtype, in_dtype

__all__ = [
    "backward",
    "compute_dtype",
    "differentiable_forward",
    "forward",
    "second_derivative",
    "unavailable_reason",
]


def unavailable_reason(x: torch.Tensor) -> str | None:
    """Plain ops run everywhere."""
    return None


def _horner(x: torch.Tensor, coefficients: tuple, *, shift: bool, inplace: bool) -> torch.Tensor:
    """Evaluate ``sum_k c_k x^k`` (``shift=False``) or ``x * sum_k c_k x^k`` (``shift=True``).

    ``coefficients`` are lowest power first.
    """
    acc = x * coefficients[-1]
    if inplace:
        for a_k in coefficients[-2:0:-1]:
            acc.add_(a_k).mul_(x)
        acc.add_(coefficients[0])
        return acc.mul_(x) if shift else acc
    for a_k in coefficients[-2:0:-1]:
        acc = (acc + a_k) * x
    acc = acc + coefficients[0]
    return acc * x if shift else acc


def _clamp(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    return torch.clamp(x, min=k.lo, max=k.hi) if k.bounded else torch.clamp(x, min=k.lo)


def forward(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s(x) in x's dtype (computed in float32 for half types); not differentiable."""
    xc = _clamp(x.to(compute_dtype(x.dtype)), k)
    return in_dtype(_horner(xc, k.value, shift=True, inplace=True), x.dtype)


def differentiable_forward(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s(x) in out-of-place standard ops whose autograd gives s' = 0 at the kinks and where flat.

    ``where`` (not ``clamp``, whose gradient is 1 at its bounds) picks the constant
    pieces; NaN stays NaN (it fails both comparisons and takes the ``x`` branch).
    """
    w = x.to(compute_dtype(x.dtype))
    lo = torch.full((), k.lo, dtype=w.dtype, device=w.device)
    upper = torch.where(w >= k.hi, torch.full((), k.hi, dtype=w.dtype, device=w.device), w)
    xc = torch.where(w <= k.lo, lo, upper)
    return in_dtype(_horner(xc, k.value, shift=True, inplace=False), x.dtype)


def _outside(work: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    # also for c = inf: x = +inf is "outside" (s' = 0 there, as in the float64 reference)
    return (work <= k.lo) | (work >= k.hi)


def backward(grad_output: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """grad_output * s'(x), with s' = 0 outside the active piece and at both kinks; not differentiable.

    s' is evaluated at the clamped x so that huge inputs in a flat piece cannot
    produce inf * 0 = NaN (the double-``where`` idea of ``jax.nn.elu``); NaN
    inputs give NaN gradients, as torch's own unary ops do.
    """
    work = x.to(compute_dtype(x.dtype))
    # for c = inf, cap x where s' would overflow: a finite x then never gives NaN
    ds = _horner(torch.clamp(work, min=k.lo, max=k.cap), k.slope, shift=False, inplace=True)
    ds.masked_fill_(_outside(work, k), 0.0)
    return in_dtype(ds * grad_output, x.dtype)  # out of place: grad may be batched (vmap) where x is not


def second_derivative(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s''(x) in the compute dtype (0 outside the active piece and at the kinks); out of place."""
    work = x.to(compute_dtype(x.dtype))
    xc = torch.clamp(work, min=k.lo, max=k.cap)
    d2 = _horner(xc, k.curvature, shift=False, inplace=False)
    return torch.where(_outside(work, k), torch.zeros((), dtype=work.dtype, device=x.device), d2)
