"""SPOCU as PyTorch custom operators: ``torch.ops.spocu.spocu`` and ``torch.ops.spocu.spocu_backward``.

Registered with :func:`torch.library.custom_op`, with fake (meta) implementations
for tracing and an autograd formula that saves only ``x``, so the ops work in
eager mode, under ``torch.compile`` (as opaque calls, zero graph breaks), with
``torch.func`` transforms of the forward and with :func:`torch.library.opcheck`.

``impl`` picks the kernel: ``"cpp"`` (the C++ CPU kernels of :mod:`spocu.torch._cpp`),
``"inductor"`` (fused, compiled by TorchInductor),
``"triton"`` (the hand-written Triton kernel), ``"eager"`` (plain ops) or
``"auto"`` (the C++ kernels on CPU once built, Triton on CUDA when installed, else plain ops).
The gradient of ``spocu_backward`` (double backward) uses plain differentiable
ops for the second derivative.

Example:
    >>> import torch
    >>> import spocu.torch
    >>> x = torch.tensor([-10.0, 0.0, 1.0], requires_grad=True)
    >>> y = torch.ops.spocu.spocu(x, 3.0937, 0.6653, 4.437, float("inf"), "eager")
    >>> y.detach()
    tensor([-1.5838,  0.0000,  1.2620])
"""

from __future__ import annotations

from functools import lru_cache

import torch

from spocu.core import SPOCUParams
from spocu.torch import _cpp, _eager, _inductor, _triton
from spocu.torch._constants import KernelConstants, kernel_constants
from spocu.torch._layout import is_dense, same_layout

__all__ = ["IMPLS", "spocu_op", "spocu_backward_op"]

IMPLS = ("auto", "cpp", "inductor", "triton", "eager")


@lru_cache(maxsize=256)
def _constants(alpha: float, beta: float, gamma: float, c: float, dtype: torch.dtype) -> KernelConstants:
    return kernel_constants(SPOCUParams(alpha, beta, gamma, c), dtype)


def _impl(impl: str, x: torch.Tensor) -> str:
    if impl not in IMPLS:
        raise ValueError(f"unknown SPOCU op impl {impl!r}; choose one of {', '.join(IMPLS)}")
    if impl != "auto":
        return impl
    if x.device.type == "cuda":
        return "triton" if _triton.available(x.device) else "eager"
    return "cpp" if x.device.type == "cpu" and x.dtype in _cpp.DTYPES and _cpp.ready() else "eager"


def _in_fake_layout(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` with the strides the fake implementations promise (those of ``torch.empty_like(x)``)."""
    if is_dense(x) and same_layout(y, x):
        return y
    return torch.empty_like(x).copy_(y)


@torch.library.custom_op("spocu::spocu", mutates_args=())
def spocu_op(x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float, impl: str = "auto") -> torch.Tensor:
    """SPOCU(x) with fixed parameters; output in ``torch.empty_like(x)``'s layout."""
    k = _constants(alpha, beta, gamma, c, x.dtype)
    path = _impl(impl, x)
    with torch.no_grad():
        if path == "cpp":
            return _cpp.forward(x, k)
        if path == "inductor":
            return _inductor.forward(x, k)
        if path == "triton":
            return _triton.forward(x, k)
        return _in_fake_layout(_eager.forward(x, k), x)


@spocu_op.register_fake
def _(x, alpha, beta, gamma, c, impl="auto"):
    return torch.empty_like(x)


@torch.library.custom_op("spocu::spocu_backward", mutates_args=())
def spocu_backward_op(
    grad: torch.Tensor, x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float, impl: str = "auto"
) -> torch.Tensor:
    """``grad * SPOCU'(x)``; output in ``torch.empty_like(x)``'s layout."""
    k = _constants(alpha, beta, gamma, c, x.dtype)
    path = _impl(impl, x)
    with torch.no_grad():
        if path == "cpp":
            return _cpp.backward(grad, x, k)
        if path == "inductor":
            return _inductor.backward(grad, x, k)
        if path == "triton":
            return _triton.backward(grad, x, k)
        return _in_fake_layout(_eager.backward(grad, x, k), x)


@spocu_backward_op.register_fake
def _(grad, x, alpha, beta, gamma, c, impl="auto"):
    return torch.empty_like(x)


def _setup_forward(ctx, inputs, output):
    x, *params = inputs
    ctx.save_for_backward(x)  # the only tensor kept for backward: ReLU's memory
    ctx.params = params


def _forward_grad(ctx, grad):
    (x,) = ctx.saved_tensors
    return torch.ops.spocu.spocu_backward(grad, x, *ctx.params), None, None, None, None, None


spocu_op.register_autograd(_forward_grad, setup_context=_setup_forward)


def _setup_backward(ctx, inputs, output):
    grad, x, *params = inputs
    ctx.save_for_backward(grad, x)
    ctx.params = params


def _backward_grad(ctx, grad_grad):
    grad, x, *params = (*ctx.saved_tensors, *ctx.params)
    alpha, beta, gamma, c, _ = params
    d_grad = d_x = None
    if ctx.needs_input_grad[0]:
        d_grad = torch.ops.spocu.spocu_backward(grad_grad, x, *params)
    if ctx.needs_input_grad[1]:
        k = _constants(alpha, beta, gamma, c, x.dtype)
        ctype = _eager.compute_dtype(x.dtype)
        d_x = (grad_grad.to(ctype) * grad.to(ctype) * _eager.second_derivative(x, k)).to(x.dtype)
    return d_grad, d_x, None, None, None, None, None


spocu_backward_op.register_autograd(_backward_grad, setup_context=_setup_backward)
