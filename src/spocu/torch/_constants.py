r"""The numbers every SPOCU kernel needs, derived once per (parameters, compute dtype).

On the active piece :math:`x_{lo} < x < x_{hi}` SPOCU is :math:`s(x) = \sum_{k=1}^8 e_k x^k`
(:attr:`spocu.core.SPOCUParams.x_coefficients`), so every path computes

* forward: :math:`s(x) = P(\mathrm{clamp}(x, x_{lo}, x_{hi}))`,
* backward: :math:`s'(x) = P'(\mathrm{clamp}(x, x_{lo}, x_{cap}))` where
  :math:`x_{lo} < x < x_{hi}`, else 0, with :math:`x_{cap}` the largest x where
  :math:`P'` cannot overflow the compute dtype (so a finite x never gives ``inf * 0``),
* double backward: :math:`s''(x) = P''(\mathrm{clamp}(x, x_{lo}, x_{cap}))` on the same piece.

Example:
    >>> import torch
    >>> from spocu.core import SPOCUParams
    >>> k = kernel_constants(SPOCUParams(c=1.0), torch.float32)
    >>> k.lo < 0 < k.hi, len(k.value), len(k.slope), len(k.curvature)
    (True, 8, 8, 7)
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch

from spocu.core import SPOCUParams

__all__ = ["KernelConstants", "compute_dtype", "kernel_constants"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (opmath); float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class KernelConstants(NamedTuple):
    """Plain floats, so tracers (Dynamo, export) treat them as constants."""

    lo: float  #: x_lo = -gamma * beta
    hi: float  #: x_hi = gamma * (c - beta), inf for c = inf
    cap: float  #: where the backward clamps x (<= hi)
    value: tuple[float, ...]  #: e_1..e_8 (s = x * sum_k value[k] x^k)
    slope: tuple[float, ...]  #: coefficients of s', lowest power first
    curvature: tuple[float, ...]  #: coefficients of s'', lowest power first

    @property
    def bounded(self) -> bool:
        """True when c is finite (an upper constant piece exists)."""
        return math.isfinite(self.hi)

    def forward_table(self) -> tuple[float, ...]:
        """[lo, hi, e_1..e_8]: the layout the fused forward kernels read."""
        return (self.lo, self.hi, *self.value)

    def backward_table(self) -> tuple[float, ...]:
        """[lo, hi, cap, s'_0..s'_7]: the layout the fused backward kernels read."""
        return (self.lo, self.hi, self.cap, *self.slope)


@lru_cache(maxsize=512)
def kernel_constants(params: SPOCUParams, dtype: torch.dtype) -> KernelConstants:
    """Constants for ``params`` computed in ``compute_dtype(dtype)``."""
    ctype = compute_dtype(dtype)
    slope = params.x_derivative_coefficients
    return KernelConstants(
        lo=params.lower_bound,
        hi=params.upper_bound,
        cap=params.derivative_safe_bound(torch.finfo(ctype).max),
        value=tuple(params.x_coefficients),
        slope=tuple(slope),
        curvature=tuple(k * a for k, a in enumerate(slope) if k > 0),
    )
