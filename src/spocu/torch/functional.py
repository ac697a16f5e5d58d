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

import os
import sys
from functools import lru_cache

import torch

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, cached_params
from spocu.torch import _cpp, _eager, _inductor, _ops, _triton  # noqa: F401 -- _ops registers torch.ops.spocu.*
from spocu.torch._constants import KernelConstants, kernel_constants
from spocu.torch._dispatch import ENV_VAR, assume_constant_result, resolve_backend, traced_backend
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


_KERNELS = {"cpp": _cpp, "inductor": _inductor, "triton": _triton}

try:  # os.environ's own store: ~0.05 us a lookup instead of ~1 us for `in os.environ`
    _ENVIRON_DATA, _ENV_KEY = os.environ._data, os.environ.encodekey(ENV_VAR)
except AttributeError:  # another Python's os module
    _ENVIRON_DATA, _ENV_KEY = os.environ, ENV_VAR


def _backend_env_set() -> bool:
    return _ENV_KEY in _ENVIRON_DATA


#: validated constants by (alpha, beta, gamma, c, dtype) for calls the C++ kernels serve
_CPP_CONSTANTS: dict[tuple, KernelConstants] = {}


@assume_constant_result
def _traced_constants(alpha: float, beta: float, gamma: float, c: float, dtype: torch.dtype) -> KernelConstants:
    """Run once at trace time: the tracer sees the result as constants (no parameter code in the graph)."""
    return kernel_constants(SPOCUParams(alpha, beta, gamma, c), dtype)


def _onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without its ~3 us of imports on every call."""
    if "torch.onnx" not in sys.modules:  # no exporter is loaded, so none is running
        return False
    if torch.compiler.is_compiling():  # what Dynamo knows how to trace
        return torch.onnx.is_in_onnx_export()
    flags = _onnx_flags()
    return flags() if flags is not None else torch.onnx.is_in_onnx_export()


@lru_cache(maxsize=1)
def _onnx_flags():
    """The flags ``torch.onnx.is_in_onnx_export`` reads, or None where torch keeps them elsewhere."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:
        return None
    if not hasattr(_flags, "_is_onnx_exporting") or not hasattr(GLOBALS, "in_onnx_export"):
        return None
    return lambda: bool(GLOBALS.in_onnx_export or _flags._is_onnx_exporting)


def _exporting() -> bool:
    return torch.compiler.is_exporting() or torch.jit.is_tracing() or _onnx_exporting()


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
    if type(x) is not torch.Tensor or not x.is_floating_point():
        x = _as_float_input(x)
    tracing = torch.compiler.is_compiling() or _exporting()
    # the common call: float parameters, eager mode, default backend, a CPU tensor the C++ kernels
    # serve; the constants come from one dict lookup (filled below the first time)
    if (
        not tracing
        and type(alpha) is float
        and type(beta) is float
        and type(gamma) is float
        and backend is None
        and x.is_cpu
        and _cpp._lib is not None
        and not _backend_env_set()
    ):
        k = _CPP_CONSTANTS.get((alpha, beta, gamma, c, x.dtype))
        if k is not None:
            if not (x.requires_grad and torch.is_grad_enabled()) and not _cpp.transforms_active():
                return _cpp.forward(x, k)  # nothing to record: skip the autograd.Function (~6 us)
            return _FusedSPOCUFunction.apply(x, k, _cpp)
    if any(isinstance(p, torch.Tensor) for p in (alpha, beta, gamma)):
        c = SPOCUParams(c=c).c  # validate c; tensors are the caller's (or the module's) job
        ref = x
        alpha, beta, gamma = (
            p if isinstance(p, torch.Tensor) else torch.tensor(float(p), dtype=ref.dtype, device=ref.device)
            for p in (alpha, beta, gamma)
        )
        # fused learnable kernels: the C++ ones for "cpp", Inductor's for the other fused paths (also CUDA)
        path = "eager" if tracing else resolve_backend(x, backend)
        return spocu_tensor_params(x, alpha, beta, gamma, c, path=path)
    if tracing:
        return _traced_spocu(x, alpha, beta, gamma, c, backend)
    params = cached_params(alpha, beta, gamma, c)
    path = resolve_backend(x, backend)
    k = kernel_constants(params, x.dtype)
    if path == "cpp" and backend is None and type(c) is float and len(_CPP_CONSTANTS) < 1024:
        _CPP_CONSTANTS[(alpha, beta, gamma, c, x.dtype)] = k
    if path == "eager":
        return _SPOCUFunction.apply(x, k)
    return _FusedSPOCUFunction.apply(x, k, _KERNELS[path])
