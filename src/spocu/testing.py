"""Checks of any SPOCU implementation against the float64 reference (as :mod:`torch.testing` is for torch).

The tests of every framework and ``benchmarks/gpu_check.py`` share these:

- :func:`assert_matches_reference` -- an implementation's s(x) or s'(x) at float64 inputs
  against :func:`spocu.core.reference_spocu` / :func:`~spocu.core.reference_spocu_grad`;
- :func:`wide_inputs` -- inputs over the whole useful range of a dtype;
- :data:`PARAM_SETS` -- three parameter sets (the defaults, c = 1, and a bounded non-default one).

Tolerances come from the error analysis of evaluating a degree-8 polynomial in
floating point: Horner's method has error <= 2n*eps*sum_k |e_k||x|^k (n = 8), so
besides a relative bound we allow that absolute bound, which only matters
where SPOCU is ill-conditioned (near its zeros, where a relative error has
no meaning). Where the function is well conditioned the relative bound alone
is asserted, so a loose implementation cannot hide behind the absolute term.

Example:
    >>> import numpy as np
    >>> from spocu.core import reference_spocu
    >>> x = wide_inputs("float32", PARAM_SETS["default"])
    >>> with np.errstate(over="ignore"):
    ...     y = reference_spocu(x).astype(np.float32)  # correctly rounded: passes
    >>> assert_matches_reference(x, y, PARAM_SETS["default"], "float32")
    >>> assert_matches_reference(x, y * np.float32(1.001), PARAM_SETS["default"], "float32")
    Traceback (most recent call last):
    ...
    AssertionError: ...
"""

from __future__ import annotations

import math

import numpy as np

from spocu.core import REFERENCE_EPS, SPOCUParams, r, reference_spocu, reference_spocu_grad

__all__ = ["assert_matches_reference", "wide_inputs", "bounds", "PARAM_SETS", "EPS", "RTOL", "COMPUTE", "MAX"]

EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-8, "float16": 2.0**-11}
#: relative error bounds on well-conditioned points, by output dtype
RTOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2.0**-8, "float16": 2.0**-11}
#: the compute dtype of each input dtype (half types run in float32 inside)
COMPUTE = {"float64": "float64", "float32": "float32", "bfloat16": "float32", "float16": "float32"}

MAX = {
    "float64": 1.7976931348623157e308,
    "float32": 3.4028234663852886e38,
    "bfloat16": 3.3895313892515355e38,
    "float16": 65504.0,
}

PARAM_SETS = {
    "default": SPOCUParams(),
    "c1": SPOCUParams(c=1.0),
    "c2": SPOCUParams(alpha=2.0, beta=0.3, gamma=1.5, c=2.0),
}


def _abs_poly(params: SPOCUParams, x: np.ndarray, derivative: bool) -> np.ndarray:
    coefficients = params.x_derivative_coefficients if derivative else (0.0,) + params.x_coefficients
    xc = np.clip(x, params.lower_bound, params.upper_bound)
    with np.errstate(over="ignore"):
        return sum(abs(a) * np.abs(xc) ** k for k, a in enumerate(coefficients))


def bounds(params: SPOCUParams, x: np.ndarray, dtype: str, derivative: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(absolute tolerance per point, mask of well-conditioned points)."""
    ref = (reference_spocu_grad if derivative else reference_spocu)(x, **params.as_dict())
    scale = _abs_poly(params, x, derivative)
    # the reference's own rounding: the literal form cancels alpha*r(u) - alpha*r(beta)
    u = np.clip(x / params.gamma + params.beta, 0.0, params.c)
    with np.errstate(over="ignore"):
        own = params.alpha * (u**8 + 2 * u**7 + 2 * u**3 + (0.0 if derivative else float(r(params.beta))))
    own_error = 8 * REFERENCE_EPS * own
    atol = 16 * EPS[COMPUTE[dtype]] * scale + RTOL[dtype] * np.abs(ref) + own_error
    well_conditioned = (scale <= 4 * np.abs(ref)) & (own_error <= 1e-2 * RTOL[dtype] * np.abs(ref))
    return atol, well_conditioned


def assert_matches_reference(
    x, y, params: SPOCUParams, dtype: str, derivative: bool = False, kink_exclusion: float = 1e-4
) -> None:
    """Assert ``y`` (an implementation's s or s' at float64 ``x``) equals the reference."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ref = (reference_spocu_grad if derivative else reference_spocu)(x, **params.as_dict())
    keep = np.ones(x.shape, bool)
    if derivative and math.isfinite(params.upper_bound):  # s' jumps at x_hi
        keep &= np.abs(x - params.upper_bound) > kink_exclusion * max(1.0, abs(params.upper_bound))
    assert np.array_equal(np.isnan(y[keep]), np.isnan(ref[keep])), "NaN pattern differs from the reference"
    # beyond the dtype's range the right answer is an infinity of the same sign
    overflow = keep & (np.abs(ref) > MAX[dtype] * (1 + 2 * EPS[dtype]))
    assert (np.isinf(y[overflow]) & (np.sign(y[overflow]) == np.sign(ref[overflow]))).all(), "overflow is not inf"
    finite = np.isfinite(ref) & keep & ~overflow & (np.abs(ref) < MAX[dtype] * (1 - 2 * EPS[dtype]))
    atol, well = bounds(params, x[finite], dtype, derivative)
    err = np.abs(y[finite] - ref[finite])
    bad = err > atol
    if bad.any():
        i = np.argmax(err - atol)
        raise AssertionError(
            f"{int(bad.sum())} of {int(finite.sum())} points off the reference ({dtype}, "
            f"{'grad' if derivative else 'value'}); worst at x={x[finite][i]!r}: got {y[finite][i]!r}, "
            f"reference {ref[finite][i]!r}, tolerance {atol[i]:.3g}"
        )
    rel = err[well] / np.maximum(np.abs(ref[finite][well]), np.finfo(np.float64).tiny)
    nonzero = np.abs(ref[finite][well]) > 0
    assert (rel[nonzero] <= RTOL[dtype] * 4).all(), (
        f"relative error {rel[nonzero].max():.3g} on well-conditioned points exceeds {RTOL[dtype] * 4:.3g}"
    )


def wide_inputs(dtype: str, params: SPOCUParams) -> np.ndarray:
    """Values over the whole useful range of ``dtype``: both flat pieces, the active
    piece densely, tiny magnitudes, and large ones up to where s overflows."""
    top = {"float64": 1e30, "float32": 2e5, "bfloat16": 2e5, "float16": 13.0}[dtype]
    dense = np.linspace(params.lower_bound - 1, min(params.upper_bound + 1, 40.0), 4001)
    mags = np.logspace(-30 if dtype in ("float64", "float32") else -4, np.log10(top), 600)
    x = np.concatenate([dense, mags, -mags, [0.0, params.lower_bound, -1e4]])
    if dtype == "float16":
        x = x[np.abs(x) < 6e4]
    return x
