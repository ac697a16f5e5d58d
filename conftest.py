"""Test-session rules for the whole repository (tests/ and the docstring examples in src/).

An optional framework that is not installed turns the collection of a module that needs it
into a skip that names the package, instead of a collection error: spocu's adapters
(``spocu.keras``, ``spocu.jax``, ``spocu.flax``, ...) import their framework at the top, so
``--doctest-modules`` cannot even import them without it. Only the packages below count,
and only when they are really absent (``importlib.util.find_spec``): a broken installation
or a misspelt import still fails collection.
"""

from __future__ import annotations

import importlib.util
import re

import pytest

#: import name -> the extra that installs it
OPTIONAL = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "flax",
    "equinox": "equinox",
    "optax": "dev",
    "pandas": "experiments",
    "pyarrow": "experiments",
    "PIL": "experiments",
    "scipy": "experiments",
    "statsmodels": "experiments",
    "sklearn": "experiments",
    "matplotlib": "experiments",
    "rich": "experiments",
    "ray": "ray",
    "onnx": "dev",
    "onnxruntime": "dev",
    "triton": "dev",
    "mktestdocs": "dev",
    "baycomp": "dev",
    "transformers": "transformers",
    "mlflow": "mlflow",
    "tensorboard": "tensorboard",
}
_MISSING = re.compile(r"No module named '([\w.]+)'|import of ([\w.]+) halted")


def missing_optional_package(error_text: str) -> str | None:
    """The optional package whose absence ``error_text`` (a collection error) reports, if any."""
    for match in _MISSING.finditer(error_text):
        top = (match.group(1) or match.group(2)).split(".")[0]
        if top in OPTIONAL and importlib.util.find_spec(top) is None:
            return top
    return None


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    report = yield
    if report.failed:
        package = missing_optional_package(report.longreprtext)
        if package is not None:
            report.outcome = "skipped"
            report.longrepr = (
                str(collector.path),
                0,
                f"Skipped: {package} is not installed (pip install 'spocu[{OPTIONAL[package]}]')",
            )
    return report
