"""SPOCU as PyTorch custom operators: ``torch.ops.spocu.spocu`` and ``torch.ops.spocu.spocu_backward``.

Defined with :class:`torch.library.Library`: one kernel for every device (the
kernel is picked by :func:`spocu.torch._dispatch.resolve`, like every other
entry point, which registers it with :func:`register_kernels`), a fake (meta) implementation for tracing, an autograd kernel and
a vmap rule. The autograd kernel applies the same formulas as the functional
path (:mod:`spocu.torch._autograd`, saving only ``x``), with this op (and
``spocu_backward``) as the kernel, so the ops have reverse mode to any order,
forward mode (``torch.autograd.forward_ad``, ``torch.func.jvp``/``jacfwd``) and
every ``torch.func`` transform; under ``torch.compile`` they stay opaque calls
(no graph break) and they pass :func:`torch.library.opcheck`.

``impl`` is the backend: ``"auto"``, ``"eager"``, ``"inductor"`` or ``"triton"``
(see :mod:`spocu.torch._dispatch`).

Example:
    >>> import torch
    >>> import spocu.torch
    >>> x = torch.tensor([-10.0, 0.0, 1.5])
    >>> torch.ops.spocu.spocu(x, 3.0937, 0.6653, 4.437, float("inf"), "eager")
    tensor([-1.5838,  0.0000,  1.5096])
    >>> torch.func.jvp(lambda t: torch.ops.spocu.spocu(t, 3.0937, 0.6653, 4.437, float("inf"), "eager"),
    ...                (x,), (torch.ones_like(x),))[1]
    tensor([ 0.0000,  1.3270, -0.0378])
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch

from spocu.core import SPOCUParams
from spocu.torch._autograd import SPOCUDerivative, SPOCUFunction, batched
from spocu.torch._compat import (
    below_autograd,
    forward_grad_enabled,
    functorch_active,
    register_vmap,
    single_level_autograd_function,
)
from spocu.torch._constants import (
    KernelConstants,
    compute_dtype,
    derive_constants,
    kernel_constants,
)
from spocu.torch._layout import is_dense, same_layout

__all__ = ["register_kernels", "spocu_op", "spocu_backward_op"]

_lib = torch.library.Library("spocu", "DEF")  # noqa: TID251 -- this module owns the namespace
_lib.define("spocu(Tensor x, float alpha, float beta, float gamma, float c, str impl='auto') -> Tensor")
_lib.define(
    "spocu_backward(Tensor grad, Tensor x, float alpha, float beta, float gamma, float c, str impl='auto') -> Tensor"
)


@lru_cache(maxsize=256)
def _constants(alpha: float, beta: float, gamma: float, c: float, dtype: torch.dtype) -> KernelConstants:
    return kernel_constants(SPOCUParams(alpha, beta, gamma, c), dtype)


def _in_fake_layout(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``y`` with the strides the fake implementations promise (those of ``torch.empty_like(x)``)."""
    if is_dense(x) and same_layout(y, x):
        return y
    return torch.empty_like(x).copy_(y)


# ----------------------------------------------------------------- the kernels (below autograd)

#: forward(x, k, impl) and backward(grad, x, k, impl), registered by the router (spocu.torch._dispatch)
_KERNELS: list = []


def register_kernels(forward, backward) -> None:
    """Set the functions that compute the ops (the router's choice of kernels)."""
    _KERNELS[:] = [forward, backward]


def spocu_op(x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float, impl: str = "auto") -> torch.Tensor:
    """SPOCU(x) with fixed parameters; output in ``torch.empty_like(x)``'s layout."""
    k = _constants(alpha, beta, gamma, c, x.dtype)
    with torch.no_grad():
        return _in_fake_layout(_KERNELS[0](x, k, impl), x)


def spocu_backward_op(
    grad: torch.Tensor, x: torch.Tensor, alpha: float, beta: float, gamma: float, c: float, impl: str = "auto"
) -> torch.Tensor:
    """``grad * SPOCU'(x)``; output in ``torch.empty_like(x)``'s layout."""
    k = _constants(alpha, beta, gamma, c, x.dtype)
    with torch.no_grad():
        return _in_fake_layout(_KERNELS[1](grad, x, k, impl), x)


_lib.impl("spocu", spocu_op, "CompositeExplicitAutograd")
_lib.impl("spocu_backward", spocu_backward_op, "CompositeExplicitAutograd")
torch.library.register_fake("spocu::spocu", lambda x, alpha, beta, gamma, c, impl="auto": torch.empty_like(x), lib=_lib)
torch.library.register_fake(
    "spocu::spocu_backward", lambda grad, x, alpha, beta, gamma, c, impl="auto": torch.empty_like(x), lib=_lib
)


# ----------------------------------------------------------------- autograd, forward AD, vmap


@contextmanager
def _below_autograd():
    """Run the op's kernel below this level's autograd.

    Under ``torch.func`` the call continues at the next (outer) transform level,
    which must still record: an autograd Function's forward runs with gradients
    off, so they are switched back on, as ``torch.func`` does for autograd Functions.
    """
    with below_autograd():
        if not functorch_active():
            yield
            return
        with torch.enable_grad(), forward_grad_enabled(True):
            yield


@dataclass(frozen=True)
class _OpKernels:
    """The ops themselves (called below autograd) as the kernel module of :mod:`spocu.torch._autograd`."""

    alpha: float
    beta: float
    gamma: float
    c: float
    impl: str

    def _params(self) -> tuple:
        return self.alpha, self.beta, self.gamma, self.c, self.impl

    def forward(self, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
        with _below_autograd():
            return torch.ops.spocu.spocu.default(x, *self._params())

    def backward(self, grad: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
        with _below_autograd():
            return torch.ops.spocu.spocu_backward.default(grad, x, *self._params())

    def derivative(self, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """grad * s'(x) through the op's own autograd (for gradients of any order)."""
        return torch.ops.spocu.spocu_backward.default(grad, x, *self._params())


def _apply(function: type[torch.autograd.Function], *args):
    """``function.apply`` from inside an operator's autograd kernel.

    Under ``torch.func`` transforms the dispatcher has already unwrapped the
    tensors to this transform's level, so the Function is applied at that level
    (what ``torch.func`` itself does for autograd Functions).
    """
    if functorch_active():
        with single_level_autograd_function():
            return super(torch.autograd.Function, function).apply(*args)
    return function.apply(*args)


def _op_constants(x: torch.Tensor, alpha, beta, gamma, c) -> KernelConstants:
    """The constants for s'' (double backward, forward mode); plain arithmetic, so symbolic floats work too."""
    if all(isinstance(p, float) for p in (alpha, beta, gamma, c)):
        return _constants(alpha, beta, gamma, c, x.dtype)
    return derive_constants(alpha, beta, gamma, c, torch.finfo(compute_dtype(x.dtype)).max)


def _spocu_autograd(x, alpha, beta, gamma, c, impl="auto"):
    kernels = _OpKernels(alpha, beta, gamma, c, impl)
    return _apply(SPOCUFunction, x, _op_constants(x, alpha, beta, gamma, c), kernels)


def _spocu_backward_autograd(grad, x, alpha, beta, gamma, c, impl="auto"):
    kernels = _OpKernels(alpha, beta, gamma, c, impl)
    return _apply(SPOCUDerivative, grad, x, _op_constants(x, alpha, beta, gamma, c), kernels)


_lib.impl("spocu", _spocu_autograd, "Autograd")
_lib.impl("spocu_backward", _spocu_backward_autograd, "Autograd")


def _spocu_vmap(info, in_dims, x, alpha, beta, gamma, c, impl="auto"):
    return torch.ops.spocu.spocu(x, alpha, beta, gamma, c, impl), in_dims[0]  # elementwise


def _spocu_backward_vmap(info, in_dims, grad, x, alpha, beta, gamma, c, impl="auto"):
    grad, x = (batched(t, d, info.batch_size) for t, d in zip((grad, x), in_dims[:2]))
    return torch.ops.spocu.spocu_backward(grad, x, alpha, beta, gamma, c, impl), 0


register_vmap("spocu::spocu", _spocu_vmap, _lib)
register_vmap("spocu::spocu_backward", _spocu_backward_vmap, _lib)
