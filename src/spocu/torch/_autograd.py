"""The autograd formulas of fixed-parameter SPOCU, shared by every kernel and entry point.

:class:`SPOCUFunction` computes ``s(x)`` with a kernel module (``forward(x, k)``,
``backward(grad, x, k)``, see :mod:`spocu.torch._dispatch`) and saves only ``x``.
Its backward and its forward-mode derivative are :class:`SPOCUDerivative`
(``grad * s'(x)`` with the same kernel), whose own derivatives use ``s''`` in
plain ops, so gradients of any order work. Both are written in the
``setup_context`` form with ``jvp`` and ``vmap`` staticmethods, so they work under
``torch.func`` (``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``hessian``,
``vmap``), ``torch.autograd.forward_ad`` and ``torch.compile``.

Example:
    >>> import torch
    >>> from spocu.core import SPOCUParams
    >>> from spocu.torch import _eager
    >>> from spocu.torch._constants import kernel_constants
    >>> k = kernel_constants(SPOCUParams(), torch.float64)
    >>> x = torch.tensor([0.0, 1.5], dtype=torch.float64)
    >>> torch.func.jvp(lambda t: SPOCUFunction.apply(t, k, _eager), (x,), (torch.ones_like(x),))[1]
    tensor([ 1.3270, -0.0378], dtype=torch.float64)
"""

from __future__ import annotations

import torch

from spocu.torch import _eager
from spocu.torch._compat import dual_level_open
from spocu.torch._constants import in_dtype

__all__ = ["SPOCUDerivative", "SPOCUFunction", "apply_without_transforms", "batched", "derivative", "plain_apply"]


def batched(t: torch.Tensor, dim: int | None, batch_size: int) -> torch.Tensor:
    """``t`` with its vmapped dimension first (expanded if it has none)."""
    return t.movedim(dim, 0) if dim is not None else t.expand(batch_size, *t.shape)


def derivative(grad: torch.Tensor, x: torch.Tensor, k, kernels) -> torch.Tensor:
    """grad * s'(x), differentiable: the kernels' own differentiable form if they have one (the
    custom ops go through ``torch.ops.spocu.spocu_backward``), else :class:`SPOCUDerivative`."""
    own = getattr(kernels, "derivative", None)
    return own(grad, x) if own is not None else SPOCUDerivative.apply(grad, x, k, kernels)


class SPOCUFunction(torch.autograd.Function):
    """s(x) with a kernel module; saves only x."""

    @staticmethod
    def forward(x, k, kernels):
        return kernels.forward(x, k)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, k, kernels = inputs
        ctx.save_for_backward(x)  # the only tensor kept for backward: ReLU's memory
        if dual_level_open():  # (jvp is only ever asked for while one is open; saves ~1 us a call without)
            ctx.save_for_forward(x)
        ctx.k = k
        ctx.kernels = kernels

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        if not torch.is_grad_enabled():  # a plain backward (no create_graph): no graph to record
            return ctx.kernels.backward(grad_output, x, ctx.k), None, None
        return derivative(grad_output, x, ctx.k, ctx.kernels), None, None

    @staticmethod
    def jvp(ctx, x_tangent, _k, _kernels):
        (x,) = ctx.saved_tensors
        return derivative(x_tangent, x, ctx.k, ctx.kernels)

    @staticmethod
    def vmap(info, in_dims, x, k, kernels):
        # elementwise: the batch dimension is just one more dimension
        return SPOCUFunction.apply(x, k, kernels), in_dims[0]


def plain_apply(function: type[torch.autograd.Function]):
    """``function.apply`` without ``Function.apply``'s Python wrapper, which binds the arguments with
    ``inspect.signature`` on every call (~25 us for one argument, ~90 us for five) for setup_context-style
    Functions. Valid only where that wrapper would call it too: no torch.func transform active, no
    functorch-wrapped argument; all arguments positional."""
    return super(torch.autograd.Function, function).apply


#: :func:`plain_apply` of :class:`SPOCUFunction`
apply_without_transforms = plain_apply(SPOCUFunction)


class SPOCUDerivative(torch.autograd.Function):
    """grad * s'(x) with a kernel module; differentiable in grad (s') and in x (s'')."""

    @staticmethod
    def forward(grad, x, k, kernels):
        return kernels.backward(grad, x, k)

    @staticmethod
    def setup_context(ctx, inputs, output):
        grad, x, k, kernels = inputs
        ctx.save_for_backward(grad, x)
        ctx.save_for_forward(grad, x)
        ctx.k = k
        ctx.kernels = kernels

    @staticmethod
    def _curvature_term(scale: torch.Tensor, grad: torch.Tensor, x: torch.Tensor, k) -> torch.Tensor:
        """scale * grad * s''(x) in x's dtype (computed in the compute dtype)."""
        ctype = _eager.compute_dtype(x.dtype)
        return in_dtype(scale.to(ctype) * grad.to(ctype) * _eager.second_derivative(x, k), x.dtype)

    @staticmethod
    def backward(ctx, grad_grad):
        grad, x = ctx.saved_tensors
        d_grad = d_x = None
        if ctx.needs_input_grad[0]:
            d_grad = derivative(grad_grad, x, ctx.k, ctx.kernels)
        if ctx.needs_input_grad[1]:
            d_x = SPOCUDerivative._curvature_term(grad_grad, grad, x, ctx.k)
        return d_grad, d_x, None, None

    @staticmethod
    def jvp(ctx, grad_tangent, x_tangent, _k, _kernels):
        grad, x = ctx.saved_tensors
        out = None
        if grad_tangent is not None:
            out = derivative(grad_tangent, x, ctx.k, ctx.kernels)
        if x_tangent is not None:
            term = SPOCUDerivative._curvature_term(x_tangent, grad, x, ctx.k)
            out = term if out is None else out + term
        return out

    @staticmethod
    def vmap(info, in_dims, grad, x, k, kernels):
        grad, x = (batched(t, d, info.batch_size) for t, d in zip((grad, x), in_dims[:2]))
        return SPOCUDerivative.apply(grad, x, k, kernels), 0
