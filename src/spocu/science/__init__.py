r"""The science of SPOCU: parameter fitting, self-normalization analysis, the shape.

- :func:`fit` -- solve α, β (or any free parameters) for E[s(z)] = 0, E[s(z)²] = 1
  (or other moment conditions) under an input distribution, with the Jacobian of the
  mean/variance map and a uniqueness check (:mod:`spocu.science.fitting`).
- :mod:`spocu.science.moments` -- moments, the layer map and its Jacobian.
- :mod:`spocu.science.propagation` -- moments through a deep random network (``spocu analyze``).
- :mod:`spocu.science.shape` -- stationary points, zeros, range, overflow thresholds (``spocu shape``).

Needs scipy (``pip install "spocu[experiments]"``).
"""

from __future__ import annotations

from spocu.science.distributions import InputDistribution, Normal, Pareto, Samples
from spocu.science.families import FAMILIES, SELU, SPOCU, ActivationFamily
from spocu.science.fitting import PARETO_RECIPE, Condition, FitResult, NoSolutionError, fit
from spocu.science.moments import Moments, jacobian, layer_map, moments

__all__ = [
    "fit",
    "FitResult",
    "Condition",
    "NoSolutionError",
    "PARETO_RECIPE",
    "InputDistribution",
    "Normal",
    "Pareto",
    "Samples",
    "ActivationFamily",
    "SPOCU",
    "SELU",
    "FAMILIES",
    "Moments",
    "moments",
    "jacobian",
    "layer_map",
]
