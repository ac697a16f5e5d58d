"""The float64 reference checks the tests share: they live in :mod:`spocu.testing` (so that
``benchmarks/gpu_check.py`` uses them without reaching into ``tests/``); re-exported here
for the tests that import ``reference_checks``, with the check of learnable SPOCU's parameter
gradients that only the tests use."""

from __future__ import annotations

import math

import numpy as np

from spocu.core import SPOCUParams, r_prime, reference_spocu_param_grads
from spocu.testing import (  # noqa: F401
    COMPUTE,
    EPS,
    MAX,
    PARAM_SETS,
    RTOL,
    assert_matches_reference,
    bounds,
    wide_inputs,
)


def assert_param_grads_match_reference(
    x, grads: dict, params: SPOCUParams, dtype: str, kink_exclusion: float = 1e-4
) -> None:
    """Assert per-element d s/d alpha, beta, gamma (upstream gradient 1; ``grads`` keyed by those names)
    at float64 ``x`` (held in ``dtype``) equal :func:`spocu.core.reference_spocu_param_grads`.

    The tolerances follow from those of s and s' (:func:`spocu.testing.bounds`), since
    d s/d alpha = s/alpha, d s/d gamma = -(x/gamma) s'(x) and d s/d beta = gamma s'(x) - alpha r'(beta)
    (the last cancels where the two terms meet, so its bound has the second term's rounding too).
    The gradients are computed and returned in the compute dtype; a reference beyond its range must
    come back as an infinity of its sign or saturated (at least max/1024, as the kernels stop there).
    The message counts the failing points and names the first eight.

    Example:
        >>> x = np.array([-1.0, 0.5, 3.0])
        >>> refs = dict(zip(("alpha", "beta", "gamma"), reference_spocu_param_grads(x)))
        >>> assert_param_grads_match_reference(x, refs, PARAM_SETS["default"], "float64")
        >>> assert_param_grads_match_reference(x, {**refs, "beta": -refs["beta"]}, PARAM_SETS["default"], "float64")
        Traceback (most recent call last):
        ...
        AssertionError: ...
    """
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        refs = dict(zip(("alpha", "beta", "gamma"), reference_spocu_param_grads(x, **params.as_dict())))
        atol_value, _ = bounds(params, x, dtype)
        atol_slope, _ = bounds(params, x, dtype, derivative=True)
    compute = COMPUTE[dtype]
    tolerance = {
        "alpha": atol_value / params.alpha,
        "beta": params.gamma * atol_slope + 16 * EPS[compute] * params.alpha * abs(float(r_prime(params.beta))),
        "gamma": np.abs(x / params.gamma) * atol_slope,
    }
    big = MAX[compute] / 1024
    # d/dbeta and d/dgamma jump where s' does, at x_hi (as assert_matches_reference, not judged right there)
    off_kink = np.ones(x.shape, bool)
    if math.isfinite(params.upper_bound):
        off_kink = np.abs(x - params.upper_bound) > kink_exclusion * max(1.0, abs(params.upper_bound))
    failures = []
    for name in ("alpha", "beta", "gamma"):
        got, ref = np.asarray(grads[name], dtype=np.float64), refs[name]
        assert got.shape == x.shape, f"d s/d {name} has shape {got.shape}, not {x.shape}"
        tol = tolerance[name] + RTOL[compute] * np.abs(ref)
        over = np.abs(ref) > big
        with np.errstate(invalid="ignore"):
            bad = np.where(over, ~((np.sign(got) == np.sign(ref)) & (np.abs(got) >= big)), ~(np.abs(got - ref) <= tol))
        if name != "alpha":
            bad &= off_kink
        if bad.any():
            shown = ", ".join(
                f"x={xi!r}: got {gi!r}, reference {ri!r} (tolerance {ti:.3g})"
                for xi, gi, ri, ti in list(zip(x[bad], got[bad], ref[bad], tol[bad]))[:8]
            )
            failures.append(f"d s/d {name}: {int(bad.sum())} of {x.size} points off ({dtype}): {shown}")
    assert not failures, "\n".join(failures)
