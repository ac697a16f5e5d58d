r"""SPOCU as a Keras 3 activation function, on every Keras backend.

.. math::

    s(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

With fixed parameters SPOCU is ``P(clip(x, x_lo, x_hi))`` (a degree-8 Horner
polynomial, coefficients from :class:`spocu.core.SPOCUParams`) with a custom
gradient that keeps only the input and recomputes
``s'(x) = P'(clip(x, x_lo, min(x_hi, cap)))``, masked to 0 for ``x <= x_lo`` and
``x >= x_hi``. The kernel is chosen per backend:

* ``torch``: :func:`spocu.torch.spocu` (its ``autograd.Function`` saves only ``x``);
* ``jax``: :func:`spocu.jax.functional.spocu_fixed` (``custom_jvp`` + checkpoint:
  only ``x`` is a residual; XLA fuses the polynomial);
* ``tensorflow``: ``tf.custom_gradient`` around a forward and a backward that are
  each one XLA kernel (``tf.function(jit_compile=True)``, see :data:`TF_JIT_COMPILE`),
  while the rest of the model keeps TensorFlow's own kernels;
* any other backend: ``keras.ops`` under ``keras.ops.custom_gradient``.

float16/bfloat16 are computed in float32 inside and returned in their own dtype,
so the mixed-precision policies ``mixed_float16``/``mixed_bfloat16`` work.
"""

from __future__ import annotations

import math
import numbers
from functools import lru_cache
from typing import Any

import keras
import numpy as np
from keras import ops

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SHIFTED_COEFFICIENT_POLYNOMIALS,
    SPOCUParams,
    cached_params,
)

__all__ = ["spocu", "spocu_fixed", "spocu_tensor_params"]

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
    outside = ops.less_equal(x, _const(params.lower_bound, x))
    if math.isfinite(params.upper_bound):
        outside = ops.logical_or(outside, ops.greater_equal(x, _const(params.upper_bound, x)))
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
    def _spocu(x):
        def grad(*args, upstream=None):
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

    def spocu_forward(x):
        return _forward_cast(x, params)

    def spocu_backward(x, upstream):
        return _backward_cast(x, upstream, params)

    compile_ = lambda fn: tf.function(fn, jit_compile=True, reduce_retracing=True)  # noqa: E731
    return compile_(spocu_forward), compile_(spocu_backward)


def _tensorflow_route(x: Any, params: SPOCUParams) -> Any:
    if not TF_JIT_COMPILE:
        return _generic(x, params)
    import tensorflow as tf

    forward, backward = _tf_kernels(params)

    @tf.custom_gradient
    def _spocu(x):
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


def spocu_tensor_params(x: Any, alpha: Any, beta: Any, gamma: Any, c: float = DEFAULT_C) -> Any:
    r"""SPOCU with tensor-valued (differentiable) alpha, beta, gamma, by the backend's autodiff.

    ``s = alpha * t * sum_k d_k(beta) t^(k-1)`` with ``t = clip(x / gamma, -beta, c - beta)``
    (the shifted form has no cancellation near x = 0). Parameters broadcast
    against ``x``; their values are not validated (keep ``alpha, gamma > 0``,
    ``0 < beta < 1``). Half inputs are computed in float32.
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    work = "float32" if dtype in _HALF else dtype
    x = ops.cast(x, work)
    a, b, g = (ops.cast(p, work) for p in (alpha, beta, gamma))
    # where-clipping: the bounds are tensors here, and a comparison keeps NaN (and the gradient) on x
    t = ops.divide(x, g)
    t = ops.where(ops.less(t, ops.negative(b)), ops.negative(b), t)
    if math.isfinite(c):
        upper = ops.subtract(_const(c, b), b)
        t = ops.where(ops.greater(t, upper), upper, t)
    d = _shifted_coefficients(b)
    acc = ops.multiply(d[-1], t)
    for d_k in d[-2:0:-1]:
        acc = ops.multiply(ops.add(acc, d_k), t)
    y = ops.multiply(ops.multiply(a, t), ops.add(acc, d[0]))
    return ops.cast(y, dtype)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) or value is None


@keras.saving.register_keras_serializable(package="spocu")
def spocu(
    x: Any,
    alpha: Any = DEFAULT_ALPHA,
    beta: Any = DEFAULT_BETA,
    gamma: Any = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> Any:
    r"""SPOCU activation (scaled polynomial constant unit), elementwise.

    .. math::

        s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta),\qquad
        s'(x) = \tfrac{\alpha}{\gamma}\,r'(x/\gamma + \beta)\ \text{on the active piece, else } 0.

    Use it as ``keras.layers.Dense(8, activation=spocu)`` (the defaults; it is
    registered as ``"spocu>spocu"`` and round-trips through ``model.save``). For
    other parameters pass a layer, ``activation=spocu.keras.SPOCU(c=1.0)``, which
    saves its parameters in its config.

    Args:
        x: tensor of any shape. Integer inputs are cast to ``keras.config.floatx()``;
            float16/bfloat16 are computed in float32 and returned in their own dtype.
        alpha, beta, gamma: floats (validated) or tensors broadcasting against
            ``x`` (differentiable, see :func:`spocu_tensor_params`).
        c: saturation point, ``1 <= c <= inf``.

    Raises:
        ValueError: for parameters outside the domain (the messages of
            :class:`spocu.core.SPOCUParams`).

    Example:
        >>> import numpy as np, keras
        >>> from spocu.keras import spocu
        >>> [round(float(v), 4) for v in keras.ops.convert_to_numpy(spocu(np.array([-10.0, 0.0, 1.0])))]
        [-1.5838, 0.0, 1.262]
        >>> spocu(np.ones(2), beta=1.5)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter beta=1.5 is out of range: beta must lie in the open interval (0, 1)
    """
    if not all(_is_number(p) for p in (alpha, beta, gamma)):
        return spocu_tensor_params(x, alpha, beta, gamma, SPOCUParams(c=c).c)
    params = cached_params(alpha, beta, gamma, c)
    if keras.backend.is_keras_tensor(x):  # functional-API call: insert a (serializable) layer
        from spocu.keras.layers import SPOCU

        return SPOCU(**params.as_dict())(x)
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype.startswith("complex"):
        raise TypeError(f"spocu is defined for real inputs, got a {dtype} tensor")
    if not keras.backend.is_float_dtype(dtype):
        x = ops.cast(x, keras.config.floatx())
    return spocu_fixed(x, params)
