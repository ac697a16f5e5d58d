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


import torch

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, cached_params
from spocu.torch import _eager, _inductor, _ops, _triton  # noqa: F401 -- _ops registers torch.ops.spocu.*
from spocu.torch._constants import KernelConstants, kernel_constants
from spocu.torch._dispatch import assume_constant_result, resolve_backend, traced_backend
from spocu.torch._learnable import spocu_tensor_params

__all__ = ["spocu"]


class _SPOCUFunction(torch.autograd.Function):
    """Fixed-parameter SPOCU in plain ops that saves only its input for backward."""

    @staticmethod
    def forward(ctx, x, k):
        ctx.save_for_backward(x)
        ctx.k = k
        return _eager.forward(x, k)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return _eager.backward(grad_output, x, ctx.k), None


class _FusedSPOCUFunction(torch.autograd.Function):
    """Fixed-parameter SPOCU with a fused kernel module (``_inductor`` or ``_triton``); saves only x.

    Eager mode only (tracers see :class:`_SPOCUFunction` or the custom op). This is
    the custom op's autograd formula without the op-dispatch overhead (~25 us a call).
    """

    @staticmethod
    def forward(ctx, x, k, kernels):
        ctx.save_for_backward(x)
        ctx.k = k
        ctx.kernels = kernels
        return kernels.forward(x, k)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        # double backward (create_graph=True) needs differentiable ops
        kernels = _eager if _eager.recording(grad_output, x) else ctx.kernels
        return kernels.backward(grad_output, x, ctx.k), None, None


_KERNELS = {"inductor": _inductor, "triton": _triton}


@assume_constant_result
def _traced_constants(alpha: float, beta: float, gamma: float, c: float, dtype: torch.dtype) -> KernelConstants:
    """Run once at trace time: the tracer sees the result as constants (no parameter code in the graph)."""
    return kernel_constants(SPOCUParams(alpha, beta, gamma, c), dtype)


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


def _traced_spocu(x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float, backend: str | None):
    """SPOCU while a tracer records: plain ops that the compiler can fuse, or an opaque custom op."""
    k = _traced_constants(alpha, beta, gamma, c, x.dtype)  # validates the parameters at trace time
    if _exporting():  # only standard ops in exported graphs (ONNX, torch.export)
        return _eager.forward(x, k)
    path = traced_backend(backend)
    if path == "eager":
        return _SPOCUFunction.apply(x, k)
    return torch.ops.spocu.spocu(x, float(alpha), float(beta), float(gamma), float(c), path)


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
        backend: ``"auto"`` (default; or the ``SPOCU_TORCH_BACKEND`` environment
            variable), ``"eager"`` (plain ops), ``"inductor"`` (fused kernels
            compiled on first use) or ``"triton"`` (CUDA kernels); see
            :mod:`spocu.torch._dispatch`. Every path gives the same values and
            keeps only ``x`` for backward.

    Shape:
        Input: :math:`(*)`; output: :math:`(*)`, same shape, dtype and device.
    """
    x = _as_float_input(x)
    tracing = torch.compiler.is_compiling() or _exporting()
    if any(isinstance(p, torch.Tensor) for p in (alpha, beta, gamma)):
        c = SPOCUParams(c=c).c  # validate c; tensors are the caller's (or the module's) job
        ref = x
        alpha, beta, gamma = (
            p if isinstance(p, torch.Tensor) else torch.tensor(float(p), dtype=ref.dtype, device=ref.device)
            for p in (alpha, beta, gamma)
        )
        # the fused learnable kernels are Inductor's (also on CUDA), whichever fused path was chosen
        fused = not tracing and resolve_backend(x, backend) != "eager"
        return spocu_tensor_params(x, alpha, beta, gamma, c, fused=fused)
    if tracing:
        return _traced_spocu(x, alpha, beta, gamma, c, backend)
    params = cached_params(alpha, beta, gamma, c)
    path = resolve_backend(x, backend)
    k = kernel_constants(params, x.dtype)
    if path == "eager":
        return _SPOCUFunction.apply(x, k)
    return _FusedSPOCUFunction.apply(x, k, _KERNELS[path])
