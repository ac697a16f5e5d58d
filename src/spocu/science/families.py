r"""Activation families: an activation as a function of its parameters, with the
parameter domain, so that one solver fits SPOCU and (as its check) SELU.

- :data:`SPOCU` -- :math:`s(x) = \alpha h(x/\gamma + \beta) - \alpha h(\beta)`,
  parameters α > 0, 0 < β < 1, γ > 0, 1 ≤ c ≤ ∞ (γ and c held at their defaults
  unless freed).
- :data:`SELU` -- :math:`\lambda\,(x \text{ if } x > 0 \text{ else } \alpha(e^x - 1))`,
  parameters λ > 0, α > 0 (Klambauer et al. 2017).

Examples:
    >>> act = SPOCU.build({"alpha": 3.0937, "beta": 0.6653, "gamma": 4.437, "c": float("inf")})
    >>> round(act.value(1.0), 6), round(act.slope_at_zero, 5)
    (1.261978, 1.32704)
    >>> SELU.build({"lambda": 1.0, "alpha": 1.0}).value(-1.0) == math.expm1(-1.0)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA, SPOCUParams, r_prime

__all__ = ["ParameterSpec", "Activation", "ActivationFamily", "SPOCU", "SELU", "FAMILIES", "get_family"]


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its domain (open or closed ends), default and default search interval."""

    name: str
    lower: float
    upper: float
    lower_closed: bool
    upper_closed: bool
    default: float
    search: tuple[float, float]

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the domain (open or closed ends as given).

        Examples:
            >>> SPOCU.spec("beta").contains(1.0), SPOCU.spec("c").contains(float("inf"))
            (False, True)
        """
        above = value >= self.lower if self.lower_closed else value > self.lower
        below = value <= self.upper if self.upper_closed else value < self.upper
        return bool(above and below)

    @property
    def domain(self) -> str:
        """The domain as text, e.g. ``0 < beta < 1``."""
        left = f"{self.lower:g} {'<=' if self.lower_closed else '<'} "
        right = (
            ""
            if self.upper == math.inf and not self.upper_closed
            else f" {'<=' if self.upper_closed else '<'} {self.upper:g}"
        )
        return f"{left}{self.name}{right}"

    def inner_bounds(self) -> tuple[float, float]:
        """Closed bounds a box-constrained solver may use: open ends nudged inward."""
        lo = self.lower if self.lower_closed else self.lower + 1e-9 * max(1.0, abs(self.lower))
        hi = self.upper if self.upper_closed else self.upper - 1e-9 * max(1.0, abs(self.upper))
        return lo, hi


@dataclass(frozen=True)
class Activation:
    """One member of a family: scalar and array evaluation plus what integration needs."""

    value: Callable[[float], float]
    values: Callable[[np.ndarray], np.ndarray]
    slope_at_zero: float | None
    #: x where the function has a kink (integration splits there)
    breakpoints: tuple[float, ...]
    #: |s(x)| grows like x**growth_power as x -> +inf (0: bounded); it is bounded as x -> -inf
    growth_power: float


@dataclass(frozen=True)
class ActivationFamily:
    """An activation as a function of named parameters."""

    name: str
    formula: str
    parameters: tuple[ParameterSpec, ...]
    build: Callable[[Mapping[str, float]], Activation]
    #: parameters held at their defaults unless the caller frees them
    default_fixed: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The parameters' names, in order."""
        return tuple(p.name for p in self.parameters)

    def spec(self, name: str) -> ParameterSpec:
        """The :class:`ParameterSpec` named ``name``; a ValueError naming the family's parameters otherwise."""
        for p in self.parameters:
            if p.name == name:
                return p
        raise ValueError(f"{self.name} has no parameter {name!r}; its parameters are {', '.join(self.names)}")

    @property
    def defaults(self) -> dict[str, float]:
        """Each parameter's default value, by name."""
        return {p.name: p.default for p in self.parameters}


def _build_spocu(values: Mapping[str, float]) -> Activation:
    params = SPOCUParams(values["alpha"], values["beta"], values["gamma"], values["c"])
    coefficients = tuple(reversed(params.x_coefficients))  # e_8 .. e_1
    lo, hi = params.lower_bound, params.upper_bound
    low_value = params.lower_value
    high_value = params.upper_value

    def value(x: float) -> float:
        # the polynomial form P(clamp(x)) of the core: no cancellation near x = 0
        if x <= lo:
            return low_value
        if x >= hi:
            return high_value
        acc = 0.0
        for e_k in coefficients:
            acc = (acc + e_k) * x
        return acc

    def values_fn(x: np.ndarray) -> np.ndarray:
        # the same P(clamp(x)) on arrays (float64; tested against the core's reference_spocu)
        xc = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
        acc = np.zeros_like(xc)
        with np.errstate(over="ignore", invalid="ignore"):
            for e_k in coefficients:
                acc = (acc + e_k) * xc
        return np.where(x <= lo, low_value, np.where(x >= hi, high_value, acc))

    breakpoints = (lo,) if math.isinf(hi) else (lo, hi)
    slope = params.alpha / params.gamma * float(r_prime(params.beta))
    return Activation(value, values_fn, slope, breakpoints, 8.0 if math.isinf(params.c) else 0.0)


def _build_selu(values: Mapping[str, float]) -> Activation:
    lam, alpha = float(values["lambda"]), float(values["alpha"])
    if not (lam > 0 and alpha > 0):
        raise ValueError(f"SELU needs lambda > 0 and alpha > 0, got lambda={lam!r}, alpha={alpha!r}")

    def value(x: float) -> float:
        return lam * x if x > 0 else lam * alpha * math.expm1(x)

    def values_fn(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return lam * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    # s'(0) does not exist: the derivative jumps from λα to λ at the kink
    return Activation(value, values_fn, None, (0.0,), 1.0)


SPOCU = ActivationFamily(
    name="spocu",
    formula="alpha*h(x/gamma + beta) - alpha*h(beta), h = 0 | r(u) = u^3(u^5 - 2u^4 + 2) | r(c)",
    parameters=(
        ParameterSpec("alpha", 0.0, math.inf, False, False, DEFAULT_ALPHA, (0.05, 20.0)),
        ParameterSpec("beta", 0.0, 1.0, False, False, DEFAULT_BETA, (0.02, 0.98)),
        ParameterSpec("gamma", 0.0, math.inf, False, False, DEFAULT_GAMMA, (0.5, 20.0)),
        ParameterSpec("c", 1.0, math.inf, True, True, DEFAULT_C, (1.0, 4.0)),
    ),
    build=_build_spocu,
    default_fixed=("gamma", "c"),
)

SELU = ActivationFamily(
    name="selu",
    formula="lambda*(x if x > 0 else alpha*(exp(x) - 1))",
    parameters=(
        ParameterSpec("lambda", 0.0, math.inf, False, False, 1.0, (0.5, 2.0)),
        ParameterSpec("alpha", 0.0, math.inf, False, False, 1.0, (0.25, 4.0)),
    ),
    build=_build_selu,
)

FAMILIES: dict[str, ActivationFamily] = {"spocu": SPOCU, "selu": SELU}


def get_family(family: str | ActivationFamily) -> ActivationFamily:
    """A family by name (``spocu``, ``selu``) or the family itself."""
    if isinstance(family, ActivationFamily):
        return family
    try:
        return FAMILIES[str(family).lower()]
    except KeyError:
        raise ValueError(f"unknown activation family {family!r}; choose one of {', '.join(FAMILIES)}") from None
