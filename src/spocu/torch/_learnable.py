"""SPOCU with tensor-valued (learnable, optionally per-channel) alpha, beta, gamma.

The forward uses the shifted polynomial ``s = alpha * sum_k d_k(beta) t^k`` with
``t = clamp(x / gamma, -beta, c - beta)`` and ``d_k(beta) = r^(k)(beta) / k!``
(no cancellation near x = 0). The backward saves only ``x`` (plus the small
parameter tensors) and recomputes; its formulas are

* ds/dx     = (alpha/gamma) * r'(beta + t) * [inside]
* ds/dalpha = sum_k d_k t^k
* ds/dbeta  = alpha * (r'(beta + t) * [inside] - r'(beta))
* ds/dgamma = -alpha * r'(beta + t) * [inside] * t / gamma

Two paths compute this. The plain one (:class:`_LearnableSPOCU`) is written
with out-of-place, differentiable ops, so double backward works, and it is what
tracers (``torch.compile``, export) see; it makes dozens of passes over memory.
The fused one (:class:`_FusedLearnableSPOCU`, eager mode, large tensors) runs
the same formulas as two Inductor-compiled kernels: a single-pass forward, and
a backward that writes ds/dx and reduces the three parameter gradients per
channel in one pass. Like the fixed path it saves only ``x`` (and the small
parameter tensors); double backward falls back to the plain formulas.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from spocu.core import shifted_coefficients
from spocu.torch import _cpp, _eager, _inductor
from spocu.torch._eager import compute_dtype
from spocu.torch._layout import dense_like, flat

__all__ = ["spocu_tensor_params"]


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
        return _plain_forward(x, alpha, beta, gamma, c)

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        return (*_plain_backward(grad_output, x, alpha, beta, gamma, ctx.c, ctx.needs_input_grad), None)


def _plain_forward(x, alpha, beta, gamma, c):
    """s(x) with parameters broadcastable to x, in plain ops."""
    ctype = compute_dtype(x.dtype)
    t, _ = _pieces(x.to(ctype), beta.to(ctype), gamma.to(ctype), c)
    d = shifted_coefficients(beta.to(ctype))
    y = alpha.to(ctype) * t * _poly(t, d)
    return y.to(x.dtype)


def _plain_backward(grad_output, x, alpha, beta, gamma, c, needs):
    """(grad_x, grad_alpha, grad_beta, grad_gamma) with differentiable ops; params broadcastable to x."""
    ctype = compute_dtype(x.dtype)
    xw, a, b, g = (v.to(ctype) for v in (x, alpha, beta, gamma))
    t, outside = _pieces(xw, b, g, c)
    d = shifted_coefficients(b)
    dr = _r_prime(b + t)
    dr = torch.where(outside, torch.zeros((), dtype=ctype, device=x.device), dr)
    gout = grad_output.to(ctype)
    grad_x = grad_alpha = grad_beta = grad_gamma = None
    if needs[0]:
        grad_x = (gout * (a / g) * dr).to(x.dtype)
    if needs[1]:
        grad_alpha = (gout * t * _poly(t, d)).sum_to_size(alpha.shape).to(alpha.dtype)
    if needs[2]:
        grad_beta = (gout * a * (dr - _r_prime(b))).sum_to_size(beta.shape).to(beta.dtype)
    if needs[3]:
        grad_gamma = (-gout * a * dr * t / g).sum_to_size(gamma.shape).to(gamma.dtype)
    return grad_x, grad_alpha, grad_beta, grad_gamma


# ----------------------------------------------------------------- the fused (compiled) path
#
# x is viewed as (A, C, B) -- C the parameter count (1 when shared), B the
# elements per channel that are adjacent in memory -- so every input rank and
# the channels-last layout share a few compiled kernels, and the parameter
# gradients are one reduction over dims (0, 2). The parameters come in shaped
# (1, C, 1) in the compute dtype, c as a 0-d tensor (no recompilation per c).


def _fused_forward_math(x, alpha, beta, gamma, c, out):
    w = x.to(alpha.dtype)
    t = torch.clamp(w / gamma, min=-beta, max=c - beta)
    out.copy_(alpha * t * _poly(t, shifted_coefficients(beta)))


def _fused_backward_math(grad, x, alpha, beta, gamma, c, out):
    w = x.to(alpha.dtype)
    gout = grad.to(alpha.dtype)
    t_raw = w / gamma
    upper = c - beta
    t = torch.clamp(t_raw, min=-beta, max=upper)
    outside = (t_raw <= -beta) | (t_raw >= upper)
    dr = torch.where(outside, 0.0, _r_prime(beta + t))
    out.copy_(gout * (alpha / gamma) * dr)
    grad_alpha = (gout * t * _poly(t, shifted_coefficients(beta))).sum((0, 2), keepdim=True)
    grad_beta = (gout * alpha * (dr - _r_prime(beta))).sum((0, 2), keepdim=True)
    grad_gamma = (-gout * alpha * dr * t / gamma).sum((0, 2), keepdim=True)
    return grad_alpha, grad_beta, grad_gamma


_inductor.register("learnable_forward", _fused_forward_math)
_inductor.register("learnable_backward", _fused_backward_math)


def _channels_last_order(x: torch.Tensor) -> tuple[int, ...] | None:
    """The permutation that makes a channels-last-like x contiguous (None if it is not)."""
    if x.dim() < 3:
        return None
    order = (0, *range(2, x.dim()), 1)
    return order if x.permute(order).is_contiguous() else None


def _layout_for(x: torch.Tensor, channels: int) -> torch.Tensor:
    """x itself when its layout can be viewed as (A, C, B), else a contiguous copy."""
    if channels == 1:
        return dense_like(x)
    return x if x.is_contiguous() or _channels_last_order(x) is not None else x.contiguous()


def _as_acb(t: torch.Tensor, channels: int) -> torch.Tensor:
    """The (A, C, B) view of ``t`` (a tensor in :func:`_layout_for`'s layout)."""
    if channels == 1:
        return flat(t).view(1, 1, t.numel())
    if t.is_contiguous():
        return t.view(t.shape[0], channels, -1)
    return t.permute(_channels_last_order(t)).view(-1, channels, 1)


def _tag(x3: torch.Tensor, dtype: torch.dtype) -> str:
    # Dynamo specialises sizes of 1, so each pattern of unit dims is its own kernel
    ones = "".join("1" if n == 1 else "n" for n in x3.shape)
    return f"{str(dtype).removeprefix('torch.')}_{x3.device.type}_{ones}"


def _example(x3: torch.Tensor, *others: torch.Tensor) -> Callable[[], tuple]:
    """Large blank arguments with x3's unit-dim pattern (Inductor sizes its parallelism on them)."""

    def make() -> tuple:
        shape = tuple(1 if n == 1 else big for n, big in zip(x3.shape, (64, 16, 1024)))
        pshape = (1, shape[1], 1)
        blank = lambda dtype, s: torch.zeros(s, dtype=dtype, device=x3.device)  # noqa: E731
        ctype = compute_dtype(x3.dtype)
        params = [blank(ctype, pshape) + 0.5 for _ in range(3)]
        params.append(torch.tensor(math.inf, dtype=ctype, device=x3.device))
        tensors = [blank(t.dtype, shape) for t in others]
        return (*tensors, *params, blank(x3.dtype, shape))

    return make


def _fused_params(x, alpha, beta, gamma, c):
    channels = alpha.numel()
    ctype = compute_dtype(x.dtype)
    shaped = [p.detach().reshape(1, channels, 1).to(ctype) for p in (alpha, beta, gamma)]
    return channels, shaped, torch.tensor(c, dtype=ctype, device=x.device)


class _FusedLearnableSPOCU(torch.autograd.Function):
    """Learnable SPOCU with compiled kernels; alpha, beta, gamma have 1 or C (= x.shape[1]) elements."""

    @staticmethod
    def forward(ctx, x, alpha, beta, gamma, c):
        ctx.save_for_backward(x, alpha, beta, gamma)
        ctx.c = c
        channels, params, c_t = _fused_params(x, alpha, beta, gamma, c)
        src = _layout_for(x.detach(), channels)
        out = torch.empty_like(src)
        x3 = _as_acb(src, channels)
        args = (x3, *params, c_t, _as_acb(out, channels))
        if _inductor.run("learnable_forward", _tag(x3, x.dtype), args, _example(x3, x3)) is _inductor.FAILED:
            return _plain_forward(x, *(_broadcast_shape(p, x) for p in (alpha, beta, gamma)), c)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        needs = ctx.needs_input_grad
        shaped = [_broadcast_shape(p, x) for p in (alpha, beta, gamma)]
        if _eager.recording(grad_output, x, alpha, beta, gamma):  # double backward: differentiable ops
            grads = _plain_backward(grad_output, x, *shaped, ctx.c, needs)
            return (grads[0], *(_unshape(g, p) for g, p in zip(grads[1:], (alpha, beta, gamma))), None)
        channels, params, c_t = _fused_params(x, alpha, beta, gamma, ctx.c)
        src = _layout_for(x, channels)
        grad = dense_like(grad_output, src)
        out = torch.empty_like(src)
        x3 = _as_acb(src, channels)
        args = (_as_acb(grad, channels), x3, *params, c_t, _as_acb(out, channels))
        sums = _inductor.run("learnable_backward", _tag(x3, x.dtype), args, _example(x3, x3, x3))
        if sums is _inductor.FAILED:
            grads = _plain_backward(grad_output, x, *shaped, ctx.c, needs)
            return (grads[0], *(_unshape(g, p) for g, p in zip(grads[1:], (alpha, beta, gamma))), None)
        grads = [
            total.reshape(p.shape).to(p.dtype) if need else None
            for total, p, need in zip(sums, (alpha, beta, gamma), needs[1:4])
        ]
        return (out if needs[0] else None, *grads, None)


class _CppLearnableSPOCU(torch.autograd.Function):
    """Learnable SPOCU with the C++ kernels (:mod:`spocu.torch._cpp`); saves x and the small parameters."""

    @staticmethod
    def forward(ctx, x, alpha, beta, gamma, c):
        ctx.save_for_backward(x, alpha, beta, gamma)
        ctx.c = c
        channels = alpha.numel()
        src = _layout_for(x.detach(), channels)
        out = torch.empty_like(src)
        if not _cpp.learnable_forward(_as_acb(src, channels), _as_acb(out, channels), alpha, beta, gamma, c):
            # the kernels are not built (yet)
            return _plain_forward(x, *(_broadcast_shape(p, x) for p in (alpha, beta, gamma)), c)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        needs = ctx.needs_input_grad
        params = (alpha, beta, gamma)
        sums = None
        if not _eager.recording(grad_output, x, alpha, beta, gamma):  # else double backward: differentiable ops
            channels = alpha.numel()
            src = _layout_for(x, channels)
            grad = dense_like(grad_output.to(x.dtype), src)
            out = torch.empty_like(src)
            acb = [_as_acb(t, channels) for t in (grad, src, out)]
            sums = _cpp.learnable_backward(*acb, *params, ctx.c)
        if sums is None:
            grads = _plain_backward(grad_output, x, *(_broadcast_shape(p, x) for p in params), ctx.c, needs)
            return (grads[0], *(_unshape(g, p) for g, p in zip(grads[1:], params)), None)
        grads = [total.reshape(p.shape).to(p.dtype) if need else None for total, p, need in zip(sums, params, needs[1:4])]
        return (out if needs[0] else None, *grads, None)


def _unshape(grad, param):
    return None if grad is None else grad.reshape(param.shape)


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


def spocu_tensor_params(
    x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float, path: str = "eager"
):
    """SPOCU with tensor parameters (scalars or one per channel along dim 1).

    ``path`` (eager mode only) is the kernel path chosen by the dispatcher: ``"cpp"``
    runs the C++ kernels, another fused path the Inductor-compiled ones (tensors of
    at least 2 elements), ``"eager"`` the plain ops.
    """
    a, b, g = (_broadcast_shape(p, x) for p in (alpha, beta, gamma))  # also checks the channel count
    if (
        path == "cpp"
        and x.dtype in _cpp.DTYPES
        and all(t.is_cpu for t in (x, alpha, beta, gamma))
        and not _cpp.transforms_active()
    ):
        return _CppLearnableSPOCU.apply(x, alpha, beta, gamma, c)
    if path not in ("eager", "cpp") and x.numel() >= _inductor.MIN_NUMEL and _inductor.usable():
        return _FusedLearnableSPOCU.apply(x, alpha, beta, gamma, c)
    return _LearnableSPOCU.apply(x, a, b, g, c)
