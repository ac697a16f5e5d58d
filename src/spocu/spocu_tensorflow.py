"""Drop-in replacement for ``spocu.spocu_tensorflow`` of the original ``spocu`` 0.0.1 package.

``SPOCU(alpha, beta, gamma)`` is now :class:`spocu.keras.SPOCU` (c = inf): a Keras 3
layer on any backend, with a memory-lean custom gradient, usable as
``Conv2D(..., activation=spocu)`` and saved/loaded with the model. An optional
fourth positional ``c`` (the saturation point, default ``inf``) gives the
four-parameter form, ``SPOCU(3.0937, 0.6653, 4.437, float("inf"))``.

Example:
    >>> import numpy as np
    >>> from spocu.spocu_tensorflow import SPOCU
    >>> spocu = SPOCU(3.0937, 0.6653, 4.437)
    >>> tuple(spocu(np.zeros((2, 2))).shape)
    (2, 2)
    >>> SPOCU(3.0937, 0.6653, 4.437, 1.0).c
    1.0
"""

from __future__ import annotations

from typing import Any

import keras

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, h
from spocu.keras.layers import SPOCU as _SPOCU

__all__ = ["SPOCU"]


@keras.saving.register_keras_serializable(package="spocu", name="spocu_tensorflow.SPOCU")
class SPOCU(_SPOCU):
    """``SPOCU(alpha, beta, gamma[, c])`` as in ``spocu`` 0.0.1 (c = inf by default), now a serializable Keras 3 layer."""

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        c: float | None = DEFAULT_C,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("learnable", None)  # configs carry learnable=False (the old layer had fixed parameters)
        super().__init__(alpha, beta, gamma, c, **kwargs)

    def h2_function(self, value: float) -> float:
        """The old helper: h(value) for a Python scalar."""
        return float(h(value))
