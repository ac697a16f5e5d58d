r"""The numbers every SPOCU kernel needs, derived in one place per (parameters, compute dtype).

On the active piece :math:`x_{lo} < x < x_{hi}` SPOCU is :math:`s(x) = \sum_{k=1}^8 e_k x^k`
with :math:`e_k = \alpha\, d_k(\beta) / \gamma^k` (:func:`spocu.core.shifted_coefficients`),
so every path computes

* forward: :math:`s(x) = P(\mathrm{clamp}(x, x_{lo}, x_{hi}))`,
* backward: :math:`s'(x) = P'(\mathrm{clamp}(x, x_{lo}, x_{cap}))` where
  :math:`x_{lo} < x < x_{hi}`, else 0 (so :math:`s' = 0` exactly at both kinks),
  with :math:`x_{cap}` the x where the leading term of :math:`P'` reaches 1/16 of
  the compute dtype's largest value (so a finite x never gives ``inf * 0``),
* double backward: :math:`s''(x) = P''(\mathrm{clamp}(x, x_{lo}, x_{cap}))` on the same piece.

:func:`derive_constants` is plain arithmetic, so it also runs on the symbolic
floats ``torch.compile`` passes for parameters that change between calls.

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
from typing import Any, NamedTuple

import torch

from spocu.core import SPOCUParams, shifted_coefficients

__all__ = ["KernelConstants", "compute_dtype", "derive_constants", "in_dtype", "kernel_constants"]

#: P' is capped where its leading term reaches this fraction of the dtype's maximum
_CAP_HEADROOM = 1.0 / 16.0


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float16/bfloat16 are computed in float32 (opmath); float32/float64 as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def in_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``y.to(dtype)``, but ``y`` itself (not a no-op alias of it) when it already has that dtype.

    What an ``autograd.Function.forward`` returns must not be a no-op ``.to`` of one of its
    own intermediates: torch 2.11's Dynamo then lists the intermediate and the alias as
    two outputs of one tensor and sends the incoming gradient to the wrong slot, so every
    layer before SPOCU got a zero gradient under ``torch.compile`` (pytorch/pytorch#180642,
    same mechanism; found with torch 2.11.0 on CPU and CUDA, correct in 2.13).
    """
    return y if y.dtype == dtype else y.to(dtype)


class KernelConstants(NamedTuple):
    """Plain floats (or, while ``torch.compile`` traces, symbolic floats)."""

    lo: Any  #: x_lo = -gamma * beta
    hi: Any  #: x_hi = gamma * (c - beta), inf for c = inf
    cap: Any  #: where the backward clamps x (<= hi)
    value: tuple  #: e_1..e_8 (s = x * sum_k value[k] x^k)
    slope: tuple  #: coefficients of s', lowest power first
    curvature: tuple  #: coefficients of s'', lowest power first
    bounded: bool  #: True when c is finite (an upper constant piece exists)

    def forward_table(self) -> tuple[float, ...]:
        """[lo, hi, e_1..e_8]: the layout the fused forward kernels read."""
        return (self.lo, self.hi, *self.value)

    def backward_table(self) -> tuple[float, ...]:
        """[lo, hi, cap, s'_0..s'_7]: the layout the fused backward kernels read."""
        return (self.lo, self.hi, self.cap, *self.slope)


def derive_constants(alpha: Any, beta: Any, gamma: Any, c: Any, max_value: float) -> KernelConstants:
    """The kernel constants in plain arithmetic (no ``**`` overflow, no math calls on the parameters).

    Powers of 1/gamma are built by repeated multiplication, so a huge gamma
    underflows to 0 instead of raising :class:`OverflowError`.

    >>> k = derive_constants(1.0, 0.5, 2.0, 1.5, 1e300)
    >>> k.lo, k.hi
    (-1.0, 2.0)
    """
    bounded = c != math.inf
    inv_gamma = 1.0 / gamma
    value, scale = [], alpha
    for d_k in shifted_coefficients(beta):
        scale = scale * inv_gamma
        value.append(scale * d_k)
    slope = [(k + 1) * e for k, e in enumerate(value)]
    lo = -gamma * beta
    hi = gamma * (c - beta) if bounded else math.inf
    cap = hi
    if not bounded:
        # the largest x whose leading (dominant) term of P' stays below max/16; beyond it s' is
        # evaluated at cap (still huge) rather than overflowing into inf * 0 = NaN
        for degree in range(len(slope) - 1, 0, -1):
            if slope[degree] != 0:
                root = 1.0 / degree  # two roots, so that max_value / slope cannot overflow
                cap = (_CAP_HEADROOM * max_value) ** root / abs(slope[degree]) ** root
                break
    return KernelConstants(
        lo=lo,
        hi=hi,
        cap=cap,
        value=tuple(value),
        slope=tuple(slope),
        curvature=tuple(k * a for k, a in enumerate(slope) if k > 0),
        bounded=bounded,
    )


@lru_cache(maxsize=512)
def kernel_constants(params: SPOCUParams, dtype: torch.dtype) -> KernelConstants:
    """Constants for ``params`` in ``compute_dtype(dtype)``.

    Raises:
        ValueError: when alpha/gamma put a coefficient or a constant piece of SPOCU
            beyond what the compute dtype can hold (e.g. alpha=1e308 with float32,
            gamma=1e-300): naming the parameters and the dtype.
    """
    ctype = compute_dtype(dtype)
    limit = torch.finfo(ctype).max
    k = derive_constants(params.alpha, params.beta, params.gamma, params.c, limit)
    if k.cap > limit:  # s' cannot overflow below the dtype's largest number: no cap needed
        k = k._replace(cap=math.inf)
    # every coefficient, and every Horner term at the lower kink (e_k x_lo^k = alpha d_k (-beta)^k),
    # must fit the compute dtype, else the sum turns into inf - inf = NaN
    at_kink = [params.alpha * abs(d_k) for d_k in shifted_coefficients(params.beta)]
    worst = max([*at_kink, *map(abs, k.slope)])
    # ... and the kinks themselves must be numbers of the compute dtype
    kinks = [abs(k.lo), abs(k.hi) if k.bounded else 0.0]
    if not (worst * 8.0 < limit and max(kinks) <= limit):  # 8 terms; also catches inf and NaN
        raise ValueError(
            f"SPOCU parameters alpha={params.alpha!r}, gamma={params.gamma!r} (beta={params.beta!r}) are out of "
            f"the range supported for {str(ctype).removeprefix('torch.')} computation: the polynomial "
            f"coefficients alpha*d_k(beta)/gamma**k of SPOCU must stay below {limit:.3g}/8 "
            f"(largest here {worst:.3g}) and the kinks -gamma*beta, gamma*(c-beta) must be finite there "
            f"(here {k.lo:.3g}, {k.hi:.3g}); use a smaller alpha, a gamma closer to 1, or float64 inputs"
        )
    return k
