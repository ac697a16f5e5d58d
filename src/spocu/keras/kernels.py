r"""The Keras 3 kernels of SPOCU, on every backend: one module that both
:mod:`spocu.keras.functional` and :mod:`spocu.keras.layers` import.

.. math::

    s(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

With fixed parameters SPOCU is ``P(clip(x, x_lo, x_hi))`` (a degree-8 Horner
polynomial, coefficients from :class:`spocu.core.SPOCUParams`) with a custom
gradient that keeps only the input and recomputes
``s'(x) = P'(clip(x, x_lo, min(x_hi, cap)))``, masked to 0 for ``x <= x_lo`` and
``x >= x_hi`` (also ``x = +inf`` when ``c = inf``: the core's convention). The
kernel is chosen per backend:

* ``torch``: :func:`spocu.torch.spocu` (its ``autograd.Function`` saves only ``x``);
* ``jax``: :func:`spocu.jax.functional.spocu_fixed` (``custom_jvp`` + checkpoint:
  only ``x`` is a residual; XLA fuses the polynomial);
* ``tensorflow``: ``tf.custom_gradient`` around a forward and a backward that are
  each one XLA kernel (``tf.function(jit_compile=True)``, see :data:`TF_JIT_COMPILE`),
  while the rest of the model keeps TensorFlow's own kernels;
* any other backend: ``keras.ops`` under ``keras.ops.custom_gradient``.

With tensor parameters (learnable, or passed as tensors) the partial derivatives
are written out too (:func:`spocu_tensor_params`), with the same convention.

float16/bfloat16 are computed in float32 inside and returned in their own dtype,
so the mixed-precision policies ``mixed_float16``/``mixed_bfloat16`` work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import keras
import numpy as np
from keras import ops

from spocu.core import DEFAULT_C, SHIFTED_COEFFICIENT_POLYNOMIALS, SPOCUParams, learnable_partial_cap

__all__ = ["as_float_input", "spocu_fixed", "spocu_tensor_params"]

_HALF = ("float16", "bfloat16")


def _const(value: float, like: Any) -> Any:
    # a tensor of like's dtype: the torch backend of Keras 3.15 rounds Python floats to float32 in
    # mixed ops (and ops.maximum/minimum/clip), which would spoil float64
    return ops.convert_to_tensor(value, dtype=keras.backend.standardize_dtype(like.dtype))


def _horner(x: Any, coefficients: tuple[float, ...], *, shift: bool) -> Any:
    """``sum_k c_k x^k`` (``shift=False``) or ``x * sum_k c_k x^k`` (``shift=True``), lowest power first."""
    acc = ops.multiply(x, _const(coefficients[-1], x))
    for a_k in coefficients[-2:0:-1]:
        acc = ops.multiply(ops.add(acc, _const(a_k, x)), x)
    acc = ops.add(acc, _const(coefficients[0], x))
    return ops.multiply(acc, x) if shift else acc


def _clip(x: Any, lo: float, hi: float) -> Any:
    # selects, not ops.clip/maximum: those round the bounds to float32 on the torch backend;
    # a comparison with NaN is false, so NaN passes through
    lo_t = _const(lo, x)
    x = ops.where(ops.less(x, lo_t), lo_t, x)
    if math.isfinite(hi):
        hi_t = _const(hi, x)
        x = ops.where(ops.greater(x, hi_t), hi_t, x)
    return x


def _forward(x: Any, params: SPOCUParams) -> Any:
    return _horner(_clip(x, params.lower_bound, params.upper_bound), params.x_coefficients, shift=True)


def _derivative(x: Any, params: SPOCUParams) -> Any:
    """s'(x): P' at x clipped to [x_lo, cap] (a finite x never overflows), 0 outside the active piece."""
    cap = params.derivative_safe_bound(float(np.finfo(keras.backend.standardize_dtype(x.dtype)).max))
    ds = _horner(_clip(x, params.lower_bound, cap), params.x_derivative_coefficients, shift=False)
    # x >= x_hi also for c = inf (x_hi = inf): s'(+inf) = 0, as in the float64 reference
    outside = ops.logical_or(
        ops.less_equal(x, _const(params.lower_bound, x)), ops.greater_equal(x, _const(params.upper_bound, x))
    )
    return ops.where(outside, ops.zeros((), dtype=x.dtype), ds)


def _forward_cast(x: Any, params: SPOCUParams) -> Any:
    """s(x) in x's dtype, computed in float32 for half types."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    work = "float32" if dtype in _HALF else dtype
    return ops.cast(_forward(ops.cast(x, work), params), dtype)


def _backward_cast(x: Any, upstream: Any, params: SPOCUParams) -> Any:
    """upstream * s'(x) in x's dtype, computed in float32 for half types."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    work = "float32" if dtype in _HALF else dtype
    return ops.cast(ops.multiply(ops.cast(upstream, work), _derivative(ops.cast(x, work), params)), dtype)


def _generic(x: Any, params: SPOCUParams) -> Any:
    """keras.ops route: forward and a custom gradient that closes over ``x`` only."""

    @ops.custom_gradient
    def _spocu(x: Any) -> tuple[Any, Callable[..., Any]]:
        def grad(*args: Any, upstream: Any = None) -> Any:
            if upstream is None:  # TensorFlow and JAX pass upstream positionally, torch by keyword
                (upstream,) = args
            return _backward_cast(x, upstream, params)

        return _forward_cast(x, params), grad

    return _spocu(x)


#: TensorFlow backend: compile SPOCU's forward and backward each into one XLA
#: kernel (``tf.function(jit_compile=True)``), inside graphs that are otherwise
#: not XLA-compiled. Without it the 16 elementwise ops of the polynomial each
#: make a pass over memory. Set to False where XLA is unavailable.
TF_JIT_COMPILE = True


@lru_cache(maxsize=64)
def _tf_kernels(params: SPOCUParams) -> tuple[Any, Any]:
    import tensorflow as tf

    def spocu_forward(x: Any) -> Any:
        return _forward_cast(x, params)

    def spocu_backward(x: Any, upstream: Any) -> Any:
        return _backward_cast(x, upstream, params)

    def compile_(fn: Callable[..., Any]) -> Any:
        return tf.function(fn, jit_compile=True, reduce_retracing=True)

    return compile_(spocu_forward), compile_(spocu_backward)


def _tensorflow_route(x: Any, params: SPOCUParams) -> Any:
    if not TF_JIT_COMPILE:
        return _generic(x, params)
    import tensorflow as tf

    forward, backward = _tf_kernels(params)

    @tf.custom_gradient
    def _spocu(x: Any) -> tuple[Any, Callable[[Any], Any]]:
        return forward(x), lambda upstream: backward(x, upstream)

    return _spocu(x)


def _torch_route(x: Any, params: SPOCUParams) -> Any:
    from spocu.torch import spocu as torch_spocu

    return torch_spocu(x, params.alpha, params.beta, params.gamma, params.c)


def _jax_route(x: Any, params: SPOCUParams) -> Any:
    from spocu.jax.functional import spocu_fixed as jax_spocu

    return jax_spocu(x, params)


_ROUTES = {"torch": _torch_route, "jax": _jax_route, "tensorflow": _tensorflow_route}


def spocu_fixed(x: Any, params: SPOCUParams) -> Any:
    """SPOCU of a floating backend tensor with validated :class:`~spocu.core.SPOCUParams`
    (the kernel behind :func:`spocu` and :class:`spocu.keras.SPOCU`)."""
    return _ROUTES.get(keras.backend.backend(), _generic)(x, params)


def _shifted_coefficients(beta: Any) -> list[Any]:
    """d_1..d_8 of r(beta + t) - r(beta), d_k = r^(k)(beta)/k!, as tensors shaped like beta (Horner in beta)."""
    out = []
    for terms in SHIFTED_COEFFICIENT_POLYNOMIALS:  # d_k = sum_p terms[p] beta^p
        d_k = ops.multiply(ops.ones_like(beta), _const(terms[-1], beta))
        for term in terms[-2::-1]:
            d_k = ops.add(ops.multiply(d_k, beta), _const(term, beta))
        out.append(d_k)
    return out


def _shifted_horner(t: Any, d: list[Any], *, derivative: bool = False) -> Any:
    """``sum_k d_k t^k`` (k = 1..8), or with ``derivative`` ``sum_{k>=2} k d_k t^(k-1)`` = r'(b + t) - r'(b)."""
    if derivative:
        acc = ops.multiply(ops.multiply(_const(8.0, t), d[7]), t)
        for k in range(7, 2, -1):
            acc = ops.multiply(ops.add(acc, ops.multiply(_const(float(k), t), d[k - 1])), t)
        return ops.multiply(ops.add(acc, ops.multiply(_const(2.0, t), d[1])), t)
    acc = ops.multiply(d[7], t)
    for d_k in d[6:0:-1]:
        acc = ops.multiply(ops.add(acc, d_k), t)
    return ops.multiply(ops.add(acc, d[0]), t)


def _tensor_pieces(x: Any, b: Any, g: Any, c: float) -> tuple[Any, Any, Any]:
    """t = clip(x/g, -b, c - b), the mask of the flat pieces (kinks and x = +-inf included), and t
    where SPOCU is active, 0 elsewhere (so that no discarded branch can overflow into a NaN)."""
    t_raw = ops.divide(x, g)
    upper = ops.subtract(_const(c, b), b)
    low = ops.less_equal(t_raw, ops.negative(b))
    # x = +inf is on the flat side (s'(+inf) = 0), also for c = inf; a finite x whose x / g
    # overflows is not (its partials saturate), as on every torch path and in the reference
    high = ops.equal(x, _const(math.inf, x)) if math.isinf(c) else ops.greater_equal(t_raw, upper)
    t = ops.where(low, ops.negative(b), ops.where(high, upper, t_raw))
    outside = ops.logical_or(low, high)
    return t, outside, ops.where(outside, ops.zeros((), dtype=t.dtype), t)


def _tail_partials(u: Any, t: Any, a: Any, g: Any, r_prime_b: Any) -> tuple[Any, Any, Any]:
    """ds/dx, ds/db, ds/dg at u = b + t >= u_cap: ``r'(u) = u^2 (u^4 (8u - 14) + 6)`` scaled from each
    partial's constant outwards (every later factor is >= 1 there), so an intermediate overflows only
    where the partial does (or, for a constant below 9e-16 in float32, beyond u = 3.4e7)."""
    u2 = ops.multiply(u, u)
    eight_u = ops.multiply(_const(8.0, u), u)
    r_prime_over_u2 = ops.add(
        ops.multiply(ops.multiply(u2, u2), ops.subtract(eight_u, _const(14.0, u))), _const(6.0, u)
    )
    k = ops.divide(a, g)
    return (
        ops.multiply(ops.multiply(k, u2), r_prime_over_u2),
        ops.subtract(ops.multiply(ops.multiply(a, u2), r_prime_over_u2), ops.multiply(a, r_prime_b)),
        ops.negative(ops.multiply(ops.multiply(k, ops.multiply(u2, t)), r_prime_over_u2)),
    )


def _saturate(v: Any) -> Any:
    # a derivative beyond the dtype's range saturates, so that a zero cotangent never makes 0 * inf = NaN
    big = float(np.finfo(keras.backend.standardize_dtype(v.dtype)).max)
    return ops.where(
        ops.greater(v, _const(big, v)), _const(big, v), ops.where(ops.less(v, _const(-big, v)), _const(-big, v), v)
    )


def _sum_to_shape(grad: Any, shape: Any) -> Any:
    """Undo broadcasting: sum ``grad`` over the axes that ``shape`` (a tuple or TensorFlow's TensorShape) broadcast along."""
    shape, grad_shape = tuple(shape), tuple(grad.shape)
    if grad_shape == shape:
        return grad
    lead = len(grad_shape) - len(shape)
    axes = list(range(lead)) + [lead + i for i, n in enumerate(shape) if n == 1 and grad_shape[lead + i] != 1]
    if axes:
        grad = ops.sum(grad, axis=tuple(axes))
    return ops.reshape(grad, shape)


def _tensor_params_generic(x: Any, a: Any, b: Any, g: Any, c: float) -> Any:
    """keras.ops route: the value and the written-out partial derivatives under ``ops.custom_gradient``."""

    @ops.custom_gradient
    def _spocu(x: Any, a: Any, b: Any, g: Any) -> tuple[Any, Callable[..., tuple[Any, ...]]]:
        t, _, _ = _tensor_pieces(x, b, g, c)
        y = ops.multiply(a, _shifted_horner(t, _shifted_coefficients(b)))

        def grad(*args: Any, upstream: Any = None) -> tuple[Any, ...]:
            if upstream is None:  # TensorFlow and JAX pass upstream positionally, torch by keyword
                (upstream,) = args
            t, outside, t_in = _tensor_pieces(x, b, g, c)
            d = _shifted_coefficients(b)
            zero = ops.zeros((), dtype=t.dtype)
            # beyond u_cap (c = inf or c > u_cap) the tail formulas; each side sees only its own range
            cap = learnable_partial_cap(float(np.finfo(keras.backend.standardize_dtype(t.dtype)).max))
            tail = ops.greater(ops.add(b, t_in), _const(cap, t))
            t_main = ops.where(tail, zero, t_in)
            r_prime_shift = _shifted_horner(t_main, d, derivative=True)  # r'(b + t) - r'(b), 0 outside
            hp = ops.where(outside, zero, ops.add(r_prime_shift, d[0]))  # h'(u): 0 on the flat pieces
            a_over_g = ops.divide(a, g)
            main = (
                ops.multiply(a_over_g, hp),  # ds/dx
                ops.multiply(a, ops.where(outside, ops.negative(d[0]), r_prime_shift)),  # ds/db = a (h'(u) - r'(b))
                ops.negative(ops.multiply(ops.multiply(a_over_g, hp), t_main)),  # ds/dg = -(a/g) h'(u) t
            )
            t_tail = ops.where(tail, t_in, ops.ones((), dtype=t.dtype))
            tails = _tail_partials(ops.add(b, t_tail), t_tail, a, g, d[0])
            d_x, d_b, d_g = (ops.where(tail, v_tail, v_main) for v_tail, v_main in zip(tails, main))
            partials = (d_x, _shifted_horner(t, d), d_b, d_g)  # ds/da = s/a
            return tuple(
                _sum_to_shape(ops.multiply(upstream, _saturate(p)), v.shape) for p, v in zip(partials, (x, a, b, g))
            )

        return y, grad

    return _spocu(x, a, b, g)


def spocu_tensor_params(x: Any, alpha: Any, beta: Any, gamma: Any, c: float = DEFAULT_C) -> Any:
    r"""SPOCU with tensor-valued (differentiable) alpha, beta, gamma (floating ``x``).

    ``s = alpha * sum_k d_k(beta) t^k`` with ``t = clip(x / gamma, -beta, c - beta)``
    (the shifted form has no cancellation near x = 0). The derivatives are the
    core's formulas (:func:`spocu.core.reference_spocu_param_grads`): exactly 0 in
    x on the flat pieces, at the kinks and at x = +-inf, never NaN for a non-NaN
    input. Parameters broadcast against ``x``; their values are not validated
    (keep ``alpha, gamma > 0``, ``0 < beta < 1``). Half inputs are computed in
    float32. On the JAX backend this is :func:`spocu.jax.spocu`'s array path.
    """
    dtype = keras.backend.standardize_dtype(x.dtype)
    work = "float32" if dtype in _HALF else dtype
    x = ops.cast(x, work)
    a, b, g = (ops.cast(p, work) for p in (alpha, beta, gamma))
    if keras.backend.backend() == "jax":
        from spocu.jax.functional import _spocu_array_params  # JAX is installed whenever it is Keras's backend

        return ops.cast(_spocu_array_params(x, a, b, g, c), dtype)
    return ops.cast(_tensor_params_generic(x, a, b, g, c), dtype)


def as_float_input(x: Any) -> Any:
    """``x`` as a backend tensor; integer and bool inputs promoted to ``keras.config.floatx()``
    (as the ``keras.activations`` functions do), complex refused."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype.startswith("complex"):
        raise TypeError(f"spocu is defined for real inputs, got a {dtype} tensor")
    if not keras.backend.is_float_dtype(dtype):
        x = ops.cast(x, keras.config.floatx())
    return x
