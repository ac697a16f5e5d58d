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

import math
import os
import sys
from functools import lru_cache

import torch

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, cached_params
from spocu.torch import _cpp, _dispatch, _eager, _node, _ops, _triton  # noqa: F401 -- _ops registers torch.ops.spocu.*
from spocu.torch._autograd import SPOCUFunction, apply_without_transforms
from spocu.torch._constants import KernelConstants, compute_dtype, kernel_constants
from spocu.torch._layout import is_plain
from spocu.torch._learnable import spocu_tensor_params, traced_forward

__all__ = ["spocu"]


def _exporting() -> bool:
    """True while ``torch.export`` or the ONNX exporter records: the graph must hold standard ops only.

    Under a plain ``torch.compile`` this is False: the TorchScript ONNX exporter does not run
    Dynamo, and the Dynamo ONNX exporter goes through ``torch.export``.
    """
    if _torch_export_running():
        return True
    return not torch.compiler.is_compiling() and _onnx_exporting()


def _torch_export_running() -> bool:
    """``torch.compiler.is_exporting()``, read from the flag it returns.

    Dynamo in torch 2.11 answers the call itself with True under a plain ``torch.compile``
    (seen on an H200 with torch 2.11.0+cu130), which sent compiled models down the export
    path; the module attribute is traced as its real value.
    """
    flag = getattr(torch.compiler, "_is_exporting_flag", None)
    return torch.compiler.is_exporting() if flag is None else bool(flag)


def _onnx_exporting() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without its ~3 us of imports on every eager call."""
    if "torch.onnx" not in sys.modules:  # no exporter is loaded, so none is running
        return False
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


try:  # os.environ's own store: ~0.05 us a lookup instead of ~1 us for `in os.environ`
    _ENVIRON_DATA, _ENV_KEY = os.environ._data, os.environ.encodekey(_dispatch.ENV_VAR)
except AttributeError:  # another Python's os module
    _ENVIRON_DATA, _ENV_KEY = os.environ, _dispatch.ENV_VAR

#: (validated constants, kernel module) by (alpha, beta, gamma, c, dtype, device type) for the
#: calls the fused kernels serve (C++ on CPU, Triton on CUDA): the common call skips validation
#: and dispatch (~1 us of checks instead of ~10-20)
_FAST_CALLS: dict[tuple, tuple[KernelConstants, object]] = {}


def _fast_path_possible(x: torch.Tensor, backend: str | None) -> bool:
    """The common eager call: default backend, no tracer, no environment override."""
    return (
        backend is None
        and _ENV_KEY not in _ENVIRON_DATA
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
        and not _exporting()
    )


def _learnable_node_takes(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c) -> bool:
    """A learnable C++ node can take this eager call as it is: CPU tensors, x of a dtype the kernels
    compute, one parameter count (1, or x's channels), a valid float c, no transform or wrapper.
    Anything else takes the general path, which validates, expands and explains."""
    if not (type(x) is torch.Tensor and type(c) is float and c >= 1.0 and x.is_cpu and x.dtype in _cpp.DTYPES):
        return False  # (c >= 1: also not NaN)
    count = alpha.numel()
    if not (beta.numel() == count == gamma.numel() and alpha.is_cpu and beta.is_cpu and gamma.is_cpu):
        return False
    if count != 1 and not (x.dim() >= 2 and x.shape[1] == count):
        return False
    return not _cpp.transforms_active() and is_plain(x, alpha, beta, gamma)


def _learnable_node_serves(x: torch.Tensor, alpha: torch.Tensor, beta, gamma, c, backend) -> bool:
    """The functional's call with tensor parameters goes straight to the C++ learnable node."""
    # compiling/tracing first: Dynamo reads it as a constant and traces nothing after it
    return (_fast_path_possible(x, backend) and _node.learnable_available() and type(beta) is torch.Tensor
            and type(gamma) is torch.Tensor and _learnable_node_takes(x, alpha, beta, gamma, c))  # fmt: skip


def learnable_module_call(x: torch.Tensor, raw_alpha: torch.Tensor, raw_beta: torch.Tensor, raw_gamma: torch.Tensor,
                          c: float) -> torch.Tensor | None:
    """A learnable :class:`spocu.torch.SPOCU`'s common call, from its raw weights, through one C++ node
    that also holds the softplus/sigmoid map (:func:`spocu.torch._node.apply_learnable_raw`); None when
    the call is not one it takes (the module then calls :func:`spocu` with its mapped parameters)."""
    if (_fast_path_possible(x, None) and _node.learnable_raw_available()
            and _learnable_node_takes(x, raw_alpha, raw_beta, raw_gamma, c)):  # fmt: skip
        return _node.apply_learnable_raw(x, raw_alpha, raw_beta, raw_gamma, c)
    return None


def _check_traced(alpha, beta, gamma, c) -> None:
    """The domain checks of :func:`spocu.core.validate_params` in comparisons only.

    ``torch.compile`` may pass parameters that change between calls as symbolic
    floats; comparisons on them become guards, where ``float()``/``math`` calls would not trace.
    """
    if not (0 < alpha < math.inf):
        raise ValueError(f"SPOCU parameter alpha={alpha} is out of range: alpha must be finite and > 0")
    if not (0 < beta < 1):
        raise ValueError(f"SPOCU parameter beta={beta} is out of range: beta must lie in the open interval (0, 1)")
    if not (0 < gamma < math.inf):
        raise ValueError(f"SPOCU parameter gamma={gamma} is out of range: gamma must be finite and > 0")
    _traced_c(c)


def _traced_c(c) -> float:
    """``c`` checked with comparisons only (a symbolic float under ``torch.compile(dynamic=True)``)."""
    c = math.inf if c is None else c
    if not (c >= 1):
        raise ValueError(f"SPOCU parameter c={c} is out of range: c must satisfy 1 <= c <= inf")
    return c


def _traced_spocu(x: torch.Tensor, alpha, beta, gamma, c, backend: str | None) -> torch.Tensor:
    """SPOCU while Dynamo or an exporter records: plain ops that the compiler can fuse, or an opaque custom op."""
    if _exporting():  # only standard ops in exported graphs; their autograd keeps s' = 0 at the kinks
        return _eager.differentiable_forward(x, kernel_constants(SPOCUParams(alpha, beta, gamma, c), x.dtype))
    path = _dispatch.traced_backend(backend)
    if path != "eager":
        return torch.ops.spocu.spocu(x, alpha, beta, gamma, math.inf if c is None else c, path)
    c = math.inf if c is None else c
    _check_traced(alpha, beta, gamma, c)
    # torch.compile passes floats that change between calls as symbolic floats, which the
    # fixed-coefficient kernels cannot take: the parameters become 0-d tensors of the graph
    # (Inductor fuses the result with the neighbouring layers)
    ctype = compute_dtype(x.dtype)
    alpha, beta, gamma = (torch.as_tensor(p, dtype=ctype, device=x.device) for p in (alpha, beta, gamma))
    return traced_forward(x, alpha, beta, gamma, c)


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
        alpha: the output scale α > 0: a float (validated, fixed) or a tensor with
            one element or one per channel (dim 1, as :class:`torch.nn.PReLU`), which
            makes it differentiable. Tensor values must lie in the domain; the module
            :class:`spocu.torch.SPOCU` keeps them there.
        beta: the shift β, 0 < β < 1, as ``alpha``.
        gamma: the input scale γ > 0, as ``alpha``.
        c: saturation point, ``1 <= c <= inf``.
        backend: ``"auto"`` (default; or the ``SPOCU_TORCH_BACKEND`` environment
            variable), ``"eager"`` (plain ops), ``"cpp"`` (C++ CPU kernels, built
            once per machine), ``"inductor"`` (fused kernels compiled on first
            use) or ``"triton"`` (CUDA kernels); see
            :mod:`spocu.torch._dispatch`. Every path gives the same values and
            keeps only ``x`` for backward.

    Shape:
        Input: :math:`(*)`; output: :math:`(*)`, same shape, dtype and device.
    """
    if type(x) is not torch.Tensor or not x.is_floating_point():
        x = _as_float_input(x)
    # the common call first: float parameters seen before, served by the fused kernels
    # (every other call takes the general path below, which fills _FAST_CALLS)
    if type(alpha) is float and type(beta) is float and type(gamma) is float and _fast_path_possible(x, backend):
        hit = _FAST_CALLS.get((alpha, beta, gamma, c, x.dtype, x.device.type))
        if hit is not None:
            k, kernels = hit
            if _cpp.transforms_active() or not is_plain(x):
                return SPOCUFunction.apply(x, k, kernels)
            if kernels is _cpp and _node.available():
                return _node.apply(x, k, alpha, beta, gamma, c)  # the C++ autograd node (~3 us without grad)
            if not (x.requires_grad and torch.is_grad_enabled()):
                return kernels.forward(x, k)  # nothing to record: no autograd.Function (~6 us)
            return apply_without_transforms(x, k, kernels)
    if type(alpha) is torch.Tensor and _learnable_node_serves(x, alpha, beta, gamma, c, backend):
        return _node.apply_learnable(x, alpha, beta, gamma, c)  # the learnable module's common call
    tracing = torch.compiler.is_compiling() or _exporting()
    if any(isinstance(p, torch.Tensor) for p in (alpha, beta, gamma)):
        # validate c (tensors are the caller's, or the module's, job); traced: comparisons only
        c = _traced_c(c) if tracing else SPOCUParams(c=c).c
        alpha, beta, gamma = (
            p if isinstance(p, torch.Tensor) else torch.tensor(float(p), dtype=x.dtype, device=x.device)
            for p in (alpha, beta, gamma)
        )
        path = "eager" if tracing else _dispatch.resolve_learnable(x, backend)
        return spocu_tensor_params(x, alpha, beta, gamma, c, path=path, traced=tracing)
    if tracing:
        return _traced_spocu(x, alpha, beta, gamma, c, backend)
    params = cached_params(alpha, beta, gamma, c)
    k = kernel_constants(params, x.dtype)
    kernels = _dispatch.resolve(x, backend)
    if (kernels is _cpp or kernels is _triton) and type(c) is float and len(_FAST_CALLS) < 1024 and _fast_path_possible(x, backend):
        _FAST_CALLS[(alpha, beta, gamma, c, x.dtype, x.device.type)] = (k, kernels)
    if not _cpp.transforms_active() and is_plain(x):
        if kernels is _cpp and _node.available():
            return _node.apply(x, k, params.alpha, params.beta, params.gamma, params.c)
        return apply_without_transforms(x, k, kernels)
    return SPOCUFunction.apply(x, k, kernels)

