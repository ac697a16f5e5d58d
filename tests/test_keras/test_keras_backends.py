"""spocu.keras on every installed Keras backend, and save/load in fresh processes.

Keras picks its backend once per process, so the backends other than this
process's run ``keras_worker.py`` in subprocesses. Every model saved by any
backend is loaded back in a fresh process of every backend (after only
``import spocu.keras``) and must predict what it predicted before saving.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from spocu.core import reference_spocu

sys.path.insert(0, os.path.dirname(__file__))
import keras_worker as worker  # noqa: E402  (first: it loads Triton before TensorFlow, see there)

keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'spocu[keras]')")

WORKER = str(Path(__file__).with_name("keras_worker.py"))
CURRENT = keras.backend.backend()
BACKENDS = ["tensorflow", "jax", "torch"]
INSTALLED = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]
TIMEOUT_S = 600


def _require(b: str) -> None:
    if b not in INSTALLED:
        pytest.skip(f"{b} is not installed, so Keras's {b} backend cannot be checked")


def _start(b: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": b, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen(
        [sys.executable, WORKER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(b: str, proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise AssertionError(f"the {b} worker failed (exit {proc.returncode}):\n{err[-4000:]}")
    return out


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict]:
    """Every installed backend fits and saves the models (others in parallel subprocesses)."""
    root = tmp_path_factory.mktemp("saved_models")
    procs = {b: _start(b, "save", str(root / b)) for b in INSTALLED if b != CURRENT}
    reports = {}
    if CURRENT in INSTALLED:  # this process's backend: the checks themselves live in test_keras_spocu.py
        reports[CURRENT] = {"models": worker.save_models(str(root / CURRENT)), "checks": None}
    for b, proc in procs.items():
        line = [ln for ln in _finish(b, proc).splitlines() if ln.startswith("REPORT ")][-1]
        reports[b] = json.loads(line[len("REPORT ") :])
    return root, reports


@pytest.fixture(scope="module")
def loaded(saved) -> dict[str, dict[str, np.ndarray]]:
    """Each installed backend, in a fresh process, loads every saved model and predicts."""
    root, _ = saved
    procs = {b: (_start(b, "load", str(root), str(root / f"loaded_by_{b}.npz"))) for b in INSTALLED}
    out = {}
    for b, proc in procs.items():
        _finish(b, proc)
        out[b] = dict(np.load(root / f"loaded_by_{b}.npz"))
    return out


MODELS = ["function_activation", "layer_activation", "standalone_layer", "learnable", "seed_style", "functional_api"]


@pytest.mark.parametrize("loader", BACKENDS)
@pytest.mark.parametrize("saver", BACKENDS)
@pytest.mark.slow
def test_saved_models_load_in_a_fresh_process_with_the_same_outputs(saver, loader, saved, loaded):
    _require(saver)
    _require(loader)
    root, _ = saved
    before = np.load(root / saver / "predictions.npz")
    after = loaded[loader]
    # same backend: the same kernels, so (all but) bit-equal; across backends, float32 matmul/conv rounding
    rtol = 1e-6 if saver == loader else 1e-4
    for name in MODELS:
        got, want = after[f"{saver}/{name}"], before[f"{name}/y"]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, err_msg=f"{name} saved by {saver}")


@pytest.mark.parametrize("b", BACKENDS)
def test_learnable_parameters_train(b, saved):
    _require(b)
    moved = saved[1][b]["models"]["learnable"]["learnable_moved"]
    assert len(moved) == 6 and all(v > 1e-3 for v in moved.values()), moved


def _checks(b: str, saved) -> dict:
    _require(b)
    if b == CURRENT:
        pytest.skip(f"{b} is this process's backend: tests/test_keras/test_keras_spocu.py checks it in-process")
    return saved[1][b]["checks"]


@pytest.mark.parametrize("b", BACKENDS)
def test_backward_keeps_only_the_input_on_each_backend(b, saved):
    saved_tensors = _checks(b, saved)["saved_for_backward"]
    assert len(saved_tensors) == 1 and ("the input" in saved_tensors[0] or "from the argument" in saved_tensors[0])


@pytest.mark.parametrize("b", BACKENDS)
def test_second_derivative_on_each_backend(b, saved):
    error = _checks(b, saved)["second_derivative_error"]
    assert error is not None and error < 1e-10, error


@pytest.mark.parametrize("b", BACKENDS)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_on_each_backend(b, policy, saved):
    result = _checks(b, saved)[policy]  # values and gradients were compared with the reference in the worker
    half = policy.split("_")[1]
    assert result["layer_output"] == half and result["hidden_compute"] == half and result["weights"] == "float32"
    assert all(math.isfinite(v) for v in result["loss"])


@pytest.mark.parametrize("b", BACKENDS)
def test_seed_cnn_on_each_backend(b, saved):
    result = _checks(b, saved)["seed_cnn"]
    assert result["params"] == 42_442
    assert math.isfinite(result["fit_loss"]) and math.isfinite(result["eval_loss"])
    assert 0.0 <= result["accuracy"] <= 1.0


def check_promoted(result: dict) -> None:
    """Every Keras entry point returns floatx, with SPOCU's values, for integer and bool inputs."""
    entries = ("function", "layer", "learnable", "shim", "tensor_params")
    for name in entries:
        for kind, x in (("int", np.arange(-3, 4.0)), ("bool", np.array([0.0, 1.0]))):
            assert result[f"{name}/{kind}"] == result["floatx"], (name, kind, result[f"{name}/{kind}"])
            np.testing.assert_allclose(
                result[f"{name}/{kind}/values"], reference_spocu(x), rtol=2e-5, atol=1e-6, err_msg=f"{name} {kind}"
            )


@pytest.mark.parametrize("b", BACKENDS)
def test_integer_and_bool_inputs_promote_on_each_backend(b, saved):
    check_promoted(_checks(b, saved)["promoted"])
