r"""SPOCU as a Keras 3 activation function, on every Keras backend.

.. math::

    s(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

The kernels (one per backend, fixed and tensor parameters) live in
:mod:`spocu.keras.kernels`, which this module and :mod:`spocu.keras.layers` share.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, cached_kernel_params
from spocu.keras.kernels import as_float_input, spocu_fixed, spocu_tensor_params
from spocu.keras.layers import SPOCU

__all__ = ["spocu", "spocu_fixed", "spocu_tensor_params"]


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

    ``s'`` is exactly 0 at the kinks ``x = -gamma*beta`` and ``x = gamma*(c - beta)``,
    on the flat pieces and at ``x = +-inf``, with fixed and with tensor parameters.

    Use it as ``keras.layers.Dense(8, activation=spocu)`` (the defaults; it is
    registered as ``"spocu>spocu"`` and round-trips through ``model.save``). For
    other parameters pass a layer, ``activation=spocu.keras.SPOCU(c=1.0)``, which
    saves its parameters in its config.

    Args:
        x: tensor of any shape. Integer and bool inputs are cast to
            ``keras.config.floatx()``; float16/bfloat16 are computed in float32 and
            returned in their own dtype.
        alpha: the output scale α > 0: a float (validated) or a tensor broadcasting
            against ``x`` (differentiable, see :func:`spocu.keras.kernels.spocu_tensor_params`).
        beta: the shift β, 0 < β < 1, as ``alpha``.
        gamma: the input scale γ > 0, as ``alpha``.
        c: saturation point, ``1 <= c <= inf``.

    Raises:
        ValueError: for parameters outside the domain or the supported range (the
            messages of :class:`spocu.core.SPOCUParams`).

    Examples:
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
        return spocu_tensor_params(as_float_input(x), alpha, beta, gamma, SPOCUParams(c=c).c)
    params = cached_kernel_params(alpha, beta, gamma, c)
    if keras.backend.is_keras_tensor(x):  # functional-API call: insert a (serializable) layer
        return SPOCU(alpha=params.alpha, beta=params.beta, gamma=params.gamma, c=params.c)(x)
    return spocu_fixed(as_float_input(x), params)
