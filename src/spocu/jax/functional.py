r"""Functional SPOCU for JAX.

With fixed (Python float) parameters SPOCU is computed as the core prescribes,
``s(x) = P(clip(x, x_lo, x_hi))`` with ``P(x) = sum_k e_k x^k`` (Horner,
coefficients from :attr:`spocu.core.SPOCUParams.x_coefficients`), under a
:func:`jax.custom_jvp` whose rule pins the derivative convention of the core:

* ``s'(x) = P'(x)`` on the active piece ``x_lo < x < x_hi``, ``0`` for
  ``x <= x_lo`` and ``x >= x_hi`` (the kink at ``u = c``);
* ``P'`` is evaluated at ``clip(x, x_lo, min(x_hi, cap))`` (the double-``where``
  idiom of :func:`jax.nn.elu`), so the branch a ``where`` discards can never
  overflow and no finite input yields a NaN gradient; NaN in gives NaN out.

The tangent is computed inside :func:`jax.checkpoint`, so reverse mode saves
only the input ``x`` as residual (the same memory as ReLU) and recomputes
``s'(x)`` in the backward pass; forward mode (``jax.jvp``, ``jax.hessian``)
works as well. float16/bfloat16 inputs are computed in float32 and returned in
their own dtype.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SPOCUParams,
    cached_kernel_params,
    learnable_partial_cap,
    shifted_coefficients,
)

__all__ = ["spocu", "spocu_fixed"]

_HALF = (jnp.float16, jnp.bfloat16)


def _horner(x: jax.Array, coefficients: tuple[float, ...], *, shift: bool) -> jax.Array:
    """``sum_k c_k x^k`` (``shift=False``) or ``x * sum_k c_k x^k`` (``shift=True``), lowest power first."""
    acc = x * coefficients[-1]
    for a_k in coefficients[-2:0:-1]:
        acc = (acc + a_k) * x
    acc = acc + coefficients[0]
    return acc * x if shift else acc


def _forward(x: jax.Array, params: SPOCUParams) -> jax.Array:
    hi = params.upper_bound
    xc = jnp.clip(x, params.lower_bound, hi if math.isfinite(hi) else None)
    return _horner(xc, params.x_coefficients, shift=True)


def _derivative(x: jax.Array, params: SPOCUParams) -> jax.Array:
    """s'(x): P' at the clipped x, 0 outside the active piece (NaN stays NaN)."""
    cap = params.derivative_safe_bound(float(jnp.finfo(x.dtype).max))
    ds = _horner(jnp.clip(x, params.lower_bound, cap), params.x_derivative_coefficients, shift=False)
    # x >= upper_bound also for c = inf: s'(+inf) = 0 there too, as in the float64 reference
    outside = (x <= params.lower_bound) | (x >= params.upper_bound)
    return jnp.where(outside, jnp.zeros((), x.dtype), ds)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _spocu_core(x: jax.Array, params: SPOCUParams) -> jax.Array:
    return _forward(x, params)


@partial(jax.checkpoint, static_argnums=(2,))
def _tangent(x: jax.Array, x_dot: jax.Array, params: SPOCUParams) -> jax.Array:
    # checkpoint: reverse mode keeps only x and recomputes s'(x) in the backward pass
    return x_dot * _derivative(x, params)


@_spocu_core.defjvp
def _spocu_core_jvp(
    params: SPOCUParams, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (x_dot,) = primals, tangents
    return _spocu_core(x, params), _tangent(x, x_dot, params)


@partial(jax.jit, static_argnums=(1,))
def spocu_fixed(x: jax.Array, params: SPOCUParams) -> jax.Array:
    """SPOCU of a floating array with validated :class:`~spocu.core.SPOCUParams`.

    The kernel behind :func:`spocu` (and the Keras JAX backend); half types are
    computed in float32.

    Examples:
        >>> from spocu.core import SPOCUParams
        >>> import jax.numpy as jnp
        >>> [round(v, 4) for v in spocu_fixed(jnp.array([0.0, 5.0]), SPOCUParams()).tolist()]
        [0.0, -4.1466]
    """
    if x.dtype in _HALF:
        return _spocu_core(x.astype(jnp.float32), params).astype(x.dtype)
    return _spocu_core(x, params)


def _shifted_horner(t: jax.Array, d: tuple[jax.Array, ...], *, derivative: bool = False) -> jax.Array:
    """``sum_k d_k t^k`` (k = 1..8), or with ``derivative`` ``sum_{k>=2} k d_k t^(k-1)`` = r'(beta+t) - r'(beta)."""
    if derivative:
        acc = 8.0 * d[7] * t
        for k in range(7, 2, -1):
            acc = (acc + k * d[k - 1]) * t
        return (acc + 2.0 * d[1]) * t
    acc = d[7] * t
    for d_k in d[6:0:-1]:
        acc = (acc + d_k) * t
    return (acc + d[0]) * t


def _array_pieces(x: jax.Array, b: jax.Array, g: jax.Array, c: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """t = clip(x/gamma, -beta, c - beta), the mask of the flat pieces (kinks and x = +-inf included)
    and t_in: t where SPOCU is active, 0 elsewhere (so no discarded branch can overflow)."""
    t_raw = x / g
    low = t_raw <= -b
    # x = +inf is on the flat side (s'(+inf) = 0), also for c = inf; a finite x whose x / g
    # overflows is not (its partials saturate), as on every torch path and in the reference
    high = (x == jnp.inf) if math.isinf(c) else (t_raw >= c - b)
    t = jnp.where(low, -b, jnp.where(high, c - b, t_raw))
    outside = low | high
    return t, outside, jnp.where(outside, jnp.zeros((), t.dtype), t)


def _outside_domain(a: jax.Array, b: jax.Array, g: jax.Array) -> jax.Array:
    """Where the array parameters leave SPOCU's domain (alpha, gamma finite and > 0, 0 < beta < 1; NaN included)."""
    inside = (a > 0) & (a < jnp.inf) & (b > 0) & (b < 1) & (g > 0) & (g < jnp.inf)
    return ~inside


def _nan_where(bad: jax.Array, v: jax.Array) -> jax.Array:
    # the documented rule: out-of-domain parameters give NaN (values and derivatives), never plausible numbers
    return jnp.where(bad, jnp.full((), jnp.nan, v.dtype), v)


@partial(jax.custom_jvp, nondiff_argnums=(4,))
def _array_spocu(x: jax.Array, a: jax.Array, b: jax.Array, g: jax.Array, c: float) -> jax.Array:
    t, _, _ = _array_pieces(x, b, g, c)
    return _nan_where(_outside_domain(a, b, g), a * _shifted_horner(t, shifted_coefficients(b)))


def _tail_partials(
    u: jax.Array, t: jax.Array, a: jax.Array, g: jax.Array, r_prime_b: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """ds/dx, ds/db, ds/dg at u = b + t >= u_cap: ``r'(u) = u^2 (u^4 (8u - 14) + 6)`` scaled from each
    partial's constant outwards (every later factor is >= 1 there), so an intermediate overflows only
    where the partial does (or, for a constant below 9e-16 in float32, beyond u = 3.4e7)."""
    u2 = u * u
    r_prime_over_u2 = u2 * u2 * (8.0 * u - 14.0) + 6.0
    k = a / g
    return (k * u2) * r_prime_over_u2, (a * u2) * r_prime_over_u2 - a * r_prime_b, -((k * (u2 * t)) * r_prime_over_u2)


def _saturate(v: jax.Array) -> jax.Array:
    # a partial derivative beyond the dtype's range saturates, so that a zero cotangent never makes 0 * inf = NaN
    big = jnp.finfo(v.dtype).max
    return jnp.clip(v, -big, big)


@partial(_array_spocu.defjvp, symbolic_zeros=True)
def _array_spocu_jvp(
    c: float, primals: tuple[jax.Array, jax.Array, jax.Array, jax.Array], tangents: tuple[Any, Any, Any, Any]
) -> tuple[jax.Array, jax.Array]:
    """The partial derivatives written out (the core's reference formulas), not autodiff of the clip:

    ds/dx = (a/g) h'(u), ds/da = s/a, ds/db = a (h'(u) - r'(b)), ds/dg = -(a/g) h'(u) t,
    with h'(u) = r'(b + t) on the active piece and exactly 0 on the flat pieces, at the kinks and at +-inf.
    """
    x, a, b, g = primals
    t, outside, t_in = _array_pieces(x, b, g, c)
    d = shifted_coefficients(b)
    unit = _shifted_horner(t, d)  # s / a
    bad = _outside_domain(a, b, g)
    y = _nan_where(bad, a * unit)
    # beyond u_cap (c = inf or c > u_cap) the tail formulas; each side sees only its own range
    tail = b + t_in > learnable_partial_cap(float(jnp.finfo(y.dtype).max))
    t_main = jnp.where(tail, jnp.zeros((), y.dtype), t_in)
    r_prime_shift = _shifted_horner(t_main, d, derivative=True)  # r'(b + t) - r'(b), 0 outside
    hp = jnp.where(outside, jnp.zeros((), y.dtype), r_prime_shift + d[0])
    main = (a / g * hp, a * jnp.where(outside, -d[0], r_prime_shift), -(a / g) * hp * t_main)
    t_tail = jnp.where(tail, t_in, jnp.ones((), y.dtype))
    tails = _tail_partials(b + t_tail, t_tail, a, g, d[0])
    d_x, d_b, d_g = (jnp.where(tail, v_tail, v_main) for v_tail, v_main in zip(tails, main))
    partials = (_saturate(d_x), _saturate(unit), _saturate(d_b), _saturate(d_g))
    y_dot = jnp.zeros_like(y)
    for tangent, partial_derivative in zip(tangents, partials):
        if not isinstance(tangent, jax.custom_derivatives.SymbolicZero):  # an input that is not differentiated
            y_dot = y_dot + tangent * _nan_where(bad, partial_derivative)
    return y, y_dot


def _spocu_array_params(x: jax.Array, alpha: Any, beta: Any, gamma: Any, c: float) -> jax.Array:
    """SPOCU with array-valued (differentiable) alpha, beta, gamma.

    ``s = alpha * sum_k d_k(beta) t^k`` with ``t = clip(x/gamma, -beta, c - beta)``
    (the shifted form has no cancellation near x = 0), under a :func:`jax.custom_jvp`
    with the core's derivative convention (exact 0 at the kinks, on the flat pieces and
    at x = +-inf; no NaN for any non-NaN input).
    """
    out_dtype = x.dtype
    work = jnp.float32 if x.dtype in _HALF else x.dtype
    x = x.astype(work)
    a, b, g = (jnp.asarray(p).astype(work) for p in (alpha, beta, gamma))
    return _array_spocu(x, a, b, g, float(c)).astype(out_dtype)


def _as_float_array(x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"spocu is defined for real inputs, got a {x.dtype} array")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        # integer and bool inputs are promoted as jax.nn.sigmoid promotes them
        return x.astype(jnp.result_type(float))
    return x


def _is_tracer(value: Any) -> bool:
    return isinstance(value, jax.core.Tracer)


def _static_c(c: Any) -> float:
    """c as a Python float; a traced c (a jitted ``spocu`` given ``c=...``) is refused with the fix."""
    if _is_tracer(c):
        raise TypeError(
            "SPOCU parameter c must be a Python number, not a traced value (it fixes the piecewise structure); "
            "under jax.jit mark it static, jax.jit(spocu, static_argnames='c'), or bind it first, "
            "jax.jit(functools.partial(spocu, c=1.0))"
        )
    if isinstance(c, (jax.Array, np.ndarray)) and np.ndim(c) == 0:
        c = float(c)
    return SPOCUParams(c=c).c


def _check_concrete(name: str, value: Any) -> None:
    """Eager (non-traced) array parameters are validated like Python floats: a clear error, not NaN."""
    if _is_tracer(value) or not isinstance(value, (jax.Array, np.ndarray)):
        return
    v = np.asarray(value, dtype=np.float64)
    low, high = (0.0, 1.0) if name == "beta" else (0.0, math.inf)
    bad = ~((v > low) & (v < high))
    if bad.any():
        first = float(v[bad].flat[0]) if v.ndim else float(v)
        rule = "beta must lie in the open interval (0, 1)" if name == "beta" else f"{name} must be finite and > 0"
        raise ValueError(f"SPOCU parameter {name}={first!r} is out of range: {rule}")


def spocu(
    x: Any,
    alpha: Any = DEFAULT_ALPHA,
    beta: Any = DEFAULT_BETA,
    gamma: Any = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> jax.Array:
    r"""Apply SPOCU elementwise.

    .. math::

        s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta),\qquad
        s'(x) = \tfrac{\alpha}{\gamma}\,r'(x/\gamma + \beta)\ \text{on the active piece, else } 0.

    Works under :func:`jax.jit`, :func:`jax.grad` (any order), :func:`jax.vmap`
    and forward mode. Under ``jax.jit`` pass the Python-number parameters as
    static (``jax.jit(spocu, static_argnames=("alpha", "beta", "gamma", "c"))``
    or :func:`functools.partial`) to keep the fast fixed-parameter kernel; a
    traced alpha, beta or gamma takes the array path (differentiable, NaN
    outside the domain).

    Args:
        x: array of any shape; float16/bfloat16 are computed in float32 and
            returned in their own dtype; integer/bool inputs are promoted to the
            default float dtype (as :func:`jax.nn.sigmoid` does).
        alpha: the output scale α > 0; likewise ``beta`` (the shift, 0 < β < 1) and
            ``gamma`` (the input scale γ > 0). Python floats (validated; the fast path with the
            pinned derivative) or arrays that broadcast against ``x`` (e.g. shape
            ``(features,)`` for per-feature values), which makes them
            differentiable -- the way to learn them in a Flax/Equinox module
            (:mod:`spocu.flax`, :mod:`spocu.equinox` keep them in the domain by
            softplus/sigmoid). Concrete arrays are validated like floats. Traced
            values (inside ``jit``/``grad``/``vmap``) cannot raise, so the rule is:
            **wherever a traced alpha or gamma is not finite and > 0, or a traced
            beta is not in (0, 1), the output and all its derivatives are NaN**,
            never plausible numbers.
        beta: the shift β, as ``alpha``.
        gamma: the input scale γ, as ``alpha``.
        c: saturation point, ``1 <= c <= inf``: a Python number, static under
            :func:`jax.jit` (a traced ``c`` raises a ``TypeError`` naming
            ``static_argnames`` and :func:`functools.partial` as the fix).

    Returns:
        An array of ``x``'s shape and (floating) dtype.

    Raises:
        ValueError: for Python-number or concrete-array parameters outside the
            domain (the core's messages).
        TypeError: for a traced ``c``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> x = jnp.linspace(-4.0, 4.0, 5)
        >>> [round(v, 4) for v in jax.vmap(jax.grad(lambda v: spocu(v, c=1.0)))(x).tolist()]
        [0.0, 0.1917, 1.327, 0.0, 0.0]
        >>> spocu(1.0, alpha=-1.0)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter alpha=-1.0 is out of range: alpha must be finite and > 0
    """
    x = _as_float_array(x)
    c = _static_c(c)
    if any(isinstance(p, (jax.Array, np.ndarray)) for p in (alpha, beta, gamma)):
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            _check_concrete(name, value)
        return _spocu_array_params(x, alpha, beta, gamma, c)
    params = cached_kernel_params(alpha, beta, gamma, c)
    return spocu_fixed(x, params)
