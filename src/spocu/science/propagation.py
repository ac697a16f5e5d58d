r"""Moments through depth: a deep random fully-connected network (NumPy only) next to the
analytic mean/second-moment map of :mod:`spocu.science.moments`.

The network: standardized inputs :math:`x_0` (batch × width, every column mean 0 and
variance 1), then :math:`x_{l} = s(x_{l-1} W_l)` with no bias and
:math:`W_l \sim N(0, g/\text{width})` -- LeCun normal (:math:`g = 1`) for SPOCU and SELU,
He normal (:math:`g = 2`) for ReLU, its customary pairing. All activations see the same
weight draws (common random numbers), up to the gain.

The analytic map is the mean-field limit of that network: with zero-mean weights the
pre-activation is :math:`N(0, g\,\nu_{l-1})`, :math:`\nu` the second moment of the previous
layer, so :math:`\nu_l = E[s(z)^2]` (:func:`spocu.science.moments.iterate_layer_map`
with :math:`\omega = 0`, :math:`\tau = g`).

Examples:
    >>> runs = simulate([RELU_HE], depth=3, width=64, batch=128, seed=0)
    >>> run = runs["ReLU (He init)"]
    >>> len(run.means), run.diverged_at is None
    (4, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from spocu.science.families import SELU as SELU_FAMILY
from spocu.science.families import SPOCU as SPOCU_FAMILY
from spocu.science.families import Activation
from spocu.science.moments import iterate_layer_map, layer_map

__all__ = [
    "Contender",
    "LayerRun",
    "simulate",
    "RELU_HE",
    "SELU_LECUN",
    "spocu_contender",
    "fixed_points",
    "analytic_runs",
]

#: SELU's published constants (Klambauer et al. 2017)
SELU_LAMBDA = 1.0507009873554805
SELU_ALPHA = 1.6732632423543772
#: a second moment above this counts as diverged (network and analytic map alike)
DIVERGED_ABOVE = 1e8


@dataclass(frozen=True)
class Contender:
    """An activation in the comparison, with the weight gain g of its initialization."""

    name: str
    activation: Activation
    gain: float = 1.0
    params: dict[str, float] = field(default_factory=dict)


def _relu() -> Activation:
    return Activation(
        value=lambda x: x if x > 0 else 0.0,
        values=lambda x: np.maximum(x, 0.0),
        slope_at_zero=None,
        breakpoints=(0.0,),
        growth_power=1.0,
    )


RELU_HE = Contender("ReLU (He init)", _relu(), gain=2.0)
SELU_LECUN = Contender(
    "SELU",
    SELU_FAMILY.build({"lambda": SELU_LAMBDA, "alpha": SELU_ALPHA}),
    1.0,
    {"lambda": SELU_LAMBDA, "alpha": SELU_ALPHA},
)


def spocu_contender(name: str, params: dict[str, float]) -> Contender:
    """SPOCU with the given parameters under LeCun init (float64 P(clamp(x)) of the core)."""
    return Contender(name, SPOCU_FAMILY.build(params), 1.0, dict(params))


@dataclass
class LayerRun:
    """Per-layer statistics of one activation through the network (index 0 = the inputs)."""

    means: np.ndarray
    variances: np.ndarray
    second_moments: np.ndarray
    #: a sample of the last finite layer's activations
    final_values: np.ndarray
    #: first layer whose second moment passed DIVERGED_ABOVE (or was not finite), else None
    diverged_at: int | None = None


def simulate(
    contenders: Sequence[Contender], depth: int = 50, width: int = 256, batch: int = 1024, seed: int = 0
) -> dict[str, LayerRun]:
    """Push standardized Gaussian inputs through ``depth`` random layers for each contender."""
    for name, value in (("depth", depth), ("width", width), ("batch", batch)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if batch < 2:
        raise ValueError("batch must be >= 2 to standardize the inputs")
    root = np.random.SeedSequence(seed)
    input_seed, *layer_seeds = root.spawn(depth + 1)
    x0 = np.random.default_rng(input_seed).standard_normal((batch, width))
    x0 = (x0 - x0.mean(axis=0)) / x0.std(axis=0)
    runs: dict[str, LayerRun] = {}
    for contender in contenders:
        x = x0
        means, variances, seconds = [float(x.mean())], [float(x.var())], [float(np.mean(x * x))]
        diverged = None
        for layer in range(1, depth + 1):
            w = np.random.default_rng(layer_seeds[layer - 1]).standard_normal((width, width))
            w *= math.sqrt(contender.gain / width)
            with np.errstate(over="ignore", invalid="ignore"):
                y = contender.activation.values(x @ w)
                second = float(np.mean(y * y))
            if not (np.isfinite(y).all() and second <= DIVERGED_ABOVE):
                diverged = layer
                break
            x = y
            means.append(float(x.mean()))
            variances.append(float(x.var()))
            seconds.append(second)
        pad = depth + 1 - len(means)
        runs[contender.name] = LayerRun(
            means=np.array(means + [np.nan] * pad),
            variances=np.array(variances + [np.nan] * pad),
            second_moments=np.array(seconds + [np.nan] * pad),
            final_values=x.ravel()[:20000].copy(),
            diverged_at=diverged,
        )
    return runs


def analytic_runs(
    contender: Contender, starts: Sequence[float], depth: int, tol: float = 1e-10
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """The mean-field map iterated ``depth`` layers from second moments ``starts`` (mean 0).

    Stops early once a layer changes the second moment by less than ``tol`` (relative) and
    repeats the last value; a run that passes :data:`DIVERGED_ABOVE` is ``inf`` from there on.
    """
    out = {}
    for nu0 in starts:
        means = np.full(depth + 1, np.nan)
        seconds = np.full(depth + 1, np.inf)
        means[0], seconds[0] = 0.0, nu0
        for k in range(1, depth + 1):
            if not seconds[k - 1] <= DIVERGED_ABOVE:
                break
            if (
                k >= 2
                and abs(seconds[k - 1] - seconds[k - 2]) <= tol * seconds[k - 1]
                and abs(means[k - 1] - means[k - 2]) <= tol
            ):
                means[k:], seconds[k:] = means[k - 1], seconds[k - 1]
                break
            m, s2 = iterate_layer_map(contender.activation, seconds[k - 1], 1, means[k - 1], 0.0, contender.gain)
            means[k], seconds[k] = m[1], s2[1]
        out[float(nu0)] = (means, seconds)
    return out


def fixed_points(
    contender: Contender, low: float = 0.02, high: float = 6.0, grid: int = 40
) -> list[dict[str, float]] | None:
    r"""Fixed points :math:`\nu^* = E[s(z)^2]`, :math:`z \sim N(0, g\nu^*)` in [low, high], with
    the map's slope there (< 1: attracting, > 1: repelling -- the divergence threshold).

    Returns ``None`` when the map is the identity on the whole grid (ReLU with He init:
    every second moment is preserved, none attracts).
    """
    from scipy.optimize import brentq

    def gap(nu: float) -> float:
        return layer_map(contender.activation, 0.0, nu, 0.0, contender.gain).second_moment - nu

    nus = np.geomspace(low, high, grid)
    values = [gap(v) for v in nus]
    if max(abs(v) / nu for v, nu in zip(values, nus)) < 1e-9:
        return None
    out = []
    for a, b, fa, fb in zip(nus[:-1], nus[1:], values[:-1], values[1:]):
        if fa == 0 or fa * fb < 0:
            root = float(brentq(gap, a, b, xtol=1e-12, rtol=1e-12)) if fa != 0 else float(a)
            h = 1e-5 * root
            slope = 1.0 + (gap(root + h) - gap(root - h)) / (2 * h)
            mean = layer_map(contender.activation, 0.0, root, 0.0, contender.gain).mean
            out.append({"second_moment": root, "mean": mean, "variance": root - mean**2, "slope": slope})
    return out
