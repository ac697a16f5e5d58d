"""`import spocu` needs only NumPy; each integration is imported lazily and names its extra when missing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

FRAMEWORKS = ["torch", "jax", "flax", "equinox", "optax", "keras", "tensorflow", "scipy", "mlflow", "tensorboard"]

# a finder that makes the frameworks uninstallable for the child process
_BLOCK = """
import sys, importlib.abc
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _Block())
"""


def _run(code: str, blocked: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK.format(blocked=set(blocked)) + code],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_import_spocu_needs_only_numpy():
    proc = _run(
        "import spocu; print(round(float(spocu.reference_spocu(1.0)), 6), "
        f"[m for m in {FRAMEWORKS!r} if m in sys.modules])",
        FRAMEWORKS,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1.261978", "[]"]


@pytest.mark.parametrize(
    ("module", "extra"), [("spocu.flax", "flax"), ("spocu.flax.linen", "flax"), ("spocu.equinox", "equinox")]
)
def test_a_missing_integration_names_its_extra(module, extra):
    proc = _run(f"import {module}", ["flax", "equinox"])
    assert proc.returncode != 0
    assert f"pip install 'spocu[{extra}]'" in proc.stderr.strip().splitlines()[-1]
