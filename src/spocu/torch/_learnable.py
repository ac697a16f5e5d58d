"""SPOCU with tensor-valued (learnable, optionally per-channel) alpha, beta, gamma.

The forward uses the shifted polynomial ``s = alpha * sum_k d_k(beta) t^k`` with
``t = clamp(x / gamma, -beta, c - beta)`` and ``d_k(beta) = r^(k)(beta) / k!``
(no cancellation near x = 0). The backward saves only ``x`` (plus the small
parameter tensors) and recomputes; its formulas are

* ds/dx     = (alpha/gamma) * r'(beta + t) * [inside]
* ds/dalpha = sum_k d_k t^k
* ds/dbeta  = alpha * (r'(beta + t) * [inside] - r'(beta))
* ds/dgamma = -alpha * r'(beta + t) * [inside] * t / gamma

The backward is written with out-of-place, differentiable ops, so double
backward works. It is slower than the fixed-parameter path.
"""

from __future__ import annotations

import math

import torch

from spocu.core import R_COEFFICIENTS
from spocu.torch._eager import compute_dtype

__all__ = ["spocu_tensor_params"]


def _shifted_coefficients(beta: torch.Tensor) -> list[torch.Tensor]:
    """d_1..d_8 of r(beta + t) - r(beta) as tensors shaped like beta."""
    n = len(R_COEFFICIENTS) - 1
    out = []
    for k in range(1, n + 1):
        d_k = torch.zeros_like(beta)
        for j in range(k, n + 1):
            if R_COEFFICIENTS[j]:
                d_k = d_k + R_COEFFICIENTS[j] * math.comb(j, k) * beta ** (j - k)
        out.append(d_k)
    return out


def _r_prime(u: torch.Tensor) -> torch.Tensor:
    return u**6 * (8.0 * u - 14.0) + 6.0 * u**2


def _poly(t: torch.Tensor, coefficients: list[torch.Tensor]) -> torch.Tensor:
    """sum_i coefficients[i] * t^i (Horner)."""
    acc = coefficients[-1] * torch.ones_like(t)
    for a in coefficients[-2::-1]:
        acc = acc * t + a
    return acc


def _pieces(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float):
    t_raw = x / gamma
    upper = c - beta if math.isfinite(c) else None
    t = torch.clamp(t_raw, min=-beta, max=upper)
    outside = t_raw <= -beta
    if upper is not None:
        outside = outside | (t_raw >= upper)
    return t, outside


class _LearnableSPOCU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha, beta, gamma, c):
        ctx.save_for_backward(x, alpha, beta, gamma)
        ctx.c = c
        ctype = compute_dtype(x.dtype)
        t, _ = _pieces(x.to(ctype), beta.to(ctype), gamma.to(ctype), c)
        d = _shifted_coefficients(beta.to(ctype))
        y = alpha.to(ctype) * t * _poly(t, d)
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        ctype = compute_dtype(x.dtype)
        xw, a, b, g = (v.to(ctype) for v in (x, alpha, beta, gamma))
        t, outside = _pieces(xw, b, g, ctx.c)
        d = _shifted_coefficients(b)
        dr = _r_prime(b + t)
        dr = torch.where(outside, torch.zeros((), dtype=ctype, device=x.device), dr)
        gout = grad_output.to(ctype)
        grad_x = grad_alpha = grad_beta = grad_gamma = None
        if ctx.needs_input_grad[0]:
            grad_x = (gout * (a / g) * dr).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_alpha = (gout * t * _poly(t, d)).sum_to_size(alpha.shape).to(alpha.dtype)
        if ctx.needs_input_grad[2]:
            grad_beta = (gout * a * (dr - _r_prime(b))).sum_to_size(beta.shape).to(beta.dtype)
        if ctx.needs_input_grad[3]:
            grad_gamma = (-gout * a * dr * t / g).sum_to_size(gamma.shape).to(gamma.dtype)
        return grad_x, grad_alpha, grad_beta, grad_gamma, None


def _broadcast_shape(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scalar/one-element parameters broadcast everywhere; C-element ones along dim 1."""
    if param.numel() == 1:
        return param.reshape([1] * max(x.dim(), 1)) if x.dim() else param.reshape(())
    if x.dim() < 2 or x.shape[1] != param.numel():
        channels = x.shape[1] if x.dim() >= 2 else "none (input has fewer than 2 dims)"
        raise ValueError(
            f"SPOCU has {param.numel()} parameters per channel but the input's channel dim (dim 1) is {channels}"
        )
    return param.reshape([1, param.numel()] + [1] * (x.dim() - 2))


def spocu_tensor_params(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float):
    """SPOCU with tensor parameters (scalars or one per channel along dim 1)."""
    a, b, g = (_broadcast_shape(p, x) for p in (alpha, beta, gamma))
    return _LearnableSPOCU.apply(x, a, b, g, c)
