"""Independent computations the science tests compare against: mpmath quadrature of the
literal SPOCU formula (no scipy, no polynomial coefficients) and Monte Carlo."""

from __future__ import annotations

import math

import mpmath
import numpy as np

from spocu.core import reference_spocu


def mp_spocu(x, alpha, beta, gamma, c):
    """The paper's literal s(x) = α h(x/γ + β) − α h(β) in mpmath."""

    def h(u):
        if u < 0:
            return mpmath.mpf(0)
        if c != math.inf and u >= c:
            u = mpmath.mpf(c)
        return u**3 * (u**5 - 2 * u**4 + 2)

    return alpha * (h(x / gamma + beta) - h(mpmath.mpf(beta)))


def mp_normal_moments(alpha, beta, gamma, c, mean=0.0, variance=1.0, dps=25):
    """(E[s(z)], E[s(z)^2]) for z ~ N(mean, variance) by mpmath.quad split at the kinks."""
    with mpmath.workdps(dps):
        sd = mpmath.sqrt(variance)

        def pdf(x):
            return mpmath.npdf(x, mean, sd)

        lo = -gamma * beta
        points = [-mpmath.inf, lo] + ([gamma * (c - beta)] if c != math.inf else []) + [mpmath.inf]
        m1 = mpmath.quad(lambda x: mp_spocu(x, alpha, beta, gamma, c) * pdf(x), points)
        m2 = mpmath.quad(lambda x: mp_spocu(x, alpha, beta, gamma, c) ** 2 * pdf(x), points)
        return float(m1), float(m2)


def monte_carlo_moments(z: np.ndarray, params: dict) -> tuple[float, float, float, float]:
    """(mean, its standard error, second moment, its standard error) of the core reference s(z)."""
    s = reference_spocu(z, params["alpha"], params["beta"], params["gamma"], params["c"])
    n = z.size
    return float(s.mean()), float(s.std() / math.sqrt(n)), float((s**2).mean()), float((s**2).std() / math.sqrt(n))
