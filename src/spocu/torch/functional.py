r"""Functional SPOCU for PyTorch.

.. math::

    \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

Examples:
    >>> import torch
    >>> from spocu.torch import spocu
    >>> spocu(torch.tensor([-10.0, 0.0, 1.0]))
    tensor([-1.5838,  0.0000,  1.2620])
"""

from __future__ import annotations

import torch

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA
from spocu.torch import _dispatch

__all__ = ["spocu"]


def spocu(
    x: torch.Tensor,
    alpha: float | torch.Tensor = DEFAULT_ALPHA,
    beta: float | torch.Tensor = DEFAULT_BETA,
    gamma: float | torch.Tensor = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
    *,
    backend: str | None = None,
) -> torch.Tensor:
    r"""Apply SPOCU elementwise.

    Args:
        x: input of any shape; float16/bfloat16 are computed in float32 and
            returned in their own dtype; integer/bool inputs are promoted to the
            default float dtype (as :func:`torch.sigmoid` does).
        alpha: the output scale α > 0: a float (validated, fixed) or a tensor with
            one element or one per channel (dim 1, as :class:`torch.nn.PReLU`), which
            makes it differentiable. Tensor values must lie in the domain; the module
            :class:`spocu.torch.SPOCU` keeps them there.
        beta: the shift β, 0 < β < 1, as ``alpha``.
        gamma: the input scale γ > 0, as ``alpha``.
        c: saturation point, ``1 <= c <= inf``.
        backend: ``"auto"`` (default; or the ``SPOCU_TORCH_BACKEND`` environment
            variable), ``"eager"`` (plain ops), ``"cpp"`` (C++ CPU kernels, built
            when spocu was installed), ``"inductor"`` (fused kernels compiled on first
            use) or ``"triton"`` (CUDA kernels); see
            :mod:`spocu.torch._dispatch`. Every path gives the same values and
            keeps only ``x`` for backward. Tensor subclasses (FakeTensor, DTensor, ...)
            always take plain ops; under ``torch.fx.symbolic_trace`` the call is one
            graph node.

    Shape:
        Input: :math:`(*)`; output: :math:`(*)`, same shape, dtype and device.
    """
    return _dispatch.call(x, alpha, beta, gamma, c, backend)


_dispatch.FX_TARGET = spocu  # what torch.fx.symbolic_trace records for a call
