r"""Functional SPOCU for PyTorch.

.. math::

    \mathrm{SPOCU}(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),\quad
    h(u) = \begin{cases} 0 & u < 0 \\ u^3(u^5 - 2u^4 + 2) & 0 \le u < c \\ h(c^-) & u \ge c\end{cases}

Example:
    >>> import torch
    >>> from spocu.torch import spocu
    >>> spocu(torch.tensor([-10.0, 0.0, 1.0]))
    tensor([-1.5838,  0.0000,  1.2620])
"""

from __future__ import annotations

from functools import lru_cache

import torch

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams
from spocu.torch import _eager
from spocu.torch._dispatch import resolve_backend
from spocu.torch._learnable import spocu_tensor_params

__all__ = ["spocu"]


@lru_cache(maxsize=256)
def _params(alpha: float, beta: float, gamma: float, c: float) -> SPOCUParams:
    return SPOCUParams(alpha, beta, gamma, c)


class _SPOCUFunction(torch.autograd.Function):
    """Fixed-parameter SPOCU that saves only its input for backward."""

    @staticmethod
    def forward(ctx, x, params):
        ctx.save_for_backward(x)
        ctx.params = params
        return _eager.forward(x, params)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return _eager.backward(grad_output, x, ctx.params), None


def _as_float_input(x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"spocu expects a torch.Tensor, got {type(x).__name__}")
    if x.is_complex():
        raise TypeError(f"spocu is defined for real inputs, got a {x.dtype} tensor")
    if not x.is_floating_point():
        # integer and bool inputs are promoted as torch.sigmoid promotes them
        return x.to(torch.get_default_dtype())
    return x


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
        alpha, beta, gamma: floats (validated, fixed) or tensors with one element
            or one per channel (dim 1, as :class:`torch.nn.PReLU`), which makes them
            differentiable. Tensor values must lie in the domain; the module
            :class:`spocu.torch.SPOCU` keeps them there.
        c: saturation point, ``1 <= c <= inf``.
        backend: force a kernel path (see :mod:`spocu.torch._dispatch`).

    Shape:
        Input: :math:`(*)`; output: :math:`(*)`, same shape, dtype and device.
    """
    x = _as_float_input(x)
    if any(isinstance(p, torch.Tensor) for p in (alpha, beta, gamma)):
        c = SPOCUParams(c=c).c  # validate c; tensors are the caller's (or the module's) job
        ref = x
        alpha, beta, gamma = (
            p if isinstance(p, torch.Tensor) else torch.tensor(float(p), dtype=ref.dtype, device=ref.device)
            for p in (alpha, beta, gamma)
        )
        return spocu_tensor_params(x, alpha, beta, gamma, c)
    try:
        params = _params(alpha, beta, gamma, c)
    except TypeError:  # unhashable argument: let the validation name it
        params = SPOCUParams(alpha, beta, gamma, c)
    resolve_backend(x, backend)
    return _SPOCUFunction.apply(x, params)
