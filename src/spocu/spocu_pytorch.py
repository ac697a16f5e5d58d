"""Drop-in replacement for ``spocu.spocu_pytorch`` of the original ``spocu`` 0.0.1 package.

``SPOCU(alpha, beta, gamma)(x)`` works as before (c = inf), but is differentiable
and runs on any device and floating dtype. An optional fourth positional ``c``
(the saturation point, default ``inf``) gives the four-parameter form,
``SPOCU(3.0937, 0.6653, 4.437, float("inf"))``, as :class:`spocu.torch.SPOCU` takes it.

Example:
    >>> import torch
    >>> from spocu.spocu_pytorch import SPOCU
    >>> spocu = SPOCU(3.0937, 0.6653, 4.437)
    >>> spocu(torch.zeros(2, 2)).shape
    torch.Size([2, 2])
    >>> SPOCU(3.0937, 0.6653, 4.437, 1.0)
    SPOCU(alpha=3.0937, beta=0.6653, gamma=4.437, c=1.0)
"""

from __future__ import annotations

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, h
from spocu.torch.modules import SPOCU as _SPOCU

__all__ = ["SPOCU"]


class SPOCU(_SPOCU):
    """``SPOCU(alpha, beta, gamma[, c])`` as in ``spocu`` 0.0.1 (c = inf by default), now with gradients."""

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        c: float = DEFAULT_C,
    ) -> None:
        super().__init__(alpha, beta, gamma, c)

    def h2_function(self, value: float) -> float:
        """The old helper: h(value) for a Python scalar."""
        return float(h(value))
