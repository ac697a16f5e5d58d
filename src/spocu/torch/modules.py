"""``torch.nn.Module`` form of SPOCU."""

from __future__ import annotations

import operator
from typing import NoReturn

import numpy as np
import torch
from torch import nn

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SPOCUParams,
    learnable_positive,
    learnable_unit,
    params_to_learnable,
)
from spocu.torch import _dispatch
from spocu.torch._compat import dispatch_mode_active

__all__ = ["SPOCU"]


def _unrepresentable(name: str, wanted: float, dtype: torch.dtype, got: float) -> None:
    raise ValueError(
        f"learnable SPOCU parameter {name}={wanted!r} cannot be represented by a "
        f"{str(dtype).removeprefix('torch.')} parameter (it reads back as {got:.6g}); "
        "choose a value closer to 1 or dtype=torch.float64"
    )


class SPOCU(nn.Module):
    r"""Applies SPOCU (scaled polynomial constant unit) elementwise.

    .. math::

        \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
        h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c\end{cases},\quad
        r(u) = u^3(u^5 - 2u^4 + 2)

    (Kiseľák et al., Neural Computing and Applications 33, 2021; correction
    doi:10.1007/s00521-020-05412-6.) With ``c = inf`` (the default, as in the
    original ``spocu`` package) SPOCU is unbounded above and not monotone;
    ``c = 1`` makes it bounded and monotone.

    Args:
        alpha: scale, ``> 0``.
        beta: shift, in ``(0, 1)``.
        gamma: input scale, ``> 0``.
        c: saturation point, ``1 <= c <= inf``.
        learnable: (a bool) make alpha, beta and gamma trainable. The ``nn.Parameter`` s are
            unconstrained (``raw_alpha``, ``raw_beta``, ``raw_gamma``) and mapped
            into the domain (alpha, gamma = softplus(raw) + 1e-6, beta =
            1e-6 + (1 - 2e-6) * sigmoid(raw)), so every optimizer step keeps SPOCU valid;
            ``module.alpha`` etc. read the constrained values. Learnable
            parameters take fused kernels too (the backward reduces their
            gradients per channel in the same pass: the C++ kernels on CPU,
            Inductor's elsewhere); double backward and ``torch.func``
            transforms use plain ops.
            A learnable alpha and gamma must exceed 1e-6 and a learnable beta must
            lie in (1e-6, 1 - 1e-6), and each must be representable in the
            parameter dtype; other values raise :class:`ValueError`.
        num_parameters: with ``learnable=True``, 1 (shared) or the number of
            channels (dim 1 of the input), like :class:`torch.nn.PReLU` (any
            integer type).
        inplace: accepted and ignored, so that model code that builds its
            activations as ``act_layer(inplace=True)`` (timm's ``act_layer=SPOCU``,
            ``functools.partial(SPOCU, c=1.0)``) works. SPOCU keeps its input for
            backward, so it never overwrites it.

    Shape:
        Input: :math:`(*)`; output: :math:`(*)`, same shape.

    Examples:
        >>> import torch
        >>> from spocu.torch import SPOCU
        >>> m = SPOCU(c=1.0)
        >>> m
        SPOCU(alpha=3.0937, beta=0.6653, gamma=4.437, c=1.0)
        >>> m(torch.tensor([-5.0, 0.0, 5.0]))
        tensor([-1.5838,  0.0000,  1.5099])
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
        inplace: bool = False,
        device: torch.types.Device = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        params = SPOCUParams(alpha, beta, gamma, c)
        if not isinstance(learnable, (bool, np.bool_)):
            raise TypeError(f"SPOCU learnable= must be a bool, got {type(learnable).__name__} ({learnable!r})")
        if isinstance(num_parameters, (bool, np.bool_)):
            raise TypeError(f"SPOCU num_parameters= must be an integer, got a bool ({num_parameters!r})")
        try:
            num_parameters = operator.index(num_parameters)  # any integer type, as nn.PReLU
        except TypeError:
            raise TypeError(
                f"SPOCU num_parameters= must be an integer, got {type(num_parameters).__name__} ({num_parameters!r})"
            ) from None
        if num_parameters < 1:
            raise ValueError(f"num_parameters={num_parameters!r} must be a positive int")
        if num_parameters != 1 and not learnable:
            raise ValueError("num_parameters > 1 needs learnable=True (fixed parameters are shared)")
        self.c = params.c
        self.learnable = bool(learnable)
        self.num_parameters = num_parameters
        if self.learnable:
            # the reparameterization's range check (core), before any weight is made
            params_to_learnable(
                params.alpha, params.beta, params.gamma, torch.finfo(dtype or torch.get_default_dtype()).max
            )
            self._init = params
            self.raw_alpha = nn.Parameter(torch.empty(num_parameters, device=device, dtype=dtype))
            self.raw_beta = nn.Parameter(torch.empty(num_parameters, device=device, dtype=dtype))
            self.raw_gamma = nn.Parameter(torch.empty(num_parameters, device=device, dtype=dtype))
            self.reset_parameters()
        else:
            self._fixed = params

    def reset_parameters(self) -> None:
        """Set learnable alpha, beta, gamma back to their initial values (as :class:`torch.nn.PReLU`).

        Raises:
            ValueError: an initial value does not survive the round trip through
                the parameter dtype (e.g. gamma=1e308 in float32), naming it.
        """
        if not self.learnable:
            return
        params = self._init
        with torch.no_grad():
            raws = params_to_learnable(params.alpha, params.beta, params.gamma, torch.finfo(self.raw_alpha.dtype).max)
            for name, value in zip(("alpha", "beta", "gamma"), raws):
                parameter = getattr(self, f"raw_{name}")
                if not abs(value) <= torch.finfo(parameter.dtype).max:
                    _unrepresentable(name, getattr(params, name), parameter.dtype, float("inf"))
                parameter.fill_(value)
            if self.raw_alpha.device.type == "meta" or dispatch_mode_active():  # no values to read back
                return
            for name in ("alpha", "beta", "gamma"):
                wanted = getattr(params, name)
                got = getattr(self, name).detach().double()
                if not bool(torch.isclose(got, torch.full_like(got, wanted), rtol=1e-3, atol=0.0).all()):
                    _unrepresentable(name, wanted, self.raw_alpha.dtype, got.flatten()[0].item())

    @property
    def alpha(self) -> float | torch.Tensor:
        """alpha: a float, or (learnable) a tensor of ``num_parameters`` values > 0."""
        if self.learnable:
            alpha: torch.Tensor = learnable_positive(self.raw_alpha, torch)
            return alpha
        return self._fixed.alpha

    @property
    def beta(self) -> float | torch.Tensor:
        """beta: a float, or (learnable) a tensor of values in (0, 1)."""
        if self.learnable:
            beta: torch.Tensor = learnable_unit(self.raw_beta, torch)
            return beta
        return self._fixed.beta

    @property
    def gamma(self) -> float | torch.Tensor:
        """gamma: a float, or (learnable) a tensor of values > 0."""
        if self.learnable:
            gamma: torch.Tensor = learnable_positive(self.raw_gamma, torch)
            return gamma
        return self._fixed.gamma

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Apply SPOCU elementwise, s(x) = α·h(x/γ + β) − α·h(β), with this module's fixed or
        learnable parameters, through the same kernels as :func:`spocu.torch.spocu`.
        """
        return _dispatch.module_call(self, input)

    def __prepare_scriptable__(self) -> NoReturn:
        raise RuntimeError(
            "spocu.torch.SPOCU cannot be compiled by torch.jit.script (its kernels are chosen in Python); "
            "use torch.jit.trace, torch.compile or torch.export instead"
        )

    def extra_repr(self) -> str:
        """The parameters shown in ``repr(module)``: values (learnable: the mapped ones, at most four
        per tensor; ``?`` on the meta device), ``c`` and, when learnable, ``num_parameters``.
        """
        if self.learnable:

            def fmt(value: float | torch.Tensor) -> str:  # a tensor: the parameters are learnable here
                t = torch.as_tensor(value)
                if t.device.type == "meta":
                    return "?"
                v = t.detach().cpu().flatten().tolist()
                return (
                    f"{v[0]:.6g}"
                    if len(v) == 1
                    else f"[{', '.join(f'{e:.4g}' for e in v[:4])}{', ...' if len(v) > 4 else ''}]"
                )

            return (
                f"alpha={fmt(self.alpha)}, beta={fmt(self.beta)}, gamma={fmt(self.gamma)}, c={self.c}, "
                f"learnable=True, num_parameters={self.num_parameters}"
            )
        return f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, c={self.c}"
