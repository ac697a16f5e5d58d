"""SPOCU as a Keras 3 layer, serializable, optionally with learnable parameters."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams
from spocu.keras.functional import spocu_fixed, spocu_tensor_params

__all__ = ["SPOCU"]

_POSITIVE_FLOOR = 1e-6  # keeps softplus(raw) away from 0 in float32
_UNIT_MARGIN = 1e-6  # keeps sigmoid(raw) inside (0, 1) in float32


def _inverse_softplus(value: float) -> float:
    v = value - _POSITIVE_FLOOR
    return v + math.log(-math.expm1(-v))  # stable for large v


def _const(value: float, like: Any) -> Any:
    # a tensor, not a Python float: Keras's torch backend rounds Python floats to float32
    return ops.convert_to_tensor(value, dtype=keras.backend.standardize_dtype(like.dtype))


def _softplus_plus_floor(raw: Any) -> Any:
    raw = ops.convert_to_tensor(raw)
    return ops.add(ops.softplus(raw), _const(_POSITIVE_FLOOR, raw))


def _logit(beta: float) -> float:
    p = (beta - _UNIT_MARGIN) / (1 - 2 * _UNIT_MARGIN)
    return math.log(p / (1 - p))


@keras.saving.register_keras_serializable(package="spocu")
class SPOCU(keras.layers.Layer):
    r"""Applies SPOCU (scaled polynomial constant unit) elementwise.

    .. math::

        \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
        h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c\end{cases},\quad
        r(u) = u^3(u^5 - 2u^4 + 2)

    (Kiseľák et al., Neural Computing and Applications 33, 2021.) Use it as a
    layer or as another layer's activation, ``Conv2D(32, 3, activation=SPOCU(c=1.0))``;
    either way ``model.save``/``keras.models.load_model`` restore it (after
    ``import spocu.keras``), parameters included.

    Args:
        alpha: scale, ``> 0``.
        beta: shift, in ``(0, 1)``.
        gamma: input scale, ``> 0``.
        c: saturation point, ``1 <= c <= inf`` (``None`` means ``inf``; the config
            stores ``inf`` as ``None`` so that it is plain JSON).
        learnable: train alpha, beta and gamma (one shared set). The weights are
            unconstrained (``raw_alpha``, ``raw_beta``, ``raw_gamma``) and mapped
            into the domain (alpha, gamma = softplus(raw) + 1e-6, beta = 1e-6 +
            (1 - 2e-6) * sigmoid(raw)), so every optimizer step keeps SPOCU valid.
            alpha, beta, gamma given here are the initial values.
        **kwargs: the usual layer arguments (``name``, ``dtype``, ...).

    Input and output: any shape; the output has the input's shape and dtype.
    Under a mixed-precision policy the math is done in float32.

    Example:
        >>> import numpy as np
        >>> from spocu.keras import SPOCU
        >>> layer = SPOCU(c=1.0)
        >>> [round(float(v), 4) for v in layer(np.array([-5.0, 0.0, 5.0]))]
        [-1.5838, 0.0, 1.5099]
        >>> layer.get_config()["c"], SPOCU().get_config()["c"]
        (1.0, None)
    """

    def __init__(
        self,
        alpha: float = DEFAULT_ALPHA,
        beta: float = DEFAULT_BETA,
        gamma: float = DEFAULT_GAMMA,
        c: float | None = DEFAULT_C,
        learnable: bool = False,
        **kwargs: Any,
    ) -> None:
        params = SPOCUParams(alpha, beta, gamma, c)  # validate before building anything
        super().__init__(**kwargs)
        self._fixed = params
        self.learnable = bool(learnable)
        self.supports_masking = True
        if self.learnable:
            # scalar weights: created here so the layer is usable (and loadable) before its first call
            # autocast=False: under mixed precision the math runs in float32, so read the weights in float32
            def weight(name: str, value: float):
                # ops.full keeps all digits of value in float64 (keras.initializers.Constant goes through float32)
                init = lambda shape, dtype=None: ops.full(shape, value, dtype=dtype)  # noqa: E731
                return self.add_weight(name=name, shape=(), initializer=init, autocast=False)

            self.raw_alpha = weight("raw_alpha", _inverse_softplus(params.alpha))
            self.raw_beta = weight("raw_beta", _logit(params.beta))
            self.raw_gamma = weight("raw_gamma", _inverse_softplus(params.gamma))

    @property
    def c(self) -> float:
        return self._fixed.c

    @property
    def alpha(self) -> Any:
        """alpha: a float, or (learnable) a scalar tensor > 0."""
        if self.learnable:
            return _softplus_plus_floor(self.raw_alpha)
        return self._fixed.alpha

    @property
    def beta(self) -> Any:
        """beta: a float, or (learnable) a scalar tensor in (0, 1)."""
        if self.learnable:
            raw = ops.convert_to_tensor(self.raw_beta)
            scaled = ops.multiply(_const(1 - 2 * _UNIT_MARGIN, raw), ops.sigmoid(raw))
            return ops.add(_const(_UNIT_MARGIN, raw), scaled)
        return self._fixed.beta

    @property
    def gamma(self) -> Any:
        """gamma: a float, or (learnable) a scalar tensor > 0."""
        if self.learnable:
            return _softplus_plus_floor(self.raw_gamma)
        return self._fixed.gamma

    def call(self, inputs: Any) -> Any:
        if self.learnable:
            return spocu_tensor_params(inputs, self.alpha, self.beta, self.gamma, self.c)
        return spocu_fixed(inputs, self._fixed)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        p = self._fixed
        config.update(
            alpha=p.alpha, beta=p.beta, gamma=p.gamma, c=p.c if math.isfinite(p.c) else None, learnable=self.learnable
        )
        return config
