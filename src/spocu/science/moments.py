r"""Moments of an activation's output and the mean/variance map of a layer.

Convention (the SELU paper's, Klambauer et al. 2017, with the second moment as
the second coordinate): a layer's activations have mean :math:`\mu` and second
moment :math:`\nu`; the next pre-activation :math:`z = \sum_i w_i x_i`, with
:math:`\omega = \sum_i w_i` and :math:`\tau = \sum_i w_i^2`, has mean :math:`\omega\mu`.
Its variance is :math:`\tau(\nu - \mu^2)` for fixed weights and independent inputs, and
:math:`\tau\nu` averaged over zero-mean random weights; the two agree where
:math:`\mu = 0`. The map below uses :math:`\tau\nu`, the random-weight case. The layer maps

.. math::

    g(\mu, \nu) = \bigl(E[s(z)],\ E[s(z)^2]\bigr),\qquad z \sim N(\omega\mu, \tau\nu).

With zero-mean random weights (:math:`\omega = 0`, :math:`\tau = 1` for LeCun
initialization) the pre-activation variance is exactly the second moment of the
previous layer, so iterating :math:`\nu \mapsto E[s(z)^2]` is what a wide random
network does. At the fixed point :math:`(0, 1)` the second moment equals the
variance, so there the Jacobian agrees with the SELU paper's (variance) convention.

For a non-normal input distribution f the Jacobian differentiates the location-scale
family of f: :math:`z = m + \sqrt{v/\mathrm{Var}\,f}\,(x - E f)`, :math:`x \sim f`.

Examples:
    >>> from spocu.science.families import SELU
    >>> from spocu.science.distributions import Normal
    >>> selu = SELU.build({"lambda": 1.0507009873554805, "alpha": 1.6732632423543772})
    >>> m = moments(selu, Normal())
    >>> abs(m.mean) < 1e-7 and abs(m.second_moment - 1) < 1e-7
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spocu.science.distributions import InputDistribution, Normal
from spocu.science.families import Activation

__all__ = ["Moments", "moments", "jacobian", "layer_map", "iterate_layer_map", "matrix_norms"]


@dataclass(frozen=True)
class Moments:
    """E[s(z)] and E[s(z)^2] for one activation and input distribution."""

    mean: float
    second_moment: float

    @property
    def variance(self) -> float:
        """Var[s(z)] = E[s(z)^2] - E[s(z)]^2."""
        return self.second_moment - self.mean**2


def _check_tails(activation: Activation, distribution: InputDistribution, power: int) -> None:
    needed = power * activation.growth_power
    if needed > 0 and not distribution.has_moment(needed):
        raise ValueError(
            f"E[s(z)^{power}] is infinite under {distribution.label}: the activation grows like "
            f"x^{activation.growth_power:g} and this distribution has no moment of order {needed:g}; "
            "use a finite c (bounded SPOCU) or a lighter-tailed input"
        )


def moments(activation: Activation, distribution: InputDistribution) -> Moments:
    """E[s(z)] and E[s(z)^2] under ``distribution`` (quad split at the kinks, or a sample mean)."""
    _check_tails(activation, distribution, 2)
    fn, vector = activation.value, activation.values
    m1 = distribution.expect(fn, activation.breakpoints, vector)
    m2 = distribution.expect(lambda x: fn(x) ** 2, activation.breakpoints, lambda v: vector(v) ** 2)
    return Moments(m1, m2)


def _moment_vector(activation: Activation, distribution: InputDistribution) -> np.ndarray:
    m = moments(activation, distribution)
    return np.array([m.mean, m.second_moment])


def jacobian(
    activation: Activation, distribution: InputDistribution, omega: float = 0.0, tau: float = 1.0
) -> np.ndarray:
    r"""The 2×2 Jacobian of :math:`(\mu, \nu) \mapsto (E[s(z)], E[s(z)^2])` at the point where the
    pre-activation has ``distribution``'s law (see the module docstring):

    .. math::

        J = \begin{pmatrix} \omega\,\partial_m E[s] & \tau\,\partial_v E[s] \\
                            \omega\,\partial_m E[s^2] & \tau\,\partial_v E[s^2] \end{pmatrix}

    with :math:`(m, v)` the mean and variance of z. The derivatives are central differences
    with one Richardson step (truncation error :math:`O(h^4)`, :math:`h = 10^{-3}` relative),
    over integrals accurate to ~1e-12, so J is accurate to ~1e-8.

    Raises:
        ValueError: when the input distribution has no finite variance.
    """
    m0, v0 = distribution.mean, distribution.variance
    if not (math.isfinite(m0) and math.isfinite(v0)):
        raise ValueError(f"the Jacobian needs an input with finite mean and variance; {distribution.label} has none")

    def derivative(which: int, step: float) -> np.ndarray:
        def at(delta: float) -> np.ndarray:
            m, v = (m0 + delta, v0) if which == 0 else (m0, v0 + delta)
            return _moment_vector(activation, distribution.location_scale(m, v))

        def central(h: float) -> np.ndarray:
            return (at(h) - at(-h)) / (2.0 * h)

        return (4.0 * central(step / 2.0) - central(step)) / 3.0

    out = np.zeros((2, 2))
    if omega != 0.0:
        out[:, 0] = omega * derivative(0, 1e-3 * math.sqrt(v0))
    if tau != 0.0:
        out[:, 1] = tau * derivative(1, 1e-3 * v0)
    return out


def matrix_norms(matrix: np.ndarray) -> dict[str, float]:
    """The spectral norm ‖J‖₂, the max-column-sum norm ‖J‖₁ and the spectral radius.

    Examples:
        >>> matrix_norms(np.array([[0.0, 0.088834], [0.0, 0.782648]]))["norm_2"] > 0.78
        True
    """
    return {
        "norm_2": float(np.linalg.norm(matrix, 2)),
        "norm_1": float(np.linalg.norm(matrix, 1)),
        "spectral_radius": float(np.max(np.abs(np.linalg.eigvals(matrix)))),
    }


def layer_map(
    activation: Activation, mean: float, second_moment: float, omega: float = 0.0, tau: float = 1.0
) -> Moments:
    r"""One layer of the mean-field map: :math:`z \sim N(\omega\mu, \tau\nu)`, returns
    :math:`(E[s(z)], E[s(z)^2])`.

    Examples:
        >>> from spocu.science.families import SPOCU
        >>> act = SPOCU.build(SPOCU.defaults)
        >>> round(layer_map(act, 0.0, 1.0).second_moment, 4)
        0.9078
    """
    return moments(activation, Normal(omega * mean, tau * second_moment))


def iterate_layer_map(
    activation: Activation,
    second_moment: float,
    layers: int,
    mean: float = 0.0,
    omega: float = 0.0,
    tau: float = 1.0,
    diverged_above: float = 1e8,
) -> tuple[np.ndarray, np.ndarray]:
    """Iterate :func:`layer_map` ``layers`` times from (``mean``, ``second_moment``).

    Returns (means, second moments), each of length ``layers + 1`` (index 0 is the start);
    once the second moment exceeds ``diverged_above`` the rest is ``inf``/``nan``.
    """
    means = np.full(layers + 1, np.nan)
    seconds = np.full(layers + 1, np.inf)
    means[0], seconds[0] = mean, second_moment
    for k in range(1, layers + 1):
        if not seconds[k - 1] <= diverged_above:
            break
        nxt = layer_map(activation, means[k - 1], seconds[k - 1], omega, tau)
        means[k], seconds[k] = nxt.mean, nxt.second_moment
    return means, seconds
