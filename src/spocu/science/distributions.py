r"""Input distributions for the moment conditions of :func:`spocu.science.fit`.

An input distribution is the law of the pre-activation :math:`z` that SPOCU sees.
Each one computes expectations :math:`E[f(z)]` and can be moved to another mean
and variance *with the same shape* (:meth:`InputDistribution.location_scale`),
which is what the Jacobian of the mean/variance map differentiates.

- :class:`Normal` -- :math:`z \sim N(\mu, \sigma^2)`; expectations by
  :func:`scipy.integrate.quad` against the pdf, split at the activation's kinks.
- :class:`Pareto` -- the correction's density :math:`g(x) = a(x + 1)^{-a-1}`,
  :math:`x > 0`, :math:`a > 1` (the Lomax distribution, ``scipy.stats.lomax``),
  optionally shifted and scaled.
- :class:`Samples` -- an empirical distribution: expectations are sample means.
  :meth:`Samples.from_file` reads ``.npy`` (any shape, flattened) or text with
  one value per line (blank lines and ``#`` comments are skipped).

Examples:
    >>> round(Normal().expect(lambda z: z * z), 12)
    1.0
    >>> round(Pareto(3.0).mean, 6)  # 1 / (a - 1)
    0.5
"""

from __future__ import annotations

import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InputDistribution", "Normal", "Pareto", "Samples", "QUAD_EPSABS", "QUAD_EPSREL"]

#: absolute and relative accuracy asked of every :func:`scipy.integrate.quad` call
QUAD_EPSABS = 1e-13
QUAD_EPSREL = 1e-12


class InputDistribution(ABC):
    """The law of the activation's input z (see the module docstring)."""

    @property
    @abstractmethod
    def mean(self) -> float:
        """E[z]."""

    @property
    @abstractmethod
    def variance(self) -> float:
        """Var[z] (``inf`` when it does not exist)."""

    @property
    @abstractmethod
    def label(self) -> str:
        """A short human-readable name, e.g. ``N(0, 1)``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (``kind`` plus the defining numbers)."""

    @abstractmethod
    def expect(
        self,
        fn: Callable[[float], float],
        breakpoints: Sequence[float] = (),
        vector_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> float:
        """E[fn(z)]. ``breakpoints`` are points where ``fn`` has a kink (quad splits there);
        ``vector_fn`` is the same function on arrays (used by :class:`Samples`)."""

    @abstractmethod
    def location_scale(self, mean: float, variance: float) -> InputDistribution:
        """The distribution of ``mean + sqrt(variance / Var z) * (z - E z)``: same shape, new moments."""

    @abstractmethod
    def has_moment(self, power: float) -> bool:
        """Whether E[|z|^power] is finite (for the right tail, where SPOCU may grow like x^8)."""

    @abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws (used by Monte Carlo checks)."""


def _quad_expect(
    fn: Callable[[float], float],
    pdf: Callable[[float], float],
    support: tuple[float, float],
    breakpoints: Sequence[float],
) -> float:
    """∫ fn(x) pdf(x) dx over ``support``, split at the breakpoints inside it."""
    from scipy import integrate

    lo, hi = support
    cuts = sorted({float(b) for b in breakpoints if lo < b < hi and math.isfinite(b)})
    edges = [lo, *cuts, hi]
    total = 0.0
    with warnings.catch_warnings():
        # far from a solution the integrands can be huge; accuracy is judged where it matters
        warnings.simplefilter("ignore", category=integrate.IntegrationWarning)
        for a, b in zip(edges[:-1], edges[1:]):
            value, _ = integrate.quad(lambda x: fn(x) * pdf(x), a, b, epsabs=QUAD_EPSABS, epsrel=QUAD_EPSREL, limit=200)
            total += value
    return total


def _check_finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class Normal(InputDistribution):
    r"""z ~ N(mean, variance); the SELU paper's and SPOCU's default (standard normal).

    Examples:
        >>> Normal(0.0, 4.0).label
        'N(0, 4)'
    """

    loc: float = 0.0
    var: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "loc", _check_finite("normal mean", self.loc))
        object.__setattr__(self, "var", _check_finite("normal variance", self.var))
        if not self.var > 0:
            raise ValueError(f"normal variance must be > 0, got {self.var!r}")

    @property
    def mean(self) -> float:
        """E[z]: the normal's mean ``loc``."""
        return self.loc

    @property
    def variance(self) -> float:
        """Var[z]: the normal's variance ``var``."""
        return self.var

    @property
    def label(self) -> str:
        """``N(mean, variance)``, e.g. ``N(0, 1)``."""
        return f"N({self.loc:g}, {self.var:g})"

    def describe(self) -> dict[str, Any]:
        """``{"kind": "normal", "mean", "variance", "label"}``."""
        return {"kind": "normal", "mean": self.loc, "variance": self.var, "label": self.label}

    def expect(self, fn, breakpoints=(), vector_fn=None) -> float:
        """E[fn(z)] = ∫ fn(x) φ(x; μ, σ²) dx by :func:`scipy.integrate.quad`, split at ``breakpoints``
        (``vector_fn`` is not needed).
        """
        sd = math.sqrt(self.var)
        norm = 1.0 / (sd * math.sqrt(2.0 * math.pi))
        m = self.loc

        def pdf(x: float) -> float:
            t = (x - m) / sd
            return norm * math.exp(-0.5 * t * t)

        return _quad_expect(fn, pdf, (-math.inf, math.inf), breakpoints)

    def location_scale(self, mean: float, variance: float) -> Normal:
        """N(mean, variance): a normal moved to other moments is the normal with those moments."""
        return Normal(mean, variance)

    def has_moment(self, power: float) -> bool:
        """Always True: a normal has every moment."""
        return True

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws from N(loc, var) with ``rng``."""
        return rng.normal(self.loc, math.sqrt(self.var), size=n)


@dataclass(frozen=True)
class Pareto(InputDistribution):
    r"""The correction's Pareto density :math:`g(x) = a(x+1)^{-a-1}`, :math:`x > 0`, :math:`a > 1`
    (a Lomax distribution), optionally shifted and scaled: z = loc + scale·X.

    Mean :math:`1/(a-1)`; variance :math:`a/((a-1)^2(a-2))` for :math:`a > 2`, infinite
    otherwise; :math:`E[X^p]` is finite only for :math:`p < a`.

    Examples:
        >>> p = Pareto(3.0)
        >>> round(p.expect(lambda x: 1.0), 12), round(p.variance, 6)
        (1.0, 0.75)
    """

    a: float
    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _check_finite("Pareto a", self.a))
        object.__setattr__(self, "loc", _check_finite("Pareto loc", self.loc))
        object.__setattr__(self, "scale", _check_finite("Pareto scale", self.scale))
        if not self.a > 1:
            raise ValueError(f"the Pareto density a(x+1)^(-a-1) needs a > 1, got a={self.a!r}")
        if not self.scale > 0:
            raise ValueError(f"Pareto scale must be > 0, got {self.scale!r}")

    @property
    def mean(self) -> float:
        """E[z] = loc + scale/(a − 1)."""
        return self.loc + self.scale / (self.a - 1.0)

    @property
    def variance(self) -> float:
        """Var[z] = scale²·a/((a − 1)²(a − 2)) for a > 2, ``inf`` otherwise."""
        if self.a <= 2:
            return math.inf
        return self.scale**2 * self.a / ((self.a - 1.0) ** 2 * (self.a - 2.0))

    @property
    def label(self) -> str:
        """``Pareto(a=3)``, prefixed by ``loc + scale·`` when shifted or scaled."""
        base = f"Pareto(a={self.a:g})"
        if self.loc == 0.0 and self.scale == 1.0:
            return base
        return f"{self.loc:g} + {self.scale:g}·{base}"

    def describe(self) -> dict[str, Any]:
        """``{"kind": "pareto", "a", "loc", "scale", "label"}``."""
        return {"kind": "pareto", "a": self.a, "loc": self.loc, "scale": self.scale, "label": self.label}

    def expect(self, fn, breakpoints=(), vector_fn=None) -> float:
        """E[fn(z)] = ∫ fn(x) g(x) dx over (loc, ∞) by :func:`scipy.integrate.quad`, split at
        ``breakpoints`` (``vector_fn`` is not needed).
        """
        a, loc, scale = self.a, self.loc, self.scale

        def pdf(x: float) -> float:
            t = (x - loc) / scale
            return a * (t + 1.0) ** (-a - 1.0) / scale if t > 0 else 0.0

        return _quad_expect(fn, pdf, (loc, math.inf), breakpoints)

    def location_scale(self, mean: float, variance: float) -> Pareto:
        """The Pareto with the same ``a`` shifted and scaled to ``mean`` and ``variance``; a ValueError
        when a <= 2 (the variance is infinite, so no scale gives a finite one).
        """
        if not math.isfinite(self.variance):
            raise ValueError(f"{self.label} has infinite variance (a <= 2): it cannot be rescaled to a given variance")
        scale = self.scale * math.sqrt(variance / self.variance)
        return Pareto(self.a, mean - scale / (self.a - 1.0), scale)

    def has_moment(self, power: float) -> bool:
        """Whether E[|z|^power] is finite: only for power < a."""
        return power < self.a

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` independent draws by the inverse cdf, F(x) = 1 − (x + 1)^(−a), shifted and scaled."""
        u = rng.random(n)
        return self.loc + self.scale * ((1.0 - u) ** (-1.0 / self.a) - 1.0)


@dataclass(frozen=True, eq=False)
class Samples(InputDistribution):
    """The empirical distribution of given values: E[f(z)] is the sample mean of f.

    Examples:
        >>> Samples([1.0, 2.0, 3.0]).expect(float, vector_fn=lambda v: v)
        2.0
    """

    values: np.ndarray
    source: str = "samples"
    _view: tuple[float, float] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            values = np.asarray(self.values, dtype=np.float64).ravel()
        except (TypeError, ValueError) as error:
            raise ValueError(f"samples from {self.source} are not numbers: {error}") from None
        if values.size < 2:
            raise ValueError(f"samples from {self.source}: need at least 2 values, got {values.size}")
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"samples from {self.source}: {int(bad.sum())} value(s) are NaN or infinite "
                f"(first at index {int(np.argmax(bad))})"
            )
        if np.ptp(values) == 0:
            raise ValueError(f"samples from {self.source}: all values are equal ({values[0]!r}); the variance is 0")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Samples:
        """Read samples from ``.npy`` (any shape, flattened) or text (one number per line;
        blank lines and lines starting with ``#`` are ignored)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"samples file {path!r} does not exist")
        if os.path.isdir(path):
            raise ValueError(f"samples file {path!r} is a directory")
        if path.endswith(".npy"):
            try:
                data = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as error:
                raise ValueError(f"samples file {path!r} is not a readable .npy array: {error}") from None
            if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
                raise ValueError(f"samples file {path!r} holds {data.dtype} values; expected real numbers")
            return cls(data, source=path)
        values: list[float] = []
        try:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, start=1):
                    text = line.strip()
                    if not text or text.startswith("#"):
                        continue
                    try:
                        values.append(float(text))
                    except ValueError:
                        raise ValueError(
                            f"samples file {path!r}, line {number}: {text[:40]!r} is not a number "
                            "(expected one value per line, or a .npy file)"
                        ) from None
        except UnicodeDecodeError:
            raise ValueError(f"samples file {path!r} is not text; use .npy for binary arrays") from None
        return cls(np.array(values), source=path)

    @property
    def _base_mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def _base_variance(self) -> float:
        return float(np.var(self.values))

    @property
    def mean(self) -> float:
        """The sample mean (after :meth:`location_scale`, the mean moved to)."""
        return self._view[0] if self._view else self._base_mean

    @property
    def variance(self) -> float:
        """The population variance of the (possibly moved) samples."""
        return self._view[1] if self._view else self._base_variance

    def _points(self) -> np.ndarray:
        if self._view is None:
            return self.values
        mean, variance = self._view
        return mean + math.sqrt(variance / self._base_variance) * (self.values - self._base_mean)

    @property
    def label(self) -> str:
        """``"N samples from SOURCE"``, plus the moments moved to, if any."""
        moved = "" if self._view is None else f", moved to mean {self.mean:g}, variance {self.variance:g}"
        return f"{self.values.size} samples from {self.source}{moved}"

    def describe(self) -> dict[str, Any]:
        """``{"kind": "samples", "source", "n", "mean", "variance", "label"}``."""
        return {
            "kind": "samples",
            "source": self.source,
            "n": int(self.values.size),
            "mean": self.mean,
            "variance": self.variance,
            "label": self.label,
        }

    def expect(self, fn, breakpoints=(), vector_fn=None) -> float:
        """E[fn(z)]: the mean of ``vector_fn`` over the (possibly moved) points, or of ``fn`` point by
        point without it; ``breakpoints`` are not needed.
        """
        points = self._points()
        if vector_fn is not None:
            return float(np.mean(vector_fn(points)))
        return float(np.mean([fn(float(x)) for x in points]))

    def location_scale(self, mean: float, variance: float) -> Samples:
        """The same samples standardized and moved to ``mean`` and ``variance`` (the values are kept)."""
        return Samples(self.values, self.source, (float(mean), float(variance)))

    def has_moment(self, power: float) -> bool:
        """Always True: an empirical distribution has every moment."""
        return True

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws with replacement from the (possibly moved) samples."""
        return rng.choice(self._points(), size=n, replace=True)
