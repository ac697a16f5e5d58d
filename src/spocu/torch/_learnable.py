"""SPOCU with tensor-valued (learnable, optionally per-channel) alpha, beta, gamma.

The forward uses the shifted polynomial ``s = alpha * sum_k d_k(beta) t^k`` with
``t = clamp(x / gamma, -beta, c - beta)`` and ``d_k(beta) = r^(k)(beta) / k!``
(no cancellation near x = 0). The backward saves only ``x`` (plus the small
parameter tensors) and recomputes; its formulas are

* ds/dx     = (alpha/gamma) * r'(beta + t) * [inside]
* ds/dalpha = sum_k d_k t^k
* ds/dbeta  = alpha * (r'(beta + t) * [inside] - r'(beta))
* ds/dgamma = -alpha * r'(beta + t) * [inside] * t / gamma

On the flat pieces and at both kinks every partial is 0 (s' = 0 there, the
package's convention; x = +inf is flat, also for c = inf). Up to ``u = beta + t = u_cap``
(:func:`_partial_cap`: ``8 u^8`` is 1/128 of the compute dtype's largest value) these
formulas cannot overflow. Beyond it (c = inf or c > u_cap; u_cap is 2.7e4 in float32,
1.4e38 in float64) :func:`_partials_at` folds each partial's scale in first and multiplies
up, so every partial is exact where the compute dtype holds it (float32: r'(u) up to
u ~ 2.4e5) and saturates at the dtype's largest value, with its sign, where it does
not: never inf, so a zero upstream gradient never gives ``0 * inf = NaN``. The compiled and
Inductor-fused backwards (first order only) reach the same values with one formula for every
element, :func:`first_order_partials`, whose shape keeps Inductor's backward one pass. The C++
kernels compute uncapped and redo, in double with the same folded formulas, a row whose sums
overflow (see ``_cpp_kernels_body.h``).

Two Functions compute this. The plain one (:class:`_LearnableSPOCU`) is written
with out-of-place, differentiable ops, so double backward works, and it is what
tracers (``torch.compile``, export) see; it makes dozens of passes over memory.
The fused one (:class:`_FusedLearnableSPOCU`, eager mode) runs the same formulas
with the kernels it is given: the C++ library's (:class:`_CppKernels`, CPU) or two
Inductor-compiled kernels (:class:`_InductorKernels`): a single-pass forward, and a
backward that writes ds/dx and reduces the three parameter gradients per channel in
one pass. Like the fixed path it saves only ``x`` (and the small parameter tensors);
double backward falls back to the plain formulas.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch

from spocu.core import LEARNABLE_MARGIN, learnable_partial_cap, learnable_positive, shifted_coefficients
from spocu.torch import _cpp, _inductor
from spocu.torch._autograd import plain_apply
from spocu.torch._compat import functorch_active
from spocu.torch._constants import compute_dtype, in_dtype
from spocu.torch._layout import dense_like, flat, has_raw_storage, is_plain

__all__ = [
    "apply_learnable_raw",
    "broadcast_parameters",
    "differentiable_forward",
    "spocu_tensor_params",
    "traced_forward",
]


def _r_prime(u: torch.Tensor) -> torch.Tensor:
    return u**6 * (8.0 * u - 14.0) + 6.0 * u**2


def _r(u: torch.Tensor) -> torch.Tensor:
    return u**7 * (u - 2.0) + 2.0 * u**3


def _poly(t: torch.Tensor, coefficients: list[torch.Tensor]) -> torch.Tensor:
    """sum_i coefficients[i] * t^i (Horner)."""
    acc = coefficients[-1] * torch.ones_like(t)
    for a in coefficients[-2::-1]:
        acc = acc * t + a
    return acc


def _pieces(x: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float):
    t_raw = x / gamma
    upper = c - beta if c != math.inf else None
    t = torch.clamp(t_raw, min=-beta, max=upper)
    outside = t_raw <= -beta
    if upper is not None:
        outside = outside | (t_raw >= upper)
    return t, outside


def _partial_cap(dtype: torch.dtype) -> float:
    """:func:`spocu.core.learnable_partial_cap` of ``dtype`` (2.7e4 in float32)."""
    return learnable_partial_cap(torch.finfo(dtype).max)


def _partials(x, alpha, beta, gamma, c):
    """Elementwise (ds/dx, ds/dalpha, ds/dbeta, ds/dgamma) in the compute dtype, differentiable.

    0 on the flat pieces and at the kinks; see :func:`_partials_at` for beyond ``u_cap``.
    """
    ctype = compute_dtype(x.dtype)
    xw, a, b, g = (v.to(ctype) for v in (x, alpha, beta, gamma))
    t, outside = _pieces(xw, b, g, c)
    at_inf = torch.isposinf(xw)  # x = +inf is flat by convention (s' = 0 there), also for c = inf
    inside = ~(outside | at_inf)
    return _partials_at(t, inside, a, b, g, _partial_cap(ctype), shifted_coefficients(b))


def _partials_at(t, inside, alpha, beta, gamma, cap, coefficients):
    """(ds/dx, ds/dalpha, ds/dbeta, ds/dgamma) at ``t = clamp(x/gamma, -beta, c - beta)`` (NaN stays NaN),
    in t's dtype; ``inside``: the active piece (else s' = 0); ``coefficients``: d_1..d_8(beta); ``cap``:
    :func:`_partial_cap`. The plain ops' form, differentiable again (the compiled and fused backwards,
    first order only, use :func:`first_order_partials`).

    Up to ``u = beta + t = cap`` the usual formulas. Beyond it (the tail: c = inf or c > cap) each
    partial is evaluated with its scale folded in first, as a chain of products that never exceeds the
    result's magnitude (u >= cap >= 2.7e4), so an intermediate overflows only where the partial does:
    ``k r'(u) = (k u^6)(8u - 14) + 6 (k u^2)`` (k = alpha/gamma, alpha), ``r(u) - r(beta)`` with
    ``r(u) = u^7 (u - 2) + 2u^3``, and ``ds/dgamma = -(alpha/gamma) r'(u) t``; the result saturates at
    +-max of the dtype (never inf, so a zero upstream gradient never gives 0 * inf = NaN). Each branch
    sees only arguments of its own range (``where`` picks; the other is finite), and every product
    saturates as it goes, so double backward and forward mode stay NaN-free at finite inputs.

    >>> one, beta = torch.ones(()), torch.tensor(0.5)
    >>> t, inside = torch.tensor([2.0, 1e5, 1e6]), torch.tensor([True, True, True])
    >>> d_x, *_ = _partials_at(t, inside, one, beta, one, _partial_cap(torch.float32), shifted_coefficients(beta))
    >>> d_x.tolist()  # r'(2.5); r'(100000.5), beyond u_cap = 2.7e4; r'(1e6 + 0.5) overflows: saturated
    [1502.34375, 8.000139768913855e+35, 3.4028234663852886e+38]
    """
    big = torch.finfo(t.dtype).max
    t_cap = cap - beta
    tail = t > t_cap
    # the usual formulas, at t <= t_cap
    tm = torch.minimum(t, t_cap)
    dr = torch.where(inside, _r_prime(beta + tm), 0.0)
    main = ((alpha / gamma) * dr, tm * _poly(tm, coefficients), alpha * (dr - _r_prime(beta)), -alpha * dr * tm / gamma)

    # the tail, at t >= t_cap (at most big/16: every partial saturates well before, and 8u stays finite)
    def sat(v):
        return torch.clamp(v, -big, big)

    tt = torch.clamp(torch.maximum(t, t_cap), max=big / 16)
    u = beta + tt

    # k r'(u) = (k u^6)(8u - 14) + 6 (k u^2) for k = alpha / max(gamma, 1), the smaller of alpha/gamma
    # and alpha: times max(gamma, 1)/gamma >= 1 it is ds/dx, times max(gamma, 1) >= 1 alpha r'(u)
    w = torch.clamp(gamma, min=1.0)
    k2 = sat(sat((alpha / w) * u) * u)
    k6 = sat(sat(sat(sat(k2 * u) * u) * u) * u)
    slope = torch.where(inside, sat(sat(k6 * (8.0 * u - 14.0)) + sat(6.0 * k2)), 0.0)
    u3 = sat(sat(u * u) * u)
    u7 = sat(sat(sat(sat(u3 * u) * u) * u) * u)
    r_tail = sat(sat(u7 * (u - 2.0)) + 2.0 * u3) - _r(beta)  # r(u) - r(beta), r(u) = u^7 (u - 2) + 2u^3
    dx_tail = sat(slope * (w / gamma))
    d_beta_tail = sat(slope * w) - alpha * _r_prime(beta)
    tails = (dx_tail, r_tail, d_beta_tail, -dx_tail * tt)
    return tuple(torch.where(tail, torch.clamp(v, -big, big), m) for v, m in zip(tails, main))


def first_order_constants(alpha, beta, gamma, c) -> torch.Tensor:
    """The per-channel constants of :func:`first_order_partials`, stacked on a new last dimension.

    ``alpha / gamma``, ``alpha``, ``alpha r'(beta)``; ``-beta`` and ``c - beta``, the bounds of
    t; ``x_top``: -inf for finite c (the top flat piece is ``x / gamma >= c - beta``), +inf for
    c = inf (only x = +inf is flat: a finite x whose x / gamma overflows is not). Computed once per
    call on the small parameter tensors, so that the per-element expressions only load them.
    """
    alpha, beta, gamma = torch.broadcast_tensors(alpha, beta, gamma)
    # (c stays 0-d: a tensor subclass such as DTensor mixes with 0-d plain tensors only)
    c = torch.as_tensor(c, dtype=alpha.dtype, device=alpha.device)
    x_top = torch.where(torch.isinf(c), math.inf, -math.inf) + torch.zeros_like(beta)
    return torch.stack((alpha / gamma, alpha, alpha * _r_prime(beta), -beta, c - beta, x_top), dim=-1)


def first_order_partials(x, gamma, coefficients, constants):
    """(ds/dx, ds/dalpha, ds/dbeta, ds/dgamma) at x, for the compiled and Inductor-fused backwards
    (first order only), in one formula for every element; ``coefficients``: d_1..d_7(beta)
    (d_8 = 1); ``constants``: :func:`first_order_constants`. The values of :func:`_partials_at`.

    With ``t = clamp(x / gamma, -beta, c - beta)`` and ``u = beta + t``, each partial scales
    ``r'(u) = u^2 (u^4 (8u - 14) + 6)`` from its own constant outwards,
    ``ds/dx = ((alpha/gamma) u^2) (u^4 (8u - 14) + 6)``, ``ds/dbeta = (alpha u^2)(...) - alpha
    r'(beta)``, ``ds/dgamma = -((alpha/gamma) u^2 t)(...)``, and ``ds/dalpha = t p(t)`` (Horner in the shifted
    coefficients, exact near t = 0). Every factor after the first is >= 1 where a partial is
    large, so an intermediate overflows only where the partial does, and the last clamp
    saturates it (one-sided: each partial is small on its other side). The one exception is the
    shared factor ``u^4 (8u - 14) + 6``, inf beyond u = 3.4e7 in float32 (2.9e61 in float64): a
    partial whose constant (alpha/gamma or alpha) is below 9e-16 (1e-123) could be finite there and
    saturates instead.
    On the lower flat piece u = 0 and r'(0) = 0 by themselves; the top one (and x = +inf) is
    masked. NaN stays NaN.

    It is not differentiated again (where an intermediate is inf, its derivative is NaN): the
    plain ops use :func:`_partials_at`. Its shape is set by Inductor's fusion heuristics (torch
    2.13, CPU): an expression that several partials share is stored to memory when it reads more
    than 4 tensors (``realize_reads_threshold``) or has more than 50 operations, and any one
    with more than 12 reads (``realize_cpu_acc_reads_threshold``). Within these, the compiled
    backward is one pass that writes ds/dx and reduces the three parameter gradients; the first
    exact form, past them, took two more passes and about twice the time.
    """
    big = torch.finfo(x.dtype).max
    k_x, alpha, slope_at_beta, neg_beta, upper, x_top = constants.unbind(-1)
    t_raw = x / gamma
    t = torch.clamp(t_raw, min=neg_beta, max=upper)
    flat_top = (t_raw >= upper) & (x >= x_top)
    tt = torch.clamp(t, max=big / 16)  # 8u stays finite; every partial saturates well before
    u = tt - neg_beta
    u2 = u * u
    r_prime_over_u2 = u2 * u2 * (8.0 * u - 14.0) + 6.0
    horner = t + coefficients[-1]
    for d in coefficients[-2::-1]:
        horner = horner * t + d
    # (no partial reuses another's product: a shared one would be stored to memory)
    return (
        torch.clamp(torch.where(flat_top, 0.0, k_x * u2 * r_prime_over_u2), max=big),
        torch.clamp(t * horner, max=big),
        torch.clamp(torch.where(flat_top, 0.0, alpha * u2 * r_prime_over_u2), max=big) - slope_at_beta,
        torch.clamp(torch.where(flat_top, 0.0, -(k_x * (u2 * tt)) * r_prime_over_u2), min=-big),
    )


def _reduce(grad, param):
    return grad.sum_to_size(param.shape).to(param.dtype)


def _plain_backward(grad_output, x, alpha, beta, gamma, c, needs):
    """(grad_x, grad_alpha, grad_beta, grad_gamma) with differentiable ops; params broadcastable to x."""
    d_x, d_alpha, d_beta, d_gamma = _partials(x, alpha, beta, gamma, c)
    gout = grad_output.to(d_x.dtype)
    return (
        in_dtype(gout * d_x, x.dtype) if needs[0] else None,
        _reduce(gout * d_alpha, alpha) if needs[1] else None,
        _reduce(gout * d_beta, beta) if needs[2] else None,
        _reduce(gout * d_gamma, gamma) if needs[3] else None,
    )


def _jvp(x, alpha, beta, gamma, c, tangents):
    """The forward-mode derivative: sum over inputs of tangent * partial (inputs without tangent skipped)."""
    out = None
    for tangent, partial in zip(tangents, _partials(x, alpha, beta, gamma, c)):
        if tangent is not None:
            term = tangent.to(partial.dtype) * partial
            out = term if out is None else out + term
    return in_dtype(out, x.dtype)


def _plain_forward(x, alpha, beta, gamma, c):
    """s(x) with parameters broadcastable to x, in plain ops."""
    ctype = compute_dtype(x.dtype)
    t, _ = _pieces(x.to(ctype), beta.to(ctype), gamma.to(ctype), c)
    d = shifted_coefficients(beta.to(ctype))
    y = alpha.to(ctype) * t * _poly(t, d)
    return in_dtype(y, x.dtype)


def differentiable_forward(x, alpha, beta, gamma, c):
    """s(x) in plain out-of-place ops (params broadcastable to x) whose autograd keeps the convention.

    ``where`` (not ``clamp``, whose gradient is 1 at its bounds) picks the flat
    pieces, so autograd gives s' = 0 at both kinks; NaN stays NaN. ``c`` may be a
    symbolic float (``torch.compile``).
    """
    ctype = compute_dtype(x.dtype)
    b = beta.to(ctype)
    t_raw = x.to(ctype) / gamma.to(ctype)
    t = torch.where(t_raw <= -b, -b, t_raw)
    if c != math.inf:
        t = torch.where(t_raw >= c - b, c - b, t)
    return (alpha.to(ctype) * t * _poly(t, shifted_coefficients(b))).to(x.dtype)


class _CompiledSPOCU(torch.autograd.Function):
    """What ``torch.compile`` traces: every parameter (c too) a 0-d or broadcast tensor input.

    Saves only x and the small parameter tensors (the compiled backward recomputes),
    and has no ``jvp`` (Dynamo cannot trace one). ``d`` holds d_1..d_8(beta) and ``q``
    :func:`first_order_constants`, computed outside, so that nothing inside reads
    module-level floats (which ``dynamic=True`` turns into graph inputs that an
    autograd.Function cannot lift) and the per-element backward only loads them; the
    parameter gradients returned are the total ones, so ``d`` and ``q`` get none.
    """

    # forward(ctx, ...) rather than the setup_context form: Dynamo before torch 2.5 binds a
    # Function's forward with ctx first and cannot trace the other form (torch.func never sees
    # this Function: it serves torch.compile and export only)
    @staticmethod
    def forward(ctx, x, alpha, beta, gamma, d, q, c):
        ctx.save_for_backward(x, alpha, beta, gamma, d, q)
        ctype = compute_dtype(x.dtype)
        t = _where_pieces(x.to(ctype) / gamma, beta, c)
        return in_dtype(alpha * t * _poly(t, list(d.unbind(-1))), x.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma, d, q = ctx.saved_tensors
        ctype = compute_dtype(x.dtype)
        partials = first_order_partials(x.to(ctype), gamma, list(d.unbind(-1))[:-1], q)
        gout = grad_output.to(ctype)
        needs = ctx.needs_input_grad
        return (
            in_dtype(gout * partials[0], x.dtype) if needs[0] else None,
            *(
                _reduce(gout * p, q) if need else None
                for p, q, need in zip(partials[1:], (alpha, beta, gamma), needs[1:4])
            ),
            None,
            None,
            None,
        )


def _where_pieces(t_raw: torch.Tensor, beta: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """clamp(t_raw, -beta, c - beta) written with where (NaN stays NaN; no gradient at the bounds)."""
    t = torch.where(t_raw <= -beta, -beta, t_raw)
    return torch.where(t_raw >= c - beta, c - beta, t)


def traced_forward(x, alpha, beta, gamma, c):
    """SPOCU as ``torch.compile`` traces it: tensors (broadcastable to x) in, saves only x (and parameters).

    ``c`` may be a float or a symbolic float; it becomes a 0-d tensor here.
    """
    ctype = compute_dtype(x.dtype)
    alpha, beta, gamma = (p.to(ctype) for p in (alpha, beta, gamma))
    d = torch.stack(shifted_coefficients(beta), dim=-1)
    c = torch.as_tensor(c, dtype=ctype, device=x.device)
    return _CompiledSPOCU.apply(x, alpha, beta, gamma, d, first_order_constants(alpha, beta, gamma, c), c)


def _save_input_and_parameters(ctx, inputs, output) -> None:
    """What the learnable Functions keep: x and the (small) parameters, for backward and forward mode; c."""
    x, alpha, beta, gamma, c = inputs
    ctx.save_for_backward(x, alpha, beta, gamma)
    ctx.save_for_forward(x, alpha, beta, gamma)
    ctx.c = c


class _LearnableSPOCU(torch.autograd.Function):
    """Plain-ops learnable SPOCU; parameters already shaped to broadcast against x.

    Differentiable to any order, with forward mode and a generated vmap rule.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x, alpha, beta, gamma, c):
        return _plain_forward(x, alpha, beta, gamma, c)

    setup_context = staticmethod(_save_input_and_parameters)

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        return (*_plain_backward(grad_output, x, alpha, beta, gamma, ctx.c, ctx.needs_input_grad), None)

    @staticmethod
    def jvp(ctx, *tangents):
        x, alpha, beta, gamma = ctx.saved_tensors
        return _jvp(x, alpha, beta, gamma, ctx.c, tangents[:4])


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


def _fused_backward_math(grad, x, alpha, beta, gamma, constants, out):
    # the formulas of first_order_partials; constants: first_order_constants (computed outside)
    gout = grad.to(alpha.dtype)
    d_x, d_alpha, d_beta, d_gamma = first_order_partials(
        x.to(alpha.dtype), gamma, shifted_coefficients(beta)[:-1], constants
    )
    out.copy_(gout * d_x)
    return tuple((gout * p).sum((0, 2), keepdim=True) for p in (d_alpha, d_beta, d_gamma))


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
    return (
        t.view(_acb_dims(t, channels))
        if t.is_contiguous()
        else t.permute(_channels_last_order(t)).view(-1, channels, 1)
    )


def _acb_dims(t: torch.Tensor, channels: int) -> tuple[int, int, int]:
    """The sizes (A, C, B) of :func:`_as_acb`'s view of ``t``, without making it (also with no elements).

    >>> _acb_dims(torch.zeros(2, 3, 4, 5), 3), _acb_dims(torch.zeros(0, 3, 4), 3)
    ((2, 3, 20), (0, 3, 4))
    """
    if channels == 1:
        return 1, 1, t.numel()
    if t.is_contiguous():
        return t.shape[0], channels, math.prod(t.shape[2:])
    return t.numel() // channels, channels, 1


def _tag(x3: torch.Tensor, dtype: torch.dtype) -> str:
    # Dynamo specialises sizes of 1, so each pattern of unit dims is its own kernel
    ones = "".join("1" if n == 1 else "n" for n in x3.shape)
    return f"{str(dtype).removeprefix('torch.')}_{x3.device.type}_{ones}"


def _example(x3: torch.Tensor, *others: torch.Tensor, backward: bool = False) -> Callable[[], tuple]:
    """Large blank arguments with x3's unit-dim pattern (Inductor sizes its parallelism on them)."""

    def make() -> tuple:
        shape = tuple(1 if n == 1 else big for n, big in zip(x3.shape, (64, 16, 1024)))
        pshape = (1, shape[1], 1)
        blank = lambda dtype, s: torch.zeros(s, dtype=dtype, device=x3.device)  # noqa: E731
        ctype = compute_dtype(x3.dtype)
        params = [blank(ctype, pshape) + 0.5 for _ in range(3)]
        c = torch.tensor(math.inf, dtype=ctype, device=x3.device)
        params.append(first_order_constants(*params, c) if backward else c)
        tensors = [blank(t.dtype, shape) for t in others]
        return (*tensors, *params, blank(x3.dtype, shape))

    return make


def _fused_params(x, alpha, beta, gamma, c):
    channels = alpha.numel()
    ctype = compute_dtype(x.dtype)
    shaped = [p.detach().reshape(1, channels, 1).to(ctype) for p in (alpha, beta, gamma)]
    return channels, shaped, torch.tensor(c, dtype=ctype, device=x.device)


class _InductorKernels:
    """The learnable kernels compiled by Inductor (any device); None where they cannot run."""

    @staticmethod
    def forward(x, alpha, beta, gamma, c):
        channels, params, c_t = _fused_params(x, alpha, beta, gamma, c)
        src = _layout_for(x.detach(), channels)
        out = torch.empty_like(src)
        x3 = _as_acb(src, channels)
        args = (x3, *params, c_t, _as_acb(out, channels))
        if _inductor.run("learnable_forward", _tag(x3, x.dtype), args, _example(x3, x3)) is _inductor.FAILED:
            return None
        return out

    @staticmethod
    def backward(grad_output, x, alpha, beta, gamma, c):
        channels, params, c_t = _fused_params(x, alpha, beta, gamma, c)
        src = _layout_for(x, channels)
        grad = dense_like(grad_output, src)
        out = torch.empty_like(src)
        x3 = _as_acb(src, channels)
        args = (_as_acb(grad, channels), x3, *params, first_order_constants(*params, c_t), _as_acb(out, channels))
        sums = _inductor.run("learnable_backward", _tag(x3, x.dtype), args, _example(x3, x3, x3, backward=True))
        return None if sums is _inductor.FAILED else (out, sums)


class _CppKernels:
    """The learnable kernels of the C++ library (:mod:`spocu.torch._cpp`, CPU); None where they cannot run.

    ``block``: the parameters as :func:`spocu.torch._cpp.param_block`, when the caller has it.
    """

    @staticmethod
    def forward(x, alpha, beta, gamma, c, block=None):
        channels = alpha.numel()
        src = _layout_for(x.detach(), channels)
        out = torch.empty_like(src)
        if _cpp.learnable_forward(_as_acb(src, channels), _as_acb(out, channels), alpha, beta, gamma, c, block):
            return out
        return None

    @staticmethod
    def backward(grad_output, x, alpha, beta, gamma, c, block=None):
        channels = alpha.numel()
        src = _layout_for(x, channels)
        common = grad_output.dtype == x.dtype and grad_output.is_contiguous() and src.is_contiguous()
        grad = grad_output if common else dense_like(grad_output.to(x.dtype), src)  # (same shape: autograd's)
        out = torch.empty_like(src)
        blocks = [_as_acb(t, channels) for t in (grad, src, out)]
        sums = _cpp.learnable_backward(*blocks, alpha, beta, gamma, c, _cap(x.dtype), block)
        return None if sums is None else (out, sums)


#: compute dtype -> _partial_cap of it
_CAPS: dict[torch.dtype, float] = {}


def _cap(dtype: torch.dtype) -> float:
    """:func:`_partial_cap` of ``dtype``'s compute dtype (cached: it is asked on every backward)."""
    cap = _CAPS.get(dtype)
    if cap is None:
        cap = _CAPS[dtype] = _partial_cap(compute_dtype(dtype))
    return cap


class _FusedLearnableSPOCU(torch.autograd.Function):
    """Learnable SPOCU with fused kernels (``kernels``: :class:`_InductorKernels` or :class:`_CppKernels`);
    alpha, beta, gamma have 1 or C (= x.shape[1]) elements.

    Eager mode only (the dispatcher never picks it under ``torch.func`` transforms); forward
    mode, double backward, batched (legacy-vmap) tensors and kernels that cannot run use the
    plain formulas.
    """

    @staticmethod
    def forward(x, alpha, beta, gamma, c, kernels):
        out = kernels.forward(x, alpha, beta, gamma, c) if is_plain(x, alpha, beta, gamma) else None
        if out is None:
            return _plain_forward(x, *(_broadcast_shape(p, x) for p in (alpha, beta, gamma)), c)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output):
        _save_input_and_parameters(ctx, inputs[:5], output)
        ctx.kernels = inputs[5]

    @staticmethod
    def jvp(ctx, *tangents):
        x, alpha, beta, gamma = ctx.saved_tensors
        shaped = [_broadcast_shape(p, x) for p in (alpha, beta, gamma)]
        shaped_tangents = [None if t is None else _broadcast_shape(t, x) for t in tangents[1:4]]
        return _jvp(x, *shaped, ctx.c, (tangents[0], *shaped_tangents))

    @staticmethod
    def backward(ctx, grad_output):
        x, alpha, beta, gamma = ctx.saved_tensors
        needs = ctx.needs_input_grad
        params = (alpha, beta, gamma)
        plain = torch.is_grad_enabled() and any(t.requires_grad for t in (grad_output, x, *params))
        if not plain and is_plain(grad_output, x, *params):  # else double backward, or batched
            fused = ctx.kernels.backward(grad_output, x, *params, ctx.c)
            if fused is not None:
                out, sums = fused
                grads = [
                    total.reshape(p.shape).to(p.dtype) if need else None
                    for total, p, need in zip(sums, params, needs[1:4])
                ]
                return (out if needs[0] else None, *grads, None, None)
        grads = _plain_backward(grad_output, x, *(_broadcast_shape(p, x) for p in params), ctx.c, needs)
        return (grads[0], *(_unshape(g, p) for g, p in zip(grads[1:], params)), None, None)


#: beta = LEARNABLE_MARGIN + _SPAN * sigmoid(raw), as spocu.core.learnable_unit computes it
_SPAN = 1.0 - 2.0 * LEARNABLE_MARGIN


def _mapped_beta(sigmoid_beta: torch.Tensor) -> torch.Tensor:
    """spocu.core.learnable_unit from the sigmoid of the raw weight (the same ops, in the same order)."""
    return LEARNABLE_MARGIN + _SPAN * sigmoid_beta


class _RawLearnableSPOCU(torch.autograd.Function):
    """A learnable :class:`spocu.torch.SPOCU` module's eager CPU call from its raw weights, over the
    C++ kernels: :mod:`spocu.core`'s map (alpha, gamma = softplus(raw) + floor, beta = margin +
    span * sigmoid(raw)) and SPOCU in one node instead of eight (the map's seven, then
    :class:`_FusedLearnableSPOCU`), which saves about half of a small call's Python time.

    The same bits as that composition: the map is computed with the same ops, and its gradients
    with the ATen ops autograd records for it (``softplus_backward``; the product with the span,
    then ``sigmoid_backward`` with the saved sigmoid), as the C++ node ``spocu_cpu.learnable_raw``
    does. Double backward and batched gradients recompute the map with autograd and take the plain
    formulas. The caller (``_dispatch.module_call``) checks that the C++ kernels serve the call:
    eager, CPU, no transform or tracer, raw storage, one parameter count. Saves x and the raw weights.
    """

    @staticmethod
    def forward(ctx, x, raw_alpha, raw_beta, raw_gamma, c):
        sigmoid_beta = torch.sigmoid(raw_beta)
        mapped = (
            learnable_positive(raw_alpha, torch),
            _mapped_beta(sigmoid_beta),
            learnable_positive(raw_gamma, torch),
        )
        block = _cpp.param_block(*mapped)
        ctx.save_for_backward(x, raw_alpha, raw_beta, raw_gamma)
        ctx.mapped, ctx.sigmoid_beta, ctx.block, ctx.c = mapped, sigmoid_beta, block, c
        src = _layout_for(x, block.numel() // 3)
        out = torch.empty_like(src)
        _cpp.run_learnable_forward(src, out, _acb_dims(src, block.numel() // 3), block, c)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        x, raw_alpha, raw_beta, raw_gamma = ctx.saved_tensors
        raws = (raw_alpha, raw_beta, raw_gamma)
        needs = ctx.needs_input_grad
        sigmoid_beta = ctx.sigmoid_beta
        recorded = torch.is_grad_enabled() and any(t.requires_grad for t in (grad_output, x, *raws))
        if not recorded and is_plain(grad_output) and has_raw_storage(grad_output):
            channels = ctx.block.numel() // 3
            src = _layout_for(x, channels)
            common = grad_output.dtype == x.dtype and grad_output.is_contiguous() and src.is_contiguous()
            grad = grad_output if common else dense_like(grad_output.to(x.dtype), src)  # (same shape: autograd's)
            out = torch.empty_like(src)
            sums = _cpp.run_learnable_backward(
                grad, src, out, _acb_dims(src, channels), ctx.block, ctx.c, _cap(x.dtype)
            )
            grad_x = out if needs[0] else None
            a, b, g = ctx.mapped
            if a.dtype == b.dtype == g.dtype and a.dim() == b.dim() == g.dim() == 1:  # (the module's: one conversion)
                grads = sums.to(a.dtype).unbind(0)
            else:
                grads = [total.reshape(p.shape).to(p.dtype) for total, p in zip(sums, ctx.mapped)]
        else:  # double backward or a batched gradient: the map again, with autograd, and the plain formulas
            sigmoid_beta = torch.sigmoid(raw_beta)
            mapped = (
                learnable_positive(raw_alpha, torch),
                _mapped_beta(sigmoid_beta),
                learnable_positive(raw_gamma, torch),
            )
            plain = _plain_backward(grad_output, x, *(_broadcast_shape(p, x) for p in mapped), ctx.c, needs)
            grad_x, grads = plain[0], [_unshape(g, p) for g, p in zip(plain[1:], mapped)]
        grad_alpha, grad_beta, grad_gamma = (g if need else None for g, need in zip(grads, needs[1:4]))
        return (
            grad_x,
            None if grad_alpha is None else torch.ops.aten.softplus_backward(grad_alpha, raw_alpha, 1, 20),
            None if grad_beta is None else torch.ops.aten.sigmoid_backward(grad_beta * _SPAN, sigmoid_beta),
            None if grad_gamma is None else torch.ops.aten.softplus_backward(grad_gamma, raw_gamma, 1, 20),
            None,
        )


def apply_learnable_raw(x, raw_alpha, raw_beta, raw_gamma, c: float) -> torch.Tensor:
    """s(x) of a learnable module from its raw weights in one Python node (see :class:`_RawLearnableSPOCU`;
    only where ``_dispatch.module_call`` has checked that the C++ kernels serve the call)."""
    return _apply_raw(x, raw_alpha, raw_beta, raw_gamma, c)


def _unshape(grad, param):
    return None if grad is None else grad.reshape(param.shape)


def _broadcast_shape(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scalar/one-element parameters broadcast everywhere; C-element ones along dim 1."""
    if torch.jit.is_tracing():
        with warnings.catch_warnings():
            # torch.jit.trace records sizes as tensors and warns that comparing them fixes them: the
            # parameter count and the channel dim are fixed by the module, so that is what is wanted
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return _broadcast_shape_of(param, x, int(param.numel()), int(x.shape[1]) if x.dim() >= 2 else None)
    return _broadcast_shape_of(param, x, param.numel(), x.shape[1] if x.dim() >= 2 else None)


def _broadcast_shape_of(param: torch.Tensor, x: torch.Tensor, count: int, channels: int | None) -> torch.Tensor:
    if count == 1:
        return param.reshape([1] * max(x.dim(), 1)) if x.dim() else param.reshape(())
    if channels != count:
        raise ValueError(
            f"SPOCU has {count} parameters per channel but the input's channel dim (dim 1) is "
            f"{'none (input has fewer than 2 dims)' if channels is None else channels}"
        )
    return param.reshape([1, count] + [1] * (x.dim() - 2))


def broadcast_parameters(x: torch.Tensor, *params: torch.Tensor) -> list[torch.Tensor]:
    """The parameters shaped to broadcast against x (one element: everywhere; C: along dim 1)."""
    return [_broadcast_shape(p, x) for p in params]


def spocu_tensor_params(
    x: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    c: float,
    path: str = "eager",
    traced: bool = False,
    node: Callable | None = None,
):
    """SPOCU with tensor parameters (scalars or one per channel along dim 1).

    ``path`` (eager mode only; see :func:`spocu.torch._dispatch.resolve_learnable`):
    ``"cpp"`` runs the C++ kernels, ``"inductor"`` the compiled ones, ``"eager"`` the
    plain ops; ``traced=True`` gives the plain differentiable ops ``torch.compile``
    traces (Dynamo cannot trace the Functions' ``jvp``, and AOTAutograd
    differentiates the graph itself).
    """
    a, b, g = (_broadcast_shape(p, x) for p in (alpha, beta, gamma))  # also checks the channel count
    if traced:
        return traced_forward(x, a, b, g, c)
    # where Function.apply's wrapper would only bind the arguments (~90 us), skip it (see plain_apply)
    lean = not functorch_active() and has_raw_storage(x, alpha, beta, gamma)
    if path in ("cpp", "inductor"):  # (not under jit.trace, where the counts are traced values)
        alpha, beta, gamma = _common_count(alpha, beta, gamma)
    if path == "cpp" and all(t.is_cpu for t in (alpha, beta, gamma)):
        if lean and node is not None:  # the C++ node the router chose (it has no forward mode)
            return node(x, alpha, beta, gamma, c)
        return _lean_apply(_FusedLearnableSPOCU, lean)(x, alpha, beta, gamma, c, _CppKernels)
    if path == "inductor":
        return _lean_apply(_FusedLearnableSPOCU, lean)(x, alpha, beta, gamma, c, _InductorKernels)
    return _lean_apply(_LearnableSPOCU, lean)(x, a, b, g, c)


def _common_count(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The parameters with one count: one-element ones expanded to the per-channel count when others
    have one per channel (the fused kernels read C values of each; autograd sums the expanded grads).

    >>> [tuple(p.shape) for p in _common_count(torch.ones(3), torch.tensor(0.5), torch.ones(1))]
    [(3,), (3,), (3,)]
    """
    counts = (alpha.numel(), beta.numel(), gamma.numel())
    if counts[0] == counts[1] == counts[2]:
        return alpha, beta, gamma
    channels = max(counts)
    return tuple(p.reshape(1).expand(channels) if p.numel() == 1 else p for p in (alpha, beta, gamma))


def _lean_apply(function: type[torch.autograd.Function], lean: bool):
    return plain_apply(function) if lean else function.apply


#: :func:`plain_apply` of :class:`_RawLearnableSPOCU` (its callers run no torch.func transform)
_apply_raw = plain_apply(_RawLearnableSPOCU)
