r"""SPOCU as a Flax Linen module: :class:`SPOCU` (the NNX module is :class:`spocu.flax.SPOCU`).

.. math::

    \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c\end{cases},\quad
    r(u) = u^3(u^5 - 2u^4 + 2)

Examples:
    >>> import jax, jax.numpy as jnp
    >>> from spocu.flax.linen import SPOCU
    >>> act = SPOCU(learnable=True, num_parameters=3)
    >>> variables = act.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> variables["params"]["raw_beta"].shape
    (3,)
"""

from __future__ import annotations

from typing import Any

try:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(f"spocu.flax.linen needs Flax ({error}): pip install 'spocu[flax]'") from error

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, check_learnable_options
from spocu.jax.functional import spocu
from spocu.jax.learnable import initial_raw_weights, learnable_spocu

__all__ = ["SPOCU"]


class SPOCU(nn.Module):
    r"""SPOCU as a Linen module, with fixed or learnable alpha, beta, gamma (as ``flax.linen.PReLU``).

    .. math::

        \mathrm{SPOCU}(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta)

    Attributes:
        alpha, beta, gamma: the parameters (the initial values when learnable):
            ``alpha, gamma > 0``, ``0 < beta < 1``.
        c: saturation point, ``1 <= c <= inf`` (never learnable).
        learnable: a bool: params ``raw_alpha``, ``raw_beta``, ``raw_gamma``, unconstrained
            and mapped by :func:`spocu.core.learnable_to_params` (softplus/sigmoid, the
            map of the PyTorch, Keras and NNX modules), so every optimizer step keeps
            SPOCU valid.
        num_parameters: with ``learnable=True``, 1 (shape ``()``) or the number of
            channels on the input's last axis (shape ``(C,)``).
        param_dtype: dtype of the learnable params.

    Invalid values raise when the module is constructed.

    Examples:
        >>> import jax.numpy as jnp
        >>> [round(float(v), 4) for v in SPOCU(c=1.0).apply({}, jnp.array([-5.0, 0.0, 5.0]))]
        [-1.5838, 0.0, 1.5099]
    """

    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    gamma: float = DEFAULT_GAMMA
    c: float = DEFAULT_C
    learnable: bool = False
    num_parameters: int = 1
    param_dtype: Any = jnp.float32

    def __post_init__(self) -> None:
        # validate at construction, as the NNX, PyTorch and Keras modules do (not at the first call)
        SPOCUParams(self.alpha, self.beta, self.gamma, self.c)
        check_learnable_options(self.learnable, self.num_parameters)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Apply SPOCU elementwise, s(x) = α·h(x/γ + β) − α·h(β); when learnable, ``init`` creates
        the params ``raw_alpha``, ``raw_beta``, ``raw_gamma``. See :func:`spocu.jax.spocu`.
        """
        params = SPOCUParams(self.alpha, self.beta, self.gamma, self.c)
        if not self.learnable:
            return spocu(x, params.alpha, params.beta, params.gamma, params.c)
        _, num_parameters = check_learnable_options(self.learnable, self.num_parameters)
        raw_alpha, raw_beta, raw_gamma = (
            self.param(name, lambda _key, i=i: initial_raw_weights(params, num_parameters, self.param_dtype)[i])
            for i, name in enumerate(("raw_alpha", "raw_beta", "raw_gamma"))
        )
        return learnable_spocu(x, raw_alpha, raw_beta, raw_gamma, params.c)
