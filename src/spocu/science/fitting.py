r"""Fit an activation's parameters to moment conditions: the self-normalization recipe.

SPOCU's correction (doi:10.1007/s00521-020-05412-6, eqs. 3--5) chooses the parameters
so that, for inputs :math:`z \sim f`,

.. math::

    E_f[s(z)] = 0,\qquad E_f[s(z)^2] = 1,\qquad \|J\| < 1,

with :math:`J` the Jacobian of the layer's map (mean, second moment) → (mean, second
moment) (see :mod:`spocu.science.moments`) -- the conditions by which SELU's constants
were derived. :func:`fit` solves the square system "conditions = targets" for the free
parameters with :func:`scipy.optimize.least_squares` inside the parameter domain,
from a grid of starting points over a search box (so it can say whether the solution
is unique there), and reports the achieved moments, :math:`J` and its norms. A system
without an exact solution is reported as such, with the best residual found.

:math:`\|J\| < 1` says the point attracts only where the point is a fixed point of the
layer map: the next layer's input, mean :math:`\omega E[s]` and variance
:math:`\tau E[s^2]`, has the fitted input's mean and variance (:attr:`FitResult.fixed_point`).
N(0, 1) with ω = 0, τ = 1 is one; inputs N(0, 2) are one only with τ = 2 (E[s²] = 1
feeds the next layer N(0, τ)); the Pareto recipe is none (output mean ≈ 0.75, input mean
0.5). Elsewhere :math:`J` is the map's local sensitivity, and ``stable`` is ``None``.

Conditions (``kind=target``): ``mean`` (E[s(z)]), ``second_moment`` (E[s(z)^2]),
``variance`` (Var[s(z)]) and ``slope`` (s'(0)).

Examples:
    The default: γ = 4.437 and c = ∞ held, α and β solved under N(0, 1).

    >>> result = fit(starts=1)
    >>> result.solved, round(result.alpha, 4), round(result.beta, 4)
    (True, 3.2458, 0.6672)
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spocu.science.distributions import InputDistribution, Normal
from spocu.science.families import Activation, ActivationFamily, get_family
from spocu.science.moments import Moments, jacobian, matrix_norms, moments

__all__ = ["Condition", "FitResult", "NoSolutionError", "fit", "PARETO_RECIPE", "CONDITION_KINDS", "MAX_STARTS"]

#: the most grid starts :func:`fit` accepts (each start is one bounded least-squares solve,
#: about 0.03 s on a 2-core machine: 4096 starts take about two minutes)
MAX_STARTS = 4096
_SECONDS_PER_START = 0.03
#: how close the next layer's input moments must come to the fitted input's to call it a fixed point
FIXED_POINT_TOLERANCE = 1e-6

#: condition kinds and what they constrain
CONDITION_KINDS = {
    "mean": "E[s(z)]",
    "second_moment": "E[s(z)^2]",
    "variance": "Var[s(z)]",
    "slope": "s'(0)",
}
_ALIASES = {"second-moment": "second_moment", "m2": "second_moment", "var": "variance", "s'(0)": "slope"}

#: The correction's alternative (§2.2 of the reference notes): c = γ = 1, Pareto input,
#: s'(0) = 1. The second condition is cut off in the available text; E[s] = 0 cannot
#: hold (s > 0 for x > 0 when c = γ = 1), so this recipe keeps eq. (4), E[s^2] = 1.
PARETO_RECIPE: dict[str, Any] = {
    "fixed": {"gamma": 1.0, "c": 1.0},
    "conditions": ("second_moment=1", "slope=1"),
}


class NoSolutionError(RuntimeError):
    """Raised when fitted parameters are asked of a fit that found no exact solution."""


@dataclass(frozen=True)
class Condition:
    """One condition ``kind = target``, e.g. ``Condition("mean", 0.0)``.

    Examples:
        >>> Condition.parse("second-moment=1")
        Condition(kind='second_moment', target=1.0)
    """

    kind: str
    target: float

    def __post_init__(self) -> None:
        kind = _ALIASES.get(self.kind, self.kind)
        if kind not in CONDITION_KINDS:
            raise ValueError(f"unknown condition {self.kind!r}; choose one of {', '.join(CONDITION_KINDS)}")
        target = float(self.target)
        if not math.isfinite(target):
            raise ValueError(f"condition {kind} needs a finite target, got {self.target!r}")
        if kind in ("second_moment", "variance") and target <= 0:
            raise ValueError(f"condition {kind}={target:g} is impossible: it must be > 0")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "target", target)

    @classmethod
    def parse(cls, text: str | Condition) -> Condition:
        """``"mean=0"``, ``"second-moment=1"``, ``"variance=1"`` or ``"slope=1"``."""
        if isinstance(text, Condition):
            return text
        name, sep, value = str(text).partition("=")
        if not sep:
            raise ValueError(f"condition {text!r} must look like KIND=TARGET, e.g. mean=0 or second-moment=1")
        try:
            target = float(value)
        except ValueError:
            raise ValueError(f"condition {text!r}: target {value!r} is not a number") from None
        return cls(name.strip().lower(), target)

    def __str__(self) -> str:
        return f"{CONDITION_KINDS[self.kind]} = {self.target:g}"


def _achieved(kind: str, m: Moments | None, activation: Activation) -> float:
    if kind == "slope":
        return float(activation.slope_at_zero)  # type: ignore[arg-type]
    assert m is not None
    return {"mean": m.mean, "second_moment": m.second_moment, "variance": m.variance}[kind]


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` found. ``parameters`` is ``None`` unless ``solved``; the best point is
    always in ``best_parameters``. Fitted values are also attributes (``result.alpha``),
    which raise :class:`NoSolutionError` when there is no exact solution."""

    family: str
    solved: bool
    parameters: dict[str, float] | None
    best_parameters: dict[str, float]
    free: tuple[str, ...]
    fixed: dict[str, float]
    conditions: tuple[Condition, ...]
    achieved: dict[str, float]
    residuals: tuple[float, ...]
    moments: Moments
    slope_at_zero: float | None
    jacobian: np.ndarray | None
    norms: dict[str, float] | None
    distribution: InputDistribution
    omega: float
    tau: float
    search_region: dict[str, tuple[float, float]]
    solutions: tuple[dict[str, float], ...]
    n_starts: int
    n_converged: int
    tolerance: float
    notes: tuple[str, ...] = field(default=())
    #: the next layer's input moments (mean ω·E[s], variance τ·E[s²]) under the map's convention
    next_input: tuple[float, float] | None = None

    @property
    def fixed_point(self) -> bool:
        r"""Whether the fitted point is a fixed point of the layer map under ``omega``, ``tau``:
        the output moments feed the next layer an input with the fitted input's mean and
        variance, :math:`\omega E[s] = E[z]` and :math:`\tau E[s^2] = \mathrm{Var}[z]`
        (to :data:`FIXED_POINT_TOLERANCE`). Only then does ‖J‖ speak about stability."""
        if not self.solved or self.next_input is None:
            return False
        mean, variance = self.distribution.mean, self.distribution.variance
        if not (math.isfinite(mean) and math.isfinite(variance)):
            return False
        next_mean, next_variance = self.next_input
        return (abs(next_mean - mean) <= FIXED_POINT_TOLERANCE * max(1.0, abs(mean))
                and abs(next_variance - variance) <= FIXED_POINT_TOLERANCE * max(1.0, variance))  # fmt: skip

    @property
    def max_residual(self) -> float:
        """max |achieved - target| at the best point."""
        return max(abs(r) for r in self.residuals)

    @property
    def unique(self) -> bool | None:
        """Whether exactly one distinct solution was found in the search region (None if none)."""
        return len(self.solutions) == 1 if self.solved else None

    @property
    def stable(self) -> bool | None:
        """‖J‖₂ < 1 at a fixed point: it attracts. ``None`` when J is not available or the
        point is not a fixed point (then J is only the map's local sensitivity there)."""
        if self.norms is None or not self.fixed_point:
            return None
        return self.norms["norm_2"] < 1.0

    def __getattr__(self, name: str) -> float:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            best = object.__getattribute__(self, "best_parameters")
            solved = object.__getattribute__(self, "solved")
        except AttributeError:
            raise AttributeError(name) from None
        if name not in best:
            raise AttributeError(f"FitResult has no attribute {name!r}")
        if not solved:
            raise NoSolutionError(
                f"no exact solution was found (best max residual {self.max_residual:.3g}); "
                f"the best point found is result.best_parameters[{name!r}] = {best[name]!r}"
            )
        return best[name]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the parameters at the top level (``null`` when not solved), then the
        diagnostics. Infinite values are the strings ``"inf"``/``"-inf"``."""
        out: dict[str, Any] = {}
        for name, value in self.best_parameters.items():
            out[name] = value if self.solved else None
        out.update(
            {
                "solved": self.solved,
                "status": "solved" if self.solved else "no_exact_solution",
                "family": self.family,
                "free": list(self.free),
                "fixed": self.fixed,
                "input": self.distribution.describe(),
                "conditions": [
                    {"kind": c.kind, "target": c.target, "achieved": self.achieved[c.kind], "residual": r}
                    for c, r in zip(self.conditions, self.residuals)
                ],
                "max_residual": self.max_residual,
                "tolerance": self.tolerance,
                "best_parameters": self.best_parameters,
                "moments": {
                    "mean": self.moments.mean,
                    "second_moment": self.moments.second_moment,
                    "variance": self.moments.variance,
                    "slope_at_zero": self.slope_at_zero,
                },
                "jacobian": None if self.jacobian is None else self.jacobian.tolist(),
                "jacobian_convention": f"(mean, second moment) -> (mean, second moment), omega={self.omega:g}, tau={self.tau:g}",
                "jacobian_norm_2": None if self.norms is None else self.norms["norm_2"],
                "jacobian_norm_1": None if self.norms is None else self.norms["norm_1"],
                "spectral_radius": None if self.norms is None else self.norms["spectral_radius"],
                "next_layer_input": None
                if self.next_input is None
                else {"mean": self.next_input[0], "variance": self.next_input[1]},
                "fixed_point": self.fixed_point,
                "jacobian_meaning": "stability of the fixed point"
                if self.fixed_point
                else "local sensitivity (not a fixed point)",
                "stable": self.stable,
                "unique": self.unique,
                "n_solutions": len(self.solutions),
                "solutions": list(self.solutions),
                "search_region": {k: list(v) for k, v in self.search_region.items()},
                "n_starts": self.n_starts,
                "n_converged": self.n_converged,
                "notes": list(self.notes),
            }
        )
        return _jsonable(out)

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as strict JSON (no NaN/Infinity literals)."""
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(value, np.integer):
        return int(value)
    return value


def _resolve_distribution(distribution: InputDistribution | str | None) -> InputDistribution:
    if distribution is None:
        return Normal()
    if isinstance(distribution, InputDistribution):
        return distribution
    if isinstance(distribution, str) and distribution.lower() in ("normal", "n(0,1)", "standard-normal"):
        return Normal()
    raise ValueError(
        f"unknown input distribution {distribution!r}: pass 'normal' or an InputDistribution "
        "(spocu.science.Normal(mean, variance), Pareto(a), Samples(values) or Samples.from_file(path))"
    )


def _setup_parameters(
    fam: ActivationFamily, fixed: Mapping[str, float] | None, free: Iterable[str] | None
) -> tuple[dict[str, float], list[str]]:
    free_set = {str(n) for n in (free or ())}
    user_fixed = {str(k): v for k, v in (fixed or {}).items()}
    for name in [*free_set, *user_fixed]:
        fam.spec(name)  # raises for unknown names
    both = free_set & set(user_fixed)
    if both:
        raise ValueError(f"parameter(s) {', '.join(sorted(both))} are given both as fixed and as free")
    held = {n: fam.spec(n).default for n in fam.default_fixed if n not in free_set}
    for name, value in user_fixed.items():
        spec = fam.spec(name)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"fixed {name}={value!r} is not a number") from None
        if not spec.contains(v):
            raise ValueError(f"fixed {name}={v:g} is outside the parameter domain {spec.domain}")
        held[name] = v
    free_names = [n for n in fam.names if n not in held]
    return held, free_names


def _setup_region(
    fam: ActivationFamily, free_names: Sequence[str], search: Mapping[str, Sequence[float]] | None
) -> dict[str, tuple[float, float]]:
    search = dict(search or {})
    for name in search:
        if name not in free_names:
            fam.spec(name)
            raise ValueError(f"a search interval is given for {name!r}, which is not a free parameter")
    region: dict[str, tuple[float, float]] = {}
    for name in free_names:
        spec = fam.spec(name)
        if name in search:
            try:
                lo, hi = (float(v) for v in search[name])
            except (TypeError, ValueError):
                raise ValueError(
                    f"search interval for {name} must be two numbers (low, high), got {search[name]!r}"
                ) from None
        else:
            lo, hi = spec.search
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"search interval for {name} must be finite with low < high, got [{lo:g}, {hi:g}]")
        inner_lo, inner_hi = spec.inner_bounds()
        if not (spec.contains(lo) or lo == spec.lower) or not (spec.contains(hi) or hi == spec.upper):
            raise ValueError(f"search interval [{lo:g}, {hi:g}] for {name} leaves the parameter domain {spec.domain}")
        region[name] = (max(lo, inner_lo), min(hi, inner_hi))
    return region


def _start_points(
    fam: ActivationFamily, free_names: Sequence[str], region: Mapping[str, tuple[float, float]], starts: int
) -> list[np.ndarray]:
    defaults = np.array([min(max(fam.spec(n).default, region[n][0]), region[n][1]) for n in free_names])
    points = [defaults]
    if starts > 1:
        k = max(2, round(starts ** (1.0 / len(free_names))))
        axes = [np.linspace(*region[n], 2 * k + 1)[1::2] for n in free_names]  # cell centres
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(free_names))
        points.extend(grid)
    return points


def fit(
    distribution: InputDistribution | str | None = None,
    *,
    fixed: Mapping[str, float] | None = None,
    free: Iterable[str] | None = None,
    conditions: Sequence[Condition | str] | Mapping[str, float] | None = None,
    family: ActivationFamily | str = "spocu",
    search: Mapping[str, Sequence[float]] | None = None,
    starts: int = 16,
    omega: float = 0.0,
    tau: float = 1.0,
    tolerance: float = 1e-8,
) -> FitResult:
    r"""Solve for an activation's free parameters so that the moment conditions hold.

    Args:
        distribution: the law of the input z: ``None``/``"normal"`` (N(0, 1)),
            :class:`~spocu.science.Normal`, :class:`~spocu.science.Pareto` or
            :class:`~spocu.science.Samples`.
        fixed: parameters held at given values (added to the family's default holds:
            γ = 4.437 and c = ∞ for SPOCU).
        free: parameters to release from the family's default holds (e.g. ``["gamma"]``).
        conditions: ``["mean=0", "second_moment=1"]`` (the default), ``Condition`` objects,
            or a mapping ``{"mean": 0, "slope": 1}``; as many as free parameters.
        family: ``"spocu"`` or ``"selu"`` (or an :class:`~spocu.science.families.ActivationFamily`).
        search: search interval per free parameter, inside its domain (defaults per family).
        starts: about how many grid starting points (plus the defaults); 1 = defaults only.
        omega: the weight sum Σw of the Jacobian's layer (SELU's ω = 0).
        tau: the weight sum Σw² of the Jacobian's layer (SELU's τ = 1).
        tolerance: a point is a solution when every |achieved - target| ≤ tolerance.

    Returns:
        :class:`FitResult` -- ``solved`` tells whether an exact solution exists; the moments,
        Jacobian, norms and the number of distinct solutions come with it.

    Raises:
        ValueError: on a bad request (unknown parameter, value outside the domain, more or
            fewer conditions than free parameters, search box outside the domain, a moment
            that is infinite under the input).
    """
    from scipy import optimize

    fam = get_family(family)
    dist = _resolve_distribution(distribution)
    held, free_names = _setup_parameters(fam, fixed, free)
    if conditions is None:
        conditions = ("mean=0", "second_moment=1")
    if isinstance(conditions, Mapping):
        conds = tuple(Condition(k, v) for k, v in conditions.items())
    elif isinstance(conditions, (str, Condition)):
        conds = (Condition.parse(conditions),)
    else:
        conds = tuple(Condition.parse(c) for c in conditions)
    kinds = [c.kind for c in conds]
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a condition kind is given twice: {', '.join(kinds)}")
    if not free_names:
        raise ValueError(f"every parameter of {fam.name} is fixed ({held}); nothing to fit")
    if not conds:
        raise ValueError("no conditions given; e.g. conditions=['mean=0', 'second_moment=1']")
    if len(conds) > len(free_names):
        raise ValueError(
            f"{len(conds)} conditions ({', '.join(map(str, conds))}) but only {len(free_names)} free "
            f"parameter(s) ({', '.join(free_names)}): the system is overdetermined; free more parameters "
            "or drop conditions"
        )
    if len(conds) < len(free_names):
        raise ValueError(
            f"{len(conds)} condition(s) for {len(free_names)} free parameters ({', '.join(free_names)}): "
            "the solutions would form a continuum; fix more parameters or add conditions"
        )
    if not (isinstance(starts, int) and starts >= 1):
        raise ValueError(f"starts must be an integer >= 1, got {starts!r}")
    if starts > MAX_STARTS:
        days = starts * _SECONDS_PER_START / 86400
        raise ValueError(
            f"starts={starts} asks for about {starts:.3g} least-squares solves (~{_SECONDS_PER_START} s each: "
            f"{days:.3g} days); use at most {MAX_STARTS}"
        )
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ValueError(f"tolerance must be a finite number > 0, got {tolerance!r}")
    if not math.isfinite(omega):
        raise ValueError(f"omega (the layer's weight sum) must be a finite number, got {omega!r}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau (the layer's sum of squared weights) must be a finite number > 0, got {tau!r}")
    region = _setup_region(fam, free_names, search)
    needs_moments = any(k != "slope" for k in kinds)
    targets = np.array([c.target for c in conds])

    def build(theta: np.ndarray) -> tuple[dict[str, float], Activation]:
        values = dict(held)
        values.update({n: float(v) for n, v in zip(free_names, theta)})
        values = {n: values[n] for n in fam.names}
        return values, fam.build(values)

    _, probe = build(_start_points(fam, free_names, region, 1)[0])
    if "slope" in kinds and probe.slope_at_zero is None:
        raise ValueError(f"the slope condition s'(0) is not defined for {fam.name}: it has a kink at 0")
    if needs_moments:
        moments(probe, dist)  # fails fast and clearly if a moment is infinite under the input

    cache: dict[tuple[float, ...], np.ndarray] = {}

    def residual(theta: np.ndarray) -> np.ndarray:
        key = tuple(float(v) for v in theta)
        if key not in cache:
            _, act = build(theta)
            m = moments(act, dist) if needs_moments else None
            cache[key] = np.array([_achieved(k, m, act) for k in kinds]) - targets
        return cache[key]

    lower = np.array([region[n][0] for n in free_names])
    upper = np.array([region[n][1] for n in free_names])
    candidates: list[tuple[np.ndarray, np.ndarray]] = []
    points = _start_points(fam, free_names, region, starts)
    for x0 in points:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            try:
                sol = optimize.least_squares(
                    residual, x0, bounds=(lower, upper), method="trf", x_scale="jac",
                    ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=100 * len(free_names),
                )  # fmt: skip
            except (ValueError, FloatingPointError, OverflowError):
                continue
        res = residual(sol.x)
        if np.all(np.isfinite(res)):
            candidates.append((sol.x, res))
    if not candidates:
        raise ValueError("the solver could not evaluate the conditions anywhere in the search region")

    widths = upper - lower
    converged = [(x, r) for x, r in candidates if np.max(np.abs(r)) <= tolerance]
    distinct: list[np.ndarray] = []
    for x, _ in sorted(converged, key=lambda xr: float(np.max(np.abs(xr[1])))):
        if all(np.max(np.abs(x - y) / widths) > 1e-6 for y in distinct):
            distinct.append(x)
    solved = bool(distinct)
    if solved:
        # several solutions: report the one nearest the family's defaults
        defaults = points[0]
        best_x = min(distinct, key=lambda x: float(np.sum(((x - defaults) / widths) ** 2)))
    else:
        best_x = min(candidates, key=lambda xr: float(np.linalg.norm(xr[1])))[0]

    best_values, best_act = build(best_x)
    notes: list[str] = []
    best_moments = (
        moments(best_act, dist) if dist.has_moment(2 * best_act.growth_power) else Moments(math.inf, math.inf)
    )
    res = residual(best_x)
    achieved = {k: float(v + t) for k, v, t in zip(kinds, res, targets)}
    try:
        jac = jacobian(best_act, dist, omega, tau)
        norms = matrix_norms(jac)
    except ValueError as error:
        jac, norms = None, None
        notes.append(f"Jacobian not available: {error}")
    if not solved:
        notes.append(
            f"no exact solution in the search region: the smallest max |residual| found is "
            f"{float(np.max(np.abs(res))):.3g} (tolerance {tolerance:g})"
        )
        on_edge = [
            n for n, v, lo, hi in zip(free_names, best_x, lower, upper) if min(v - lo, hi - v) <= 1e-6 * (hi - lo)
        ]
        if on_edge:
            notes.append(
                f"the best point lies on the edge of the search region for {', '.join(on_edge)}; "
                "widen the search interval to look further"
            )
    elif len(distinct) > 1:
        notes.append(f"{len(distinct)} distinct solutions in the search region; reporting the one nearest the defaults")
    solutions = tuple(build(x)[0] for x in distinct)
    return FitResult(
        family=fam.name,
        solved=solved,
        parameters=best_values if solved else None,
        best_parameters=best_values,
        free=tuple(free_names),
        fixed=held,
        conditions=conds,
        achieved=achieved,
        residuals=tuple(float(v) for v in res),
        moments=best_moments,
        slope_at_zero=best_act.slope_at_zero,
        jacobian=jac,
        norms=norms,
        distribution=dist,
        omega=float(omega),
        tau=float(tau),
        search_region={n: (float(region[n][0]), float(region[n][1])) for n in free_names},
        solutions=solutions,
        n_starts=len(points),
        n_converged=len(converged),
        tolerance=float(tolerance),
        notes=tuple(notes),
        next_input=(float(omega) * best_moments.mean, float(tau) * best_moments.second_moment)
        if math.isfinite(best_moments.second_moment)
        else None,
    )
