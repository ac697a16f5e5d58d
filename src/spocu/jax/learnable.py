r"""Learnable SPOCU for JAX modules (Flax NNX, Flax Linen, Equinox): the raw weights and the call.

The weights are unconstrained, ``raw_alpha``, ``raw_beta``, ``raw_gamma``, mapped into
SPOCU's domain by :func:`spocu.core.learnable_to_params` (the same code as the PyTorch
and Keras layers):

.. math::

    \alpha = \mathrm{softplus}(a) + 10^{-6},\quad \beta = 10^{-6} + (1 - 2\cdot 10^{-6})\,\sigma(b),\quad
    \gamma = \mathrm{softplus}(g) + 10^{-6},

so every optimizer step keeps SPOCU valid. One shared set has shape ``()``; per
channel (``num_parameters = C``) shape ``(C,)``, which broadcasts against the last
axis of the input (Flax's channels-last layout).

Examples:
    >>> import jax.numpy as jnp
    >>> from spocu.core import SPOCUParams
    >>> raws = initial_raw_weights(SPOCUParams(), 3, jnp.float32)
    >>> [r.shape for r in raws]
    [(3,), (3,), (3,)]
    >>> [round(float(v), 4) for v in learnable_spocu(jnp.array([[-5.0, 0.0, 5.0]]), *raws, float("inf"))[0]]
    [-1.5838, 0.0, -4.1466]
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spocu.core import SPOCUParams, learnable_to_params, params_to_learnable
from spocu.jax.functional import _as_float_array, _spocu_array_params

__all__ = ["initial_raw_weights", "learnable_spocu"]


def initial_raw_weights(params: SPOCUParams, num_parameters: int, dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The raw weights whose mapped values are ``params`` (alpha, beta, gamma): shape ``()`` or ``(num_parameters,)``.

    Raises:
        ValueError: an initial value outside the learnable range (the core's message), or one that the
            weight dtype cannot hold (e.g. gamma = 1e30 in float16), naming it.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"SPOCU param_dtype must be a floating dtype, got {dtype}")
    raws = params_to_learnable(params.alpha, params.beta, params.gamma, float(jnp.finfo(dtype).max))
    shape = () if num_parameters == 1 else (num_parameters,)
    # the read-back check in NumPy (float64), so that it never traces (Linen may build the weights inside jit)
    held = [np.asarray(raw, dtype=np.float64).astype(dtype) for raw in raws]
    held_alpha, held_beta, held_gamma = (h.astype(np.float64) for h in held)
    mapped = learnable_to_params(held_alpha, held_beta, held_gamma, np)
    for name, want, got in zip(("alpha", "beta", "gamma"), (params.alpha, params.beta, params.gamma), mapped):
        got = float(got)
        if not abs(got - want) <= 1e-3 * abs(want):
            raise ValueError(
                f"learnable SPOCU parameter {name}={want!r} cannot be represented by a {dtype} weight "
                f"(it reads back as {got:.6g}); choose a value closer to 1 or param_dtype=float32"
            )
    raw_alpha, raw_beta, raw_gamma = (jnp.full(shape, h, dtype) for h in held)
    return raw_alpha, raw_beta, raw_gamma


def learnable_spocu(x: Any, raw_alpha: Any, raw_beta: Any, raw_gamma: Any, c: float) -> jax.Array:
    """SPOCU of ``x`` with the parameters mapped from the raw weights (differentiable in all four).

    Raises:
        ValueError: per-channel weights whose length is not the size of ``x``'s last axis.
    """
    x = _as_float_array(x)
    size = jnp.shape(raw_alpha)
    if size and (x.ndim == 0 or x.shape[-1] != size[0]):
        raise ValueError(
            f"learnable SPOCU has num_parameters={size[0]} (one per channel on the last axis), but the input has "
            f"shape {tuple(x.shape)}"
        )
    alpha, beta, gamma = learnable_to_params(raw_alpha, raw_beta, raw_gamma, jnp)
    return _spocu_array_params(x, alpha, beta, gamma, c)
