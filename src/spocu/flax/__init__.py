r"""SPOCU for Flax: :class:`SPOCU`, an NNX module (the Linen module is :class:`spocu.flax.linen.SPOCU`).

.. math::

    \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c\end{cases},\quad
    r(u) = u^3(u^5 - 2u^4 + 2)

Install with ``pip install 'spocu[flax]'``. For the fixed function alone,
:func:`spocu.jax.spocu` goes into any Flax module as it is.

Examples:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from spocu.flax import SPOCU
    >>> act = SPOCU(learnable=True, num_parameters=3)
    >>> act(jnp.zeros((2, 3))).shape, act.raw_alpha.shape
    ((2, 3), (3,))
    >>> [round(float(v), 4) for v in SPOCU(c=1.0)(jnp.array([-5.0, 0.0, 5.0]))]
    [-1.5838, 0.0, 1.5099]
"""

from __future__ import annotations

from typing import Any

try:
    import jax
    import jax.numpy as jnp
    from flax import nnx
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(f"spocu.flax needs Flax ({error}): pip install 'spocu[flax]'") from error

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


class SPOCU(nnx.Module):
    r"""SPOCU as a Flax NNX module, with fixed or learnable alpha, beta, gamma (as ``nnx.PReLU``).

    .. math::

        \mathrm{SPOCU}(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta)

    Args:
        alpha: scale, ``> 0`` (the initial value when learnable).
        beta: shift, in ``(0, 1)``.
        gamma: input scale, ``> 0``.
        c: saturation point, ``1 <= c <= inf`` (never learnable).
        learnable: a bool: make alpha, beta, gamma ``nnx.Param`` s. They are held
            unconstrained (``raw_alpha``, ``raw_beta``, ``raw_gamma``) and mapped by
            :func:`spocu.core.learnable_to_params` (softplus/sigmoid, the same map as
            the PyTorch and Keras layers), so every optimizer step keeps SPOCU valid;
            ``module.alpha`` etc. read the mapped values. Initial alpha and gamma
            must exceed 1e-6 and beta lie in (1e-6, 1 - 1e-6).
        num_parameters: with ``learnable=True``, 1 (one shared set, shape ``()``) or
            the number of channels: shape ``(C,)``, applied along the input's last
            axis (Flax's channels-last layout).
        param_dtype: dtype of the learnable weights (float32 by default).

    Input and output: any shape (the last axis of size ``num_parameters`` when > 1);
    the output has the input's shape and floating dtype.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> model = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), SPOCU(learnable=True, num_parameters=8))
        >>> grads = nnx.grad(lambda m: m(jnp.ones((2, 4))).sum())(model)
        >>> grads.layers[1].raw_gamma.shape
        (8,)
    """

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
        self.learnable, self.num_parameters = check_learnable_options(learnable, num_parameters)
        self.c = params.c
        if self.learnable:
            raws = initial_raw_weights(params, self.num_parameters, param_dtype)
            self.raw_alpha, self.raw_beta, self.raw_gamma = (nnx.Param(r) for r in raws)
        else:
            self.fixed = (params.alpha, params.beta, params.gamma)

    def _mapped(self) -> tuple[Any, Any, Any]:
        return learnable_to_params(self.raw_alpha[...], self.raw_beta[...], self.raw_gamma[...], jnp)

    @property
    def alpha(self) -> Any:
        """alpha: a float, or (learnable) an array of values > 0."""
        return self._mapped()[0] if self.learnable else self.fixed[0]

    @property
    def beta(self) -> Any:
        """beta: a float, or (learnable) an array of values in (0, 1)."""
        return self._mapped()[1] if self.learnable else self.fixed[1]

    @property
    def gamma(self) -> Any:
        """gamma: a float, or (learnable) an array of values > 0."""
        return self._mapped()[2] if self.learnable else self.fixed[2]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply SPOCU elementwise, s(x) = α·h(x/γ + β) − α·h(β), with this module's fixed or
        learnable (mapped) parameters; see :func:`spocu.jax.spocu`.
        """
        if self.learnable:
            return learnable_spocu(x, self.raw_alpha[...], self.raw_beta[...], self.raw_gamma[...], self.c)
        return spocu(x, *self.fixed, self.c)
