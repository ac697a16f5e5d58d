r"""The one home of SPOCU's mathematics: parameters, polynomial coefficients and
the float64 NumPy reference that every framework adapter is tested against.

SPOCU (scaled polynomial constant unit; Kiseľák et al., *Neural Computing and
Applications* 33, 2021, with its correction doi:10.1007/s00521-020-05412-6):

.. math::

    s(x) = \alpha\,h\!\left(\frac{x}{\gamma} + \beta\right) - \alpha\,h(\beta),
    \qquad
    h(u) = \begin{cases} 0 & u < 0 \\ r(u) & 0 \le u < c \\ r(c) & u \ge c \end{cases},
    \qquad r(u) = u^3(u^5 - 2u^4 + 2) = u^8 - 2u^7 + 2u^3.

Domain: :math:`\alpha > 0`, :math:`0 < \beta < 1`, :math:`\gamma > 0`,
:math:`1 \le c \le \infty` (``c = inf``: no upper constant piece).

Derivative (the convention at the kink :math:`u = c` is :math:`h'(c) = 0`):

.. math::

    s'(x) = \frac{\alpha}{\gamma} h'\!\left(\frac{x}{\gamma} + \beta\right),\qquad
    h'(u) = r'(u) = 8u^7 - 14u^6 + 6u^2 \text{ on } [0, c),\ 0 \text{ elsewhere}.

Examples:
    >>> from spocu.core import reference_spocu
    >>> float(reference_spocu(0.0))
    0.0
    >>> round(float(reference_spocu(5.0)), 5)
    -4.14656
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_GAMMA",
    "DEFAULT_C",
    "R_COEFFICIENTS",
    "R_PRIME_COEFFICIENTS",
    "R_SECOND_COEFFICIENTS",
    "SPOCUParams",
    "validate_params",
    "r",
    "r_prime",
    "r_second",
    "h",
    "h_prime",
    "reference_spocu",
    "REFERENCE_EPS",
    "reference_spocu_grad",
    "reference_spocu_grad2",
    "shifted_coefficients",
    "SHIFTED_COEFFICIENT_POLYNOMIALS",
    "cached_params",
    "COEFFICIENT_RANGE",
    "supported_gamma_range",
    "check_kernel_range",
    "cached_kernel_params",
    "reference_spocu_param_grads",
    "LEARNABLE_FLOOR",
    "LEARNABLE_MARGIN",
    "learnable_partial_cap",
    "learnable_positive",
    "learnable_unit",
    "learnable_to_params",
    "params_to_learnable",
]

#: Defaults of the original ``spocu`` 0.0.1 package and of the seed experiment.
DEFAULT_ALPHA = 3.0937
DEFAULT_BETA = 0.6653
DEFAULT_GAMMA = 4.437
DEFAULT_C = math.inf

#: Coefficients of r(u) = u^8 - 2u^7 + 2u^3, lowest power first (index = power).
R_COEFFICIENTS = (0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, -2.0, 1.0)
#: r'(u) = 8u^7 - 14u^6 + 6u^2, lowest power first.
R_PRIME_COEFFICIENTS = (0.0, 0.0, 6.0, 0.0, 0.0, 0.0, -14.0, 8.0)
#: r''(u) = 56u^6 - 84u^5 + 12u, lowest power first.
R_SECOND_COEFFICIENTS = (0.0, 12.0, 0.0, 0.0, 0.0, -84.0, 56.0)


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"SPOCU parameter {name} must be a real number, got a bool ({value!r})")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"SPOCU parameter {name} must be a real number, got {value!r}") from None


def validate_params(
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    c: float | None = DEFAULT_C,
) -> tuple[float, float, float, float]:
    """Check SPOCU's parameters against the paper's domain and return them as floats.

    Domain: ``alpha > 0``, ``0 < beta < 1``, ``gamma > 0``, ``1 <= c <= inf``.
    ``c=None`` is accepted as ``inf`` (no upper constant piece).

    Raises:
        ValueError: naming the parameter, its value and the allowed range.
        TypeError: when a value is not a real number.

    Examples:
        >>> validate_params(1.0, 0.5, 2.0, None)
        (1.0, 0.5, 2.0, inf)
    """
    a = _as_float("alpha", alpha)
    b = _as_float("beta", beta)
    g = _as_float("gamma", gamma)
    cc = math.inf if c is None else _as_float("c", c)
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"SPOCU parameter alpha={a!r} is out of range: alpha must be finite and > 0")
    if not (0.0 < b < 1.0):  # also rejects NaN
        raise ValueError(f"SPOCU parameter beta={b!r} is out of range: beta must lie in the open interval (0, 1)")
    if not (math.isfinite(g) and g > 0):
        raise ValueError(f"SPOCU parameter gamma={g!r} is out of range: gamma must be finite and > 0")
    if not (cc >= 1.0):  # also rejects NaN; +inf is allowed
        raise ValueError(f"SPOCU parameter c={cc!r} is out of range: c must satisfy 1 <= c <= inf")
    return a, b, g, cc


#: The fixed-parameter kernels of every framework compute SPOCU as the polynomial
#: sum_k e_k x^k with e_k = alpha * d_k(beta) / gamma^k (k = 1..8), holding e_k in
#: float32 for float32 and half inputs. So alpha and every alpha / gamma^k must lie
#: in this range (well inside float32's normal numbers; the margin covers |d_k| <= 70
#: and rounding): outside it a coefficient would overflow to inf (NaN outputs) or
#: flush to 0 (silently wrong values), so :class:`SPOCUParams` refuses it.
COEFFICIENT_RANGE = (1e-30, 1e30)


def supported_gamma_range(alpha: float) -> tuple[float, float]:
    r"""The gammas that fixed-parameter SPOCU supports for this alpha (alpha in :data:`COEFFICIENT_RANGE`).

    :math:`\alpha/\gamma^k \in [10^{-30}, 10^{30}]` for :math:`k = 1..8`, i.e.
    :math:`\gamma \in [\max_k (\alpha/10^{30})^{1/k}, \min_k (\alpha/10^{-30})^{1/k}]`.

    Examples:
        >>> lo, hi = supported_gamma_range(3.0937)
        >>> round(lo, 6), round(hi)
        (0.000205, 6476)
    """
    log_alpha = math.log(alpha)
    low, high = (math.log(v) for v in COEFFICIENT_RANGE)
    lo = max((log_alpha - high) / k for k in range(1, 9))
    hi = min((log_alpha - low) / k for k in range(1, 9))
    return math.exp(lo), math.exp(hi)


def check_kernel_range(alpha: float, gamma: float) -> None:
    """Raise ``ValueError`` unless fixed-parameter kernels that hold their coefficients in float32 can compute SPOCU.

    The domain itself is :func:`validate_params`'s; this is the narrower range of
    :data:`COEFFICIENT_RANGE` that the Keras and JAX kernels (and ``spocu compare``, which
    trains in float32) need. The float64 science tools and PyTorch's dtype-aware kernels
    do not apply it.

    Examples:
        >>> check_kernel_range(3.0937, 4.437)
        >>> check_kernel_range(3.0937, 1e-20)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter gamma=1e-20 is outside the supported range: with alpha=3.0937, gamma must lie in [0.00020479, 6476.04] (so that every coefficient alpha*d_k/gamma^k, k = 1..8, is within [1e-30, 1e+30])
    """
    low, high = COEFFICIENT_RANGE
    if not (low <= alpha <= high):
        raise ValueError(
            f"SPOCU parameter alpha={alpha!r} is outside the supported range: with fixed parameters alpha "
            f"must lie in [{low:g}, {high:g}] (the kernels' polynomial coefficients alpha*d_k/gamma^k must be "
            "float32 numbers)"
        )
    lo, hi = supported_gamma_range(alpha)
    if not (lo <= gamma <= hi):
        raise ValueError(
            f"SPOCU parameter gamma={gamma!r} is outside the supported range: with alpha={alpha!r}, gamma must "
            f"lie in [{lo:.6g}, {hi:.6g}] (so that every coefficient alpha*d_k/gamma^k, k = 1..8, is within "
            f"[{low:g}, {high:g}])"
        )


def r(u: Any) -> Any:
    r"""The generator polynomial :math:`r(u) = u^3(u^5 - 2u^4 + 2)` (float64 NumPy).

    Written as :math:`u^7(u - 2) + 2u^3` so that ``r(inf) = inf`` (not ``inf - inf``).

    Examples:
        >>> float(r(1.0))
        1.0
    """
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return u**7 * (u - 2.0) + 2.0 * u**3


def r_prime(u: Any) -> Any:
    r""":math:`r'(u) = 8u^7 - 14u^6 + 6u^2 = 2u^2(u-1)(4u^4-3u^3-3u^2-3u-3)`.

    Examples:
        >>> float(r_prime(1.0))
        0.0
    """
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return u**6 * (8.0 * u - 14.0) + 6.0 * u**2


def r_second(u: Any) -> Any:
    r""":math:`r''(u) = 56u^6 - 84u^5 + 12u`.

    Examples:
        >>> float(r_second(1.0))
        -16.0
    """
    u = np.asarray(u, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return u**5 * (56.0 * u - 84.0) + 12.0 * u


def h(u: Any, c: float = DEFAULT_C) -> Any:
    r"""The piecewise generator :math:`h`: 0 for :math:`u<0`, :math:`r(u)` on
    :math:`[0, c)`, :math:`r(c)` for :math:`u \ge c`. NaN stays NaN.

    Examples:
        >>> float(h(-1.0)), float(h(2.0, c=1.0))
        (0.0, 1.0)
    """
    u = np.asarray(u, dtype=np.float64)
    out = np.where(u < 0.0, 0.0, r(np.where(u < 0.0, 0.0, u)))
    if math.isfinite(c):
        out = np.where(u >= c, r(c), out)
    return out


def h_prime(u: Any, c: float = DEFAULT_C) -> Any:
    r""":math:`h'(u)`: :math:`r'(u)` on :math:`[0, c)`, 0 for :math:`u < 0` and
    :math:`u \ge c` (the convention at the kink). NaN stays NaN.

    Examples:
        >>> float(h_prime(0.5)), float(h_prime(1.5, c=1.0))
        (1.34375, 0.0)
    """
    u = np.asarray(u, dtype=np.float64)
    inside = (u >= 0.0) & (u < c)
    out = np.where(inside, r_prime(np.where(inside, u, 0.0)), 0.0)
    return np.where(np.isnan(u), np.nan, out)


def reference_spocu(
    x: Any,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> np.ndarray:
    r"""Float64 reference of SPOCU, the literal definition
    :math:`s(x) = \alpha h(x/\gamma + \beta) - \alpha h(\beta)`.

    This is the oracle the tests of every framework compare against; it favours
    being obviously right over speed. The subtraction cancels near :math:`x = 0`,
    so it is carried out in ``numpy.longdouble`` (80-bit on x86, where that
    gains 11 bits; :data:`REFERENCE_EPS` says what the platform gives) and the
    result is rounded to float64.

    Examples:
        >>> round(float(reference_spocu(-100.0)), 5)
        -1.58383
    """
    alpha, beta, gamma, c = validate_params(alpha, beta, gamma, c)
    x = np.asarray(x, dtype=np.float64)
    ld = np.longdouble
    with np.errstate(over="ignore", invalid="ignore"):
        u = x.astype(ld) / ld(gamma) + ld(beta)
        out: np.ndarray = ld(alpha) * _h_any(u, c) - ld(alpha) * _h_any(np.asarray(ld(beta)), c)
    return out.astype(np.float64)


def _h_any(u: np.ndarray, c: float) -> np.ndarray:
    """h in u's own precision."""
    zero = np.zeros((), dtype=u.dtype)
    safe = np.where(u < 0, zero, u)
    out = np.where(u < 0, zero, safe**7 * (safe - 2) + 2 * safe**3)
    if math.isfinite(c):
        cc = np.asarray(c, dtype=u.dtype)
        out = np.where(u >= c, cc**7 * (cc - 2) + 2 * cc**3, out)
    return out


#: Unit roundoff of the arithmetic :func:`reference_spocu` uses inside.
REFERENCE_EPS = float(np.finfo(np.longdouble).eps)


def reference_spocu_grad(
    x: Any,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> np.ndarray:
    r"""Float64 reference of :math:`s'(x) = (\alpha/\gamma)\,h'(x/\gamma + \beta)`.

    Examples:
        >>> round(float(reference_spocu_grad(0.0)), 5)
        1.32704
    """
    alpha, beta, gamma, c = validate_params(alpha, beta, gamma, c)
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        grad: np.ndarray = (alpha / gamma) * h_prime(x / gamma + beta, c)
    return grad


def reference_spocu_grad2(
    x: Any,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> np.ndarray:
    r"""Float64 reference of :math:`s''(x) = (\alpha/\gamma^2)\,r''(u)` on the active piece, else 0."""
    alpha, beta, gamma, c = validate_params(alpha, beta, gamma, c)
    x = np.asarray(x, dtype=np.float64)
    u = x / gamma + beta
    inside = (u > 0.0) & (u < c)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.where(inside, (alpha / gamma**2) * r_second(np.where(inside, u, 0.0)), 0.0)
    return np.where(np.isnan(x), np.nan, out)


#: d_k(beta) = sum_p SHIFTED_COEFFICIENT_POLYNOMIALS[k-1][p] * beta**p for k = 1..8, where
#: d_k = r^(k)(beta)/k! = sum_{j>=k} a_j C(j, k) beta^(j-k) (lowest power of beta first).
SHIFTED_COEFFICIENT_POLYNOMIALS: tuple[tuple[float, ...], ...] = tuple(
    tuple(R_COEFFICIENTS[j] * math.comb(j, k) for j in range(k, len(R_COEFFICIENTS)))
    for k in range(1, len(R_COEFFICIENTS))
)


def shifted_coefficients(beta: Any) -> tuple[Any, ...]:
    r"""Coefficients :math:`d_1..d_8` of :math:`r(\beta + t) - r(\beta) = \sum_k d_k t^k`.

    :math:`d_k = r^{(k)}(\beta)/k!`. Evaluating SPOCU in this shifted form avoids the
    cancellation of :math:`r(u) - r(\beta)` near :math:`x = 0` (where the literal
    form loses every digit of a small output). Index 0 of the result is
    :math:`d_1`. ``beta`` may be a float or an array/tensor of any framework
    (learnable, per-channel beta); the result has its type and shape.

    Examples:
        >>> d = shifted_coefficients(0.5)
        >>> abs(sum(d) - (float(r(1.5)) - float(r(0.5)))) < 1e-12
        True
    """
    out = []
    for polynomial in SHIFTED_COEFFICIENT_POLYNOMIALS:
        acc = polynomial[-1] + 0 * beta  # shaped like beta
        for a in polynomial[-2::-1]:
            acc = acc * beta + a
        out.append(acc)
    return tuple(out)


def cached_params(alpha: Any, beta: Any, gamma: Any, c: Any) -> "SPOCUParams":
    """``SPOCUParams(alpha, beta, gamma, c)``, memoized for the adapters' hot paths.

    Examples:
        >>> cached_params(3.0937, 0.6653, 4.437, None) is cached_params(3.0937, 0.6653, 4.437, None)
        True
    """
    try:
        return _cached_params(alpha, beta, gamma, c)
    except TypeError:  # an unhashable argument: let the validation name it
        return SPOCUParams(alpha, beta, gamma, c)


@lru_cache(maxsize=512)
def _cached_params(alpha: Any, beta: Any, gamma: Any, c: Any) -> "SPOCUParams":
    return SPOCUParams(alpha, beta, gamma, c)


def cached_kernel_params(alpha: Any, beta: Any, gamma: Any, c: Any) -> "SPOCUParams":
    """:func:`cached_params` also checked by :func:`check_kernel_range`: for the Keras and JAX
    kernels, which hold the polynomial's coefficients in float32.

    Examples:
        >>> cached_kernel_params(3.0937, 0.6653, 1e-20, None)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter gamma=1e-20 is outside the supported range: with alpha=3.0937, gamma must lie in [0.00020479, 6476.04] (so that every coefficient alpha*d_k/gamma^k, k = 1..8, is within [1e-30, 1e+30])
    """
    params = cached_params(alpha, beta, gamma, c)
    check_kernel_range(params.alpha, params.gamma)
    return params


@lru_cache(maxsize=1024)
def _derivative_safe_bound(params: "SPOCUParams", max_value: float) -> float:
    coefficients = [abs(e) for e in params.x_derivative_coefficients]
    limit = max_value / 16.0

    def magnitude(x: float) -> float:
        try:
            return sum(a * x**k for k, a in enumerate(coefficients))
        except OverflowError:
            return math.inf

    lo, hi = 1.0, 1.0
    while magnitude(hi) < limit and hi < 1e300:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if magnitude(mid) < limit else (lo, mid)
    return min(lo, params.upper_bound)


@dataclass(frozen=True)
class SPOCUParams:
    r"""Validated SPOCU parameters and the derived constants the kernels use.

    In the active piece :math:`-\gamma\beta < x < \gamma(c - \beta)`, SPOCU is the
    polynomial :math:`s(x) = \sum_{k=1}^{8} e_k x^k` with
    :math:`e_k = \alpha\, d_k / \gamma^k` (see :func:`shifted_coefficients`); outside
    it is constant. So every kernel computes
    :math:`s(x) = P(\mathrm{clamp}(x, x_{lo}, x_{hi}))` and
    :math:`s'(x) = P'(\mathrm{clamp}(x, x_{lo}, x_{hi}))\,[x_{lo} < x < x_{hi}]`.

    Examples:
        >>> p = SPOCUParams()
        >>> p.lower_bound < 0 < p.upper_bound
        True
        >>> SPOCUParams(alpha=-1)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter alpha=-1.0 is out of range: alpha must be finite and > 0
    """

    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA
    gamma: float = DEFAULT_GAMMA
    c: float = DEFAULT_C

    def __post_init__(self) -> None:
        a, b, g, cc = validate_params(self.alpha, self.beta, self.gamma, self.c)
        object.__setattr__(self, "alpha", a)
        object.__setattr__(self, "beta", b)
        object.__setattr__(self, "gamma", g)
        object.__setattr__(self, "c", cc)

    @property
    def lower_bound(self) -> float:
        """x below which SPOCU is the constant -alpha*r(beta): x = -gamma*beta."""
        return -self.gamma * self.beta

    @property
    def upper_bound(self) -> float:
        """x at and above which SPOCU is the constant alpha*(r(c) - r(beta)); inf for c = inf."""
        return self.gamma * (self.c - self.beta) if math.isfinite(self.c) else math.inf

    @property
    def lower_value(self) -> float:
        """s(-inf) = -alpha*r(beta)."""
        return -self.alpha * float(r(self.beta))

    @property
    def upper_value(self) -> float:
        """s(+inf): alpha*(r(c) - r(beta)), or inf for c = inf."""
        if not math.isfinite(self.c):
            return math.inf
        return self.alpha * (float(r(self.c)) - float(r(self.beta)))

    @cached_property
    def x_coefficients(self) -> tuple[float, ...]:
        """e_1..e_8 of s(x) = sum_k e_k x^k on the active piece (index 0 is e_1)."""
        d = shifted_coefficients(self.beta)
        return tuple(self.alpha * d_k / self.gamma ** (k + 1) for k, d_k in enumerate(d))

    @cached_property
    def x_derivative_coefficients(self) -> tuple[float, ...]:
        """Coefficients of s'(x) = sum_k k e_k x^(k-1), lowest power first."""
        return tuple((k + 1) * e for k, e in enumerate(self.x_coefficients))

    def derivative_safe_bound(self, max_value: float) -> float:
        """Largest x at which evaluating s'(x) term by term stays below ``max_value / 16``.

        For c = inf the true s'(x) overflows a finite float type for huge x; the
        kernels clamp x there in the backward so that a finite input never yields
        ``inf * 0 = NaN``. For finite c this is just :attr:`upper_bound` (or less).
        """
        return _derivative_safe_bound(self, float(max_value))

    def as_dict(self) -> dict[str, float]:
        """The four parameters as a dict (for JSON, logs and ``SPOCUParams(**d)``).

        Examples:
            >>> SPOCUParams().as_dict()
            {'alpha': 3.0937, 'beta': 0.6653, 'gamma': 4.437, 'c': inf}
        """
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "c": self.c}

    def __call__(self, x: Any) -> np.ndarray:
        """The float64 reference s(x) with these parameters."""
        return reference_spocu(x, self.alpha, self.beta, self.gamma, self.c)

    def grad(self, x: Any) -> np.ndarray:
        """The float64 reference s'(x) with these parameters."""
        return reference_spocu_grad(x, self.alpha, self.beta, self.gamma, self.c)


def reference_spocu_param_grads(
    x: Any,
    alpha: float = DEFAULT_ALPHA,
    beta: float = DEFAULT_BETA,
    gamma: float = DEFAULT_GAMMA,
    c: float = DEFAULT_C,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Float64 reference of the parameter derivatives :math:`(\partial s/\partial\alpha,
    \partial s/\partial\beta, \partial s/\partial\gamma)` at each ``x``.

    With :math:`u = x/\gamma + \beta` and :math:`h'` as in :func:`h_prime` (0 on the
    flat pieces, at the kinks and at :math:`u = \pm\infty`, the convention of
    :func:`reference_spocu_grad`):

    .. math::

        \frac{\partial s}{\partial\alpha} = h(u) - h(\beta),\quad
        \frac{\partial s}{\partial\beta} = \alpha\,(h'(u) - r'(\beta)),\quad
        \frac{\partial s}{\partial\gamma} = -\alpha\,h'(u)\,\frac{x}{\gamma^2}
        \ (0 \text{ where } h'(u) = 0).

    So at :math:`x = \pm\infty` the derivatives are those of the constant piece
    (:math:`\partial s/\partial\gamma = 0`, :math:`\partial s/\partial\beta = -\alpha r'(\beta)`),
    never NaN. NaN in gives NaN out.

    Examples:
        >>> d_alpha, d_beta, d_gamma = reference_spocu_param_grads([-np.inf, 0.0], 1.0, 0.5, 2.0, 1.5)
        >>> d_alpha.tolist(), d_beta.tolist(), d_gamma.tolist()
        ([-0.23828125, 0.0], [-1.34375, 0.0], [0.0, -0.0])
    """
    alpha, beta, gamma, c = validate_params(alpha, beta, gamma, c)
    x = np.asarray(x, dtype=np.float64)
    ld = np.longdouble
    with np.errstate(over="ignore", invalid="ignore"):
        u = x.astype(ld) / ld(gamma) + ld(beta)
        d_alpha = (_h_any(u, c) - _h_any(np.asarray(ld(beta)), c)).astype(np.float64)
        hp = np.asarray(h_prime(u.astype(np.float64), c), dtype=ld)
        slope = hp != 0
        d_beta = (ld(alpha) * (hp - ld(float(r_prime(beta))))).astype(np.float64)
        d_gamma = np.where(slope, -ld(alpha) * hp * np.where(slope, x, 0.0).astype(ld) / ld(gamma) ** 2, 0.0)
    nan = np.isnan(x)
    return (
        np.where(nan, np.nan, d_alpha),
        np.where(nan, np.nan, d_beta),
        np.where(nan, np.nan, d_gamma.astype(np.float64)),
    )


# ---------------------------------------------------------------- learnable parameters

#: Learnable alpha and gamma are ``softplus(raw) + LEARNABLE_FLOOR``: never 0, even where softplus underflows.
LEARNABLE_FLOOR = 1e-6
#: Learnable beta is ``LEARNABLE_MARGIN + (1 - 2 LEARNABLE_MARGIN) sigmoid(raw)``: sigmoid rounds to
#: exactly 0 or 1 in float32 for |raw| > ~17, and beta must stay inside (0, 1).
LEARNABLE_MARGIN = 1e-6


def _namespace_functions(xp: Any) -> tuple[Any, Any, Any]:
    """(softplus, sigmoid, constant-like) of an array namespace: numpy, torch, jax.numpy or keras.ops."""
    name = getattr(xp, "__name__", "")
    if name == "numpy":
        # sigmoid(v) = exp(-softplus(-v)): full relative precision on both tails
        return (lambda v: np.logaddexp(0.0, v)), (lambda v: np.exp(-np.logaddexp(0.0, -v))), (lambda c, like: c)
    if name == "torch":
        return xp.nn.functional.softplus, xp.sigmoid, (lambda c, like: c)  # torch keeps a float's digits
    if name == "jax.numpy":
        import jax  # only reached with jax.numpy in hand

        return jax.nn.softplus, jax.nn.sigmoid, (lambda c, like: c)
    if hasattr(xp, "softplus") and hasattr(xp, "convert_to_tensor"):  # keras.ops
        # a tensor of like's dtype: Keras's torch backend rounds Python floats to float32 in mixed ops
        return xp.softplus, xp.sigmoid, (lambda c, like: xp.convert_to_tensor(c, dtype=like.dtype))
    raise TypeError(f"unsupported array namespace {name or xp!r}: use numpy, torch, jax.numpy or keras.ops")


def learnable_partial_cap(largest: float) -> float:
    r"""u = beta + t up to which no partial derivative of learnable SPOCU overflows in its usual formulas.

    :math:`8u^8` (about :math:`r'(u)\,t`, the largest of them) reaches 1/128 of ``largest``, a
    floating dtype's largest finite value: :math:`u_{cap} = (largest / 1024)^{1/8}`. Beyond it the
    framework adapters switch to tail formulas that scale each partial from its constant outwards.

    Examples:
        >>> round(learnable_partial_cap(float(np.finfo(np.float32).max)))  # float32
        27554
    """
    return float((largest / 1024.0) ** (1.0 / 8.0))


def learnable_positive(raw: Any, xp: Any = np) -> Any:
    r"""A learnable alpha or gamma from its raw weight: :math:`\mathrm{softplus}(raw) + 10^{-6}`.

    ``xp`` is the array namespace of ``raw`` (numpy, torch, jax.numpy or keras.ops).

    Examples:
        >>> float(learnable_positive(np.float64(0.0)))  # log 2 + 1e-6
        0.6931481805599453
    """
    softplus, _, const = _namespace_functions(xp)
    raw = xp.asarray(raw) if getattr(xp, "__name__", "") in ("numpy", "jax.numpy") else raw
    return softplus(raw) + const(LEARNABLE_FLOOR, raw)


def learnable_unit(raw: Any, xp: Any = np) -> Any:
    r"""A learnable beta from its raw weight: :math:`m + (1 - 2m)\,\sigma(raw)`, :math:`m = 10^{-6}`.

    Examples:
        >>> float(learnable_unit(np.float64(0.0)))
        0.5
    """
    _, sigmoid, const = _namespace_functions(xp)
    raw = xp.asarray(raw) if getattr(xp, "__name__", "") in ("numpy", "jax.numpy") else raw
    return const(LEARNABLE_MARGIN, raw) + const(1.0 - 2.0 * LEARNABLE_MARGIN, raw) * sigmoid(raw)


def learnable_to_params(raw_alpha: Any, raw_beta: Any, raw_gamma: Any, xp: Any = np) -> tuple[Any, Any, Any]:
    r"""(alpha, beta, gamma) from the unconstrained weights of a learnable SPOCU.

    .. math::

        \alpha = \mathrm{softplus}(a) + f,\quad \beta = m + (1 - 2m)\,\sigma(b),\quad
        \gamma = \mathrm{softplus}(g) + f,\qquad f = m = 10^{-6},

    so every optimizer step keeps the parameters in SPOCU's domain. ``xp`` is the
    array namespace of the weights (numpy, torch, jax.numpy or keras.ops); the
    results have their type and dtype. :func:`params_to_learnable` is the inverse.

    Examples:
        >>> raws = params_to_learnable(3.0937, 0.6653, 4.437)
        >>> [round(float(v), 12) for v in learnable_to_params(*raws, np)]
        [3.0937, 0.6653, 4.437]
    """
    return learnable_positive(raw_alpha, xp), learnable_unit(raw_beta, xp), learnable_positive(raw_gamma, xp)


def _inverse_positive(name: str, value: float, max_value: float) -> float:
    v = value - LEARNABLE_FLOOR
    if not (v > 0.0 and value <= max_value):
        raise ValueError(
            f"SPOCU parameter {name}={value!r} is out of range for a learnable {name}: it must lie in "
            f"({LEARNABLE_FLOOR:g}, {max_value:g}] ({name} = softplus(raw_{name}) + {LEARNABLE_FLOOR:g}, "
            "held in the weights' dtype)"
        )
    return v + math.log(-math.expm1(-v))  # softplus^-1(v) = log(expm1(v)), stable for large v


def params_to_learnable(
    alpha: float, beta: float, gamma: float, max_value: float = float(np.finfo(np.float32).max)
) -> tuple[float, float, float]:
    r"""The raw weights (Python floats) whose :func:`learnable_to_params` are ``alpha, beta, gamma``.

    Supported initial values: alpha and gamma in :math:`(10^{-6}, \text{max\_value}]`
    (``max_value``: the largest number of the weights' dtype), beta in
    :math:`(10^{-6}, 1 - 10^{-6})`. Values outside raise a ``ValueError`` naming the
    parameter and the range; the domain itself is checked first (:func:`validate_params`).

    Examples:
        >>> params_to_learnable(1.0, 0.5, 1.0)[1]
        0.0
        >>> params_to_learnable(1.0, 1e-9, 1.0)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU parameter beta=1e-09 is out of range for a learnable beta: it must lie in the open interval (1e-06, 0.999999) (beta = 1e-06 + (1 - 2e-06) * sigmoid(raw_beta))
    """
    alpha, beta, gamma, _ = validate_params(alpha, beta, gamma, math.inf)
    raw_alpha = _inverse_positive("alpha", alpha, max_value)
    raw_gamma = _inverse_positive("gamma", gamma, max_value)
    m = LEARNABLE_MARGIN
    if not (m < beta < 1.0 - m):
        raise ValueError(
            f"SPOCU parameter beta={beta!r} is out of range for a learnable beta: it must lie in the open interval "
            f"({m:g}, {1.0 - m:g}) (beta = {m:g} + (1 - {2 * m:g}) * sigmoid(raw_beta))"
        )
    p = (beta - m) / (1.0 - 2.0 * m)
    return raw_alpha, math.log(p) - math.log1p(-p), raw_gamma


def check_learnable_options(learnable: Any, num_parameters: Any) -> tuple[bool, int]:
    """Validate a module's ``learnable=`` (a bool) and ``num_parameters=`` (an integer >= 1; > 1 only if learnable).

    Shared by the Flax and Equinox modules (the PyTorch module gives the same messages).

    Args:
        learnable: whether alpha, beta, gamma are trained.
        num_parameters: 1 (one shared set) or the number of channels.

    Returns:
        ``(learnable, num_parameters)`` as a bool and an int.

    Raises:
        TypeError: ``learnable`` is not a bool or ``num_parameters`` not an integer.
        ValueError: ``num_parameters < 1``, or ``> 1`` with fixed parameters.

    Examples:
        >>> check_learnable_options(True, 16)
        (True, 16)
        >>> check_learnable_options(False, 4)
        Traceback (most recent call last):
        ...
        ValueError: SPOCU num_parameters=4 needs learnable=True (fixed parameters are shared)
    """
    import operator

    if not isinstance(learnable, (bool, np.bool_)):
        raise TypeError(f"SPOCU learnable= must be a bool, got {type(learnable).__name__} ({learnable!r})")
    if isinstance(num_parameters, (bool, np.bool_)):
        raise TypeError(f"SPOCU num_parameters= must be an integer, got a bool ({num_parameters!r})")
    try:
        num_parameters = operator.index(num_parameters)
    except TypeError:
        raise TypeError(
            f"SPOCU num_parameters= must be an integer, got {type(num_parameters).__name__} ({num_parameters!r})"
        ) from None
    if num_parameters < 1:
        raise ValueError(f"SPOCU num_parameters={num_parameters!r} must be a positive int")
    if num_parameters != 1 and not learnable:
        raise ValueError(f"SPOCU num_parameters={num_parameters} needs learnable=True (fixed parameters are shared)")
    return bool(learnable), num_parameters
