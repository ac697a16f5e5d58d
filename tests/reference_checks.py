"""The float64 reference checks the tests share: they live in :mod:`spocu.testing` (so that
``benchmarks/gpu_check.py`` uses them without reaching into ``tests/``); re-exported here
for the tests that import ``reference_checks``."""

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
