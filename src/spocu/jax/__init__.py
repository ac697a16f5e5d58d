r"""SPOCU for JAX: :func:`spocu`, jit/grad/vmap-ready, with a pinned derivative.

.. math::

    s(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

Example:
    >>> import jax, jax.numpy as jnp
    >>> from spocu.jax import spocu
    >>> [round(v, 5) for v in spocu(jnp.array([-10.0, 0.0, 1.0])).tolist()]
    [-1.58383, 0.0, 1.26198]
    >>> float(jax.grad(spocu)(0.0))  # (alpha/gamma) * r'(beta)
    1.3270400762557983
"""

from spocu.jax.functional import spocu

__all__ = ["spocu"]
