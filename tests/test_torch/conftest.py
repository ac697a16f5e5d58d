"""Fixtures that run the PyTorch tests on every SPOCU kernel path.

``path`` is one of the forced backends ("eager", "cpp", "inductor", "triton"); every
numeric test that takes it must hold on each one. Triton runs on CUDA when
there is a GPU, else on CPU through Triton's interpreter (``TRITON_INTERPRET=1``,
set for the rest of the session: Triton reads it lazily), and is skipped when
the ``triton`` package is not installed.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

PATHS = ["eager", "cpp", "inductor", "triton"]
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="session")
def triton_ready():
    """Make the Triton kernels runnable here (interpreter on CPU) or skip."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    from spocu.torch import _triton

    reason = _triton.unavailable_reason(torch.device(triton_device()))
    if reason is not None:
        pytest.skip(reason)
    return triton_device()


#: the paths that compile (Inductor) or run an interpreter (Triton on CPU) take seconds per test: slow tier
_SLOW_PATHS = ("inductor", "triton")


def path_params(paths=PATHS) -> list:
    """``paths`` as pytest params, the compiled and interpreted ones marked ``slow``."""
    return [pytest.param(p, marks=pytest.mark.slow) if p in _SLOW_PATHS else p for p in paths]


@pytest.fixture(params=path_params())
def path(request):
    """A forced kernel path; for "triton" on a CPU-only machine tests run the interpreter."""
    if request.param == "triton":
        request.getfixturevalue("triton_ready")
    if request.param == "cpp":
        request.getfixturevalue("cpp_ready")
    return request.param


@pytest.fixture(scope="session")
def cpp_ready():
    """The C++ kernels, built when spocu was installed. Their tests fail where they did not load, so a
    broken build cannot pass unnoticed, unless ``SPOCU_NO_KERNELS=1`` says this install has none
    (setup.py then builds none either)."""
    from spocu.torch import _cpp

    status = _cpp.load()
    if status["state"] != "ready":
        if os.environ.get("SPOCU_NO_KERNELS") == "1":
            pytest.skip(f"the C++ kernels are unavailable here: {status['reason']}")
        pytest.fail(f"the C++ kernels did not load ({status['reason']}); set SPOCU_NO_KERNELS=1 to skip their tests")
    return status


def devices_for(path: str) -> list[str]:
    """Devices a path runs on here."""
    if path == "triton":
        return [triton_device()]
    if path == "cpp":
        return ["cpu"]
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def runs_on(path):
    """``runs_on(device)`` skips the test when ``path`` does not run on ``device`` here."""

    def check(device: str) -> None:
        if device not in devices_for(path):
            pytest.skip(f"path {path!r} does not run on {device} here")

    return check


@pytest.fixture
def dev(path) -> str:
    """The device ``path`` is tested on when a test has no device parameter."""
    return devices_for(path)[-1] if path == "triton" else "cpu"


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    """Triton's CPU interpreter evaluates in NumPy, which warns where the float32 math overflows to inf
    on purpose (huge inputs): not a finding of the tests. Tests of the optional C++ autograd node
    (``node_ready``: built by ``spocu.torch.build_kernels()`` with torch.utils.cpp_extension, a minute
    or more of compiling on a fresh machine) are slow."""
    quiet = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
    for item in items:
        if "triton" in item.nodeid and "test_torch" in item.nodeid:
            item.add_marker(quiet)
        if "node_ready" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
