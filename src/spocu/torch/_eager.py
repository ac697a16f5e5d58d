"""Plain-PyTorch kernels for SPOCU with fixed parameters (the reference "eager" path).

SPOCU is evaluated as ``P(clamp(x, lo, hi))`` with ``P(x) = sum_k e_k x^k`` (see
:mod:`spocu.torch._constants`), so the forward is one clamp plus a degree-8
Horner loop and the backward needs only ``x``. Buffers are updated in place
where nothing else can see them; when a graph is being recorded (double
backward, or a tracer that differentiates the ops) the out-of-place forms are
used instead so autograd can follow them. These functions run on any device
and under any tracer (Dynamo, ``torch.export``, ONNX), which is why they are
also what an outer ``torch.compile`` fuses.
"""

from __future__ import annotations

import torch

from spocu.torch._constants import KernelConstants, compute_dtype

__all__ = ["forward", "backward", "second_derivative", "compute_dtype", "recording"]


def _clamp(x: torch.Tensor, lo: float, hi: float, bounded: bool) -> torch.Tensor:
    return torch.clamp(x, min=lo, max=hi) if bounded else torch.clamp(x, min=lo)


def _horner(x: torch.Tensor, coefficients: tuple[float, ...], *, shift: bool, inplace: bool) -> torch.Tensor:
    """Evaluate ``sum_k c_k x^k`` (``shift=False``) or ``x * sum_k c_k x^k`` (``shift=True``).

    ``coefficients`` are lowest power first.
    """
    if inplace:
        acc = x * coefficients[-1]
        for a_k in coefficients[-2:0:-1]:
            acc.add_(a_k).mul_(x)
        acc.add_(coefficients[0])
        if shift:
            acc.mul_(x)
        return acc
    acc = x * coefficients[-1]
    for a_k in coefficients[-2:0:-1]:
        acc = (acc + a_k) * x
    acc = acc + coefficients[0]
    return acc * x if shift else acc


def recording(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def forward(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s(x) in x's dtype (computed in float32 for half types)."""
    work = x.to(compute_dtype(x.dtype))
    xc = _clamp(work, k.lo, k.hi, k.bounded)
    y = _horner(xc, k.value, shift=True, inplace=not recording(xc))
    return y.to(x.dtype)


def _outside(work: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    # also for c = inf: x = +inf is "outside" (s' = 0 there, as in the float64 reference)
    return (work <= k.lo) | (work >= k.hi)


def backward(grad_output: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """grad_output * s'(x), with s' = 0 outside the active piece (and at x = x_hi).

    s' is evaluated at the clamped x so that huge inputs in a flat piece cannot
    produce inf * 0 = NaN (the double-``where`` idea of ``jax.nn.elu``); NaN
    inputs give NaN gradients, as torch's own unary ops do.
    """
    ctype = compute_dtype(x.dtype)
    work = x.to(ctype)
    # for c = inf, cap x where s' would overflow: a finite x then never gives NaN
    xc = torch.clamp(work, min=k.lo, max=k.cap)
    outside = _outside(work, k)
    differentiable = recording(work, grad_output)
    ds = _horner(xc, k.slope, shift=False, inplace=not differentiable)
    if differentiable:
        ds = torch.where(outside, torch.zeros((), dtype=ctype, device=x.device), ds)
        return (grad_output.to(ctype) * ds).to(x.dtype)
    ds.masked_fill_(outside, 0.0)
    return ds.mul_(grad_output).to(x.dtype)


def second_derivative(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s''(x) in the compute dtype (0 outside the active piece); out of place, differentiable."""
    work = x.to(compute_dtype(x.dtype))
    xc = torch.clamp(work, min=k.lo, max=k.cap)
    d2 = _horner(xc, k.curvature, shift=False, inplace=False)
    return torch.where(_outside(work, k), torch.zeros((), dtype=work.dtype, device=x.device), d2)
