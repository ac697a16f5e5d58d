r"""SPOCU for Equinox: :class:`SPOCU`, an ``eqx.Module`` with fixed or learnable alpha, beta, gamma.

.. math::

    \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c\end{cases},\quad
    r(u) = u^3(u^5 - 2u^4 + 2)

Install with ``pip install 'spocu[equinox]'``.

Examples:
    >>> import jax, equinox as eqx
    >>> from spocu.equinox import SPOCU
    >>> mlp = eqx.nn.MLP(2, 1, 8, 2, activation=SPOCU(learnable=True), key=jax.random.key(0))
    >>> mlp.activation.raw_alpha.shape  # eqx.nn.MLP gives each hidden unit its own copy
    (2, 8)
"""

from __future__ import annotations

from typing import Any

try:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(f"spocu.equinox needs Equinox ({error}): pip install 'spocu[equinox]'") from error

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SPOCUParams,
    check_learnable_options,
    learnable_to_params,
)
from spocu.jax.functional import spocu
from spocu.jax.learnable import initial_raw_weights, learnable_spocu

__all__ = ["SPOCU"]


class SPOCU(eqx.Module):
    r"""SPOCU as an Equinox module (as ``eqx.nn.PReLU``), usable as ``eqx.nn.MLP(activation=SPOCU(...))``.

    .. math::

        \mathrm{SPOCU}(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta)

    Args:
        alpha: the output scale α > 0 (the initial value when learnable).
        beta: the shift β, ``0 < beta < 1`` (the initial value when learnable).
        gamma: the input scale γ > 0 (the initial value when learnable).
        c: saturation point, ``1 <= c <= inf`` (a static field, never learnable).
        learnable: a bool: the arrays ``raw_alpha``, ``raw_beta``, ``raw_gamma`` are
            unconstrained leaves mapped by :func:`spocu.core.learnable_to_params`
            (softplus/sigmoid, the map of the PyTorch, Keras and Flax modules), so
            ``eqx.filter_grad`` + optax steps keep SPOCU valid. Fixed parameters are
            static fields (no array leaves), so ``filter_jit`` specializes on them.
        num_parameters: with ``learnable=True``, 1 (scalar leaves; ``eqx.nn.MLP``
            then gives every hidden unit its own copy) or the number of channels on
            the input's last axis.
        param_dtype: dtype of the learnable arrays.

    Examples:
        >>> import jax.numpy as jnp
        >>> [round(float(v), 4) for v in SPOCU(c=1.0)(jnp.array([-5.0, 0.0, 5.0]))]
        [-1.5838, 0.0, 1.5099]
    """

    raw_alpha: jax.Array | None
    raw_beta: jax.Array | None
    raw_gamma: jax.Array | None
    fixed: tuple[float, float, float] | None = eqx.field(static=True)
    c: float = eqx.field(static=True)
    learnable: bool = eqx.field(static=True)

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        c: float = DEFAULT_C,
        *,
        learnable: bool = False,
        num_parameters: int = 1,
        param_dtype: Any = jnp.float32,
    ) -> None:
        params = SPOCUParams(alpha, beta, gamma, c)
        self.learnable, num_parameters = check_learnable_options(learnable, num_parameters)
        self.c = params.c
        if self.learnable:
            self.raw_alpha, self.raw_beta, self.raw_gamma = initial_raw_weights(params, num_parameters, param_dtype)
            self.fixed = None
        else:
            self.raw_alpha = self.raw_beta = self.raw_gamma = None
            self.fixed = (params.alpha, params.beta, params.gamma)

    @property
    def alpha(self) -> Any:
        """alpha: a float, or (learnable) an array of values > 0."""
        if self.learnable:
            return learnable_to_params(self.raw_alpha, self.raw_beta, self.raw_gamma, jnp)[0]
        assert self.fixed is not None  # set by __init__ when not learnable
        return self.fixed[0]

    @property
    def beta(self) -> Any:
        """beta: a float, or (learnable) an array of values in (0, 1)."""
        if self.learnable:
            return learnable_to_params(self.raw_alpha, self.raw_beta, self.raw_gamma, jnp)[1]
        assert self.fixed is not None
        return self.fixed[1]

    @property
    def gamma(self) -> Any:
        """gamma: a float, or (learnable) an array of values > 0."""
        if self.learnable:
            return learnable_to_params(self.raw_alpha, self.raw_beta, self.raw_gamma, jnp)[2]
        assert self.fixed is not None
        return self.fixed[2]

    def __call__(self, x: jax.Array, *, key: Any = None) -> jax.Array:
        """Apply SPOCU elementwise, s(x) = α·h(x/γ + β) − α·h(β), with this layer's parameters;
        ``key`` is ignored (SPOCU is deterministic), accepted as other Equinox layers accept it.
        """
        del key  # deterministic; accepted as other Equinox layers accept it
        if self.learnable:
            return learnable_spocu(x, self.raw_alpha, self.raw_beta, self.raw_gamma, self.c)
        assert self.fixed is not None
        return spocu(x, *self.fixed, self.c)
