r"""spocu -- the SPOCU activation function (scaled polynomial constant unit).

.. math::

    s(x) = \alpha\,h(x/\gamma + \beta) - \alpha\,h(\beta),\quad
    h(u) = 0\ (u < 0),\ r(u)\ (0 \le u < c),\ r(c)\ (u \ge c),\quad r(u) = u^3(u^5 - 2u^4 + 2)

The top-level package imports without any deep-learning framework; the adapters
live in :mod:`spocu.torch`, :mod:`spocu.keras` and :mod:`spocu.jax`.

Example:
    >>> import spocu
    >>> round(float(spocu.reference_spocu(1.0)), 6)
    1.261978
"""

from typing import TYPE_CHECKING, Any

from spocu.core import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    SPOCUParams,
    reference_spocu,
    reference_spocu_grad,
    validate_params,
)

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports it on first use
    from spocu.science import fit  # noqa: F401

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_C",
    "DEFAULT_GAMMA",
    "SPOCUParams",
    "reference_spocu",
    "reference_spocu_grad",
    "validate_params",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # spocu.fit lives in spocu.science (scipy); import it on first use, not at `import spocu`
    if name == "fit":
        from spocu.science import fit

        return fit
    raise AttributeError(f"module 'spocu' has no attribute {name!r}")
