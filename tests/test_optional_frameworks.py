"""Without an optional framework, the suite skips what needs it, with the reason, and collects the rest."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _root_conftest():
    spec = importlib.util.spec_from_file_location("spocu_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_only_absent_optional_packages_count(monkeypatch):
    missing = _root_conftest().missing_optional_package
    assert missing("ModuleNotFoundError: No module named 'numpy_but_misspelt'") is None  # not optional
    assert missing("ModuleNotFoundError: No module named 'scipy'") is None  # optional but installed: a real error
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were absent
    assert missing("E   ModuleNotFoundError: import of pandas halted; None in sys.modules") == "pandas"
    assert missing("No module named 'pandas.core'") == "pandas"


def test_collection_without_keras_jax_and_pandas_skips_with_reasons(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT / "src")]),
        "SPOCU_BLOCK": "keras,tensorflow,jax,jaxlib,flax,equinox,pandas",
    }
    targets = [
        "src/spocu/keras/__init__.py",
        "src/spocu/jax/functional.py",
        "src/spocu/core.py",
        "tests/test_experiments/test_userdata.py",
        "tests/test_keras/test_keras_spocu.py",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "block_imports", "-p", "no:cacheprovider", "--co", "-q", *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "ERROR" not in out, out  # no collection error
    assert "src/spocu/keras/__init__.py:0: keras is not installed (pip install 'spocu[keras]')" in out
    assert "src/spocu/jax/functional.py:0: jax is not installed" in out
    assert "test_userdata.py:0: pandas is not installed" in out
    assert "Keras is not installed" in out  # the test module's own importorskip
    assert "src/spocu/core.py::spocu.core.reference_spocu" in out  # the rest is still collected


def test_importing_the_blocking_plugin_blocks_nothing():
    # --doctest-modules imports every module of tests/: only pytest's -p may block packages
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import block_imports  # noqa: F401
    finally:
        sys.path.remove(str(ROOT / "tests"))
    assert sys.modules.get("pandas", "absent") is not None and importlib.util.find_spec("pandas") is not None
