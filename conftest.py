"""Test-session rules for the whole repository (tests/ and the docstring examples in src/).

An optional framework that is not installed turns the collection of a module that needs it
into a skip that names the package, instead of a collection error: spocu's adapters
(``spocu.keras``, ``spocu.jax``, ``spocu.flax``, ...) import their framework at the top, so
``--doctest-modules`` cannot even import them without it. Only the packages below count,
and only when they are really absent (``importlib.util.find_spec``): a broken installation
or a misspelt import still fails collection.

With ``SPOCU_SKIPS_FILE=PATH`` the node id of every skipped test or module is appended to PATH
(one per line; each xdist worker appends its own): ``.ci/run`` runs the README's test command
with the ``test`` extra, then installs ``dev`` and runs what that first pass skipped, so a test
that needs an integration (Ray, ONNX, Triton, MLflow, ...) is run by CI, never only skipped.
"""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

from spocu._llvm import preload_triton_before_tensorflow

# Triton before TensorFlow in every test process (both bundle LLVM; the other order aborts): with
# xdist a worker may run a Keras module's doctests before a torch module's compiled paths
preload_triton_before_tensorflow()

#: import name -> the extra that installs it
OPTIONAL = {
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "jax": "jax",
    "jaxlib": "jax",
    "flax": "flax",
    "equinox": "equinox",
    "optax": "test",
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
    "mktestdocs": "test",
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


def _record_skip(nodeid: str) -> None:
    path = os.environ.get("SPOCU_SKIPS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as file:  # one short line per write: O_APPEND keeps lines whole
            file.write(nodeid + "\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _record_skip(report.nodeid)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped and report.nodeid:
        _record_skip(report.nodeid)
