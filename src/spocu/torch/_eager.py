"""Plain-PyTorch kernels for SPOCU with fixed parameters (the eager reference path).

SPOCU is evaluated as ``P(clamp(x, lo, hi))`` with ``P(x) = sum_k e_k x^k`` (see
:class:`spocu.core.SPOCUParams`), so the forward is one clamp plus a degree-8
Horner loop and the backward needs only ``x``. Buffers are updated in place
where nothing else can see them; when a graph is being recorded (double
backward) the out-of-place forms are used instead so autograd can follow them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from spocu.core import SPOCUParams

__all__ = ["forward", "backward", "compute_dtype"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (opmath); float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _clamp(x: torch.Tensor, params: SPOCUParams) -> torch.Tensor:
    if math.isfinite(params.upper_bound):
        return torch.clamp(x, min=params.lower_bound, max=params.upper_bound)
    return torch.clamp(x, min=params.lower_bound)


@lru_cache(maxsize=512)
def _derivative_cap(params: SPOCUParams, dtype: torch.dtype) -> float:
    return params.derivative_safe_bound(torch.finfo(dtype).max)


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


def forward(x: torch.Tensor, params: SPOCUParams) -> torch.Tensor:
    """s(x) in x's dtype (computed in float32 for half types)."""
    work = x.to(compute_dtype(x.dtype))
    xc = _clamp(work, params)
    inplace = not (torch.is_grad_enabled() and xc.requires_grad)
    y = _horner(xc, params.x_coefficients, shift=True, inplace=inplace)
    return y.to(x.dtype)


def backward(grad_output: torch.Tensor, x: torch.Tensor, params: SPOCUParams) -> torch.Tensor:
    """grad_output * s'(x), with s' = 0 outside the active piece (and at x = x_hi).

    s' is evaluated at the clamped x so that huge inputs in a flat piece cannot
    produce inf * 0 = NaN (the double-``where`` idea of ``jax.nn.elu``); NaN
    inputs give NaN gradients, as torch's own unary ops do.
    """
    ctype = compute_dtype(x.dtype)
    work = x.to(ctype)
    # for c = inf, cap x where s' would overflow: a finite x then never gives NaN
    xc = torch.clamp(work, min=params.lower_bound, max=_derivative_cap(params, ctype))
    outside = work <= params.lower_bound
    if math.isfinite(params.upper_bound):
        outside = outside | (work >= params.upper_bound)
    recording = torch.is_grad_enabled() and (work.requires_grad or grad_output.requires_grad)
    ds = _horner(xc, params.x_derivative_coefficients, shift=False, inplace=not recording)
    if recording:
        ds = torch.where(outside, torch.zeros((), dtype=ctype, device=x.device), ds)
        return (grad_output.to(ctype) * ds).to(x.dtype)
    ds.masked_fill_(outside, 0.0)
    return ds.mul_(grad_output).to(x.dtype)
