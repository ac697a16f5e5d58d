"""SPOCU as a Keras 3 layer, serializable, optionally with learnable parameters."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SPOCUParams,
    check_kernel_range,
    learnable_positive,
    learnable_unit,
    params_to_learnable,
)
from spocu.keras.kernels import as_float_input, spocu_fixed, spocu_tensor_params

__all__ = ["SPOCU"]


def _dtype_max(dtype: str) -> float:
    """The largest finite number of a Keras float dtype."""
    if dtype == "bfloat16":  # not a NumPy dtype
        return 3.3895313892515355e38
    return float(np.finfo(dtype).max)


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
        learnable: a bool: train alpha, beta and gamma (one shared set). The weights are
            unconstrained (``raw_alpha``, ``raw_beta``, ``raw_gamma``) and mapped
            into the domain by :func:`spocu.core.learnable_to_params` (alpha, gamma =
            softplus(raw) + 1e-6, beta = 1e-6 + (1 - 2e-6) * sigmoid(raw)), so every
            optimizer step keeps SPOCU valid. alpha, beta, gamma given here are the
            initial values; a learnable alpha or gamma must exceed 1e-6 and a learnable
            beta lie in (1e-6, 1 - 1e-6) (a ``ValueError`` says so otherwise).
        **kwargs: the usual layer arguments (``name``, ``dtype``, ...).

    Input and output: any shape; the output has the input's shape and (floating)
    dtype; integer and bool inputs are promoted to ``keras.config.floatx()``.
    Under a mixed-precision policy the math is done in float32.

    Examples:
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
        params = SPOCUParams(alpha, beta, gamma, math.inf if c is None else c)  # validate before building anything
        if not isinstance(learnable, (bool, np.bool_)):
            raise TypeError(f"SPOCU(learnable=...) must be a bool, got {type(learnable).__name__} {learnable!r}")
        if not learnable:  # fixed parameters go through the float32-coefficient kernels
            check_kernel_range(params.alpha, params.gamma)
        super().__init__(**kwargs)
        self._fixed = params
        self.learnable = bool(learnable)
        self.supports_masking = True
        if self.learnable:
            # scalar weights: created here so the layer is usable (and loadable) before its first call
            # autocast=False: under mixed precision the math runs in float32, so read the weights in float32
            def weight(name: str, value: float) -> Any:
                # ops.full keeps all digits of value in float64 (keras.initializers.Constant goes through float32)
                init = lambda shape, dtype=None: ops.full(shape, value, dtype=dtype)  # noqa: E731
                return self.add_weight(name=name, shape=(), initializer=init, autocast=False)

            raws = params_to_learnable(
                params.alpha, params.beta, params.gamma, max_value=_dtype_max(self.dtype_policy.variable_dtype)
            )
            self.raw_alpha, self.raw_beta, self.raw_gamma = (
                weight(name, raw) for name, raw in zip(("raw_alpha", "raw_beta", "raw_gamma"), raws)
            )

    @property
    def c(self) -> float:
        """c: the saturation point, a float (``inf`` for the unbounded SPOCU); never learnable."""
        return self._fixed.c

    @property
    def alpha(self) -> Any:
        """alpha: a float, or (learnable) a scalar tensor > 0."""
        if self.learnable:
            return learnable_positive(ops.convert_to_tensor(self.raw_alpha), ops)
        return self._fixed.alpha

    @property
    def beta(self) -> Any:
        """beta: a float, or (learnable) a scalar tensor in (0, 1)."""
        if self.learnable:
            return learnable_unit(ops.convert_to_tensor(self.raw_beta), ops)
        return self._fixed.beta

    @property
    def gamma(self) -> Any:
        """gamma: a float, or (learnable) a scalar tensor > 0."""
        if self.learnable:
            return learnable_positive(ops.convert_to_tensor(self.raw_gamma), ops)
        return self._fixed.gamma

    def call(self, inputs: Any) -> Any:
        """Keras forward: SPOCU elementwise on ``inputs`` (integer and bool inputs promoted to
        ``floatx``), with this layer's fixed or learnable parameters; see :func:`spocu.keras.spocu`.
        """
        x = as_float_input(inputs)
        if self.learnable:
            return spocu_tensor_params(x, self.alpha, self.beta, self.gamma, self.c)
        return spocu_fixed(x, self._fixed)

    def compute_output_shape(self, input_shape: Any) -> Any:
        """Keras shape inference: SPOCU is elementwise, so the output shape is the input shape."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Keras serialization: the constructor's arguments (``c = inf`` stored as ``None``, valid JSON)."""
        config: dict[str, Any] = super().get_config()
        p = self._fixed
        config.update(
            alpha=p.alpha, beta=p.beta, gamma=p.gamma, c=p.c if math.isfinite(p.c) else None, learnable=self.learnable
        )
        return config
