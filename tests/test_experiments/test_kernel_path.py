"""A run's numbers depend on its configuration and seed only: SPOCU's kernel path is fixed before the
first step, recorded in the run file, and a cold and a warm kernel cache give bit-identical run files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from spocu.experiments.run import kernels
from spocu.experiments.run.engine import EPOCH_TIMING_FIELDS, TIMING_FIELDS


def _without_timing(run: dict) -> dict:
    kept = {k: v for k, v in run.items() if k not in TIMING_FIELDS}
    kept["epochs"] = [{k: v for k, v in e.items() if k not in EPOCH_TIMING_FIELDS} for e in run["epochs"]]
    return kept


def _compare_in_fresh_process(out, cache) -> None:
    env = {**os.environ, "SPOCU_CACHE_DIR": str(cache)}
    env.pop("SPOCU_TORCH_BACKEND", None)  # the default choice ("auto") is the one that used to switch
    command = [sys.executable, "-m", "spocu", "compare", "--no-progress", "--dataset", "wdbc", "--activations", "spocu", "relu",
               "--seeds", "1", "--epochs", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow  # the cold process builds the kernels and the autograd node: minutes on a busy 2-core machine
@pytest.mark.slow  # builds the C++ kernels in fresh processes
def test_cold_and_warm_kernel_cache_give_the_same_run_files(tmp_path):
    cache = tmp_path / "kernel-cache"
    cache.mkdir()  # empty: the first process finds no built kernels (cold), the second finds them (warm)
    _compare_in_fresh_process(tmp_path / "cold", cache)
    _compare_in_fresh_process(tmp_path / "warm", cache)
    names = sorted(p.name for p in (tmp_path / "cold" / "runs").iterdir())
    assert names == ["relu-seed0.json", "spocu-seed0.json"]
    for name in names:
        cold = json.loads((tmp_path / "cold" / "runs" / name).read_text())
        warm = json.loads((tmp_path / "warm" / "runs" / name).read_text())
        assert set(cold) - set(TIMING_FIELDS) - {"epochs"} == set(_without_timing(cold)) - {"epochs"}
        assert _without_timing(cold) == _without_timing(warm)  # exact: floats compared as stored, every digit
        assert cold["started_at"] and cold["seconds"] > 0  # the timing fields are there; only they are left out
    spocu_run = json.loads((tmp_path / "cold" / "runs" / "spocu-seed0.json").read_text())
    relu_run = json.loads((tmp_path / "cold" / "runs" / "relu-seed0.json").read_text())
    assert isinstance(spocu_run["kernel_path"], str) and spocu_run["kernel_path"]
    assert relu_run["kernel_path"] is None  # no SPOCU in that network
    report = (tmp_path / "cold" / "report.md").read_text()
    assert f"SPOCU kernels: {spocu_run['kernel_path']} (1 of 2 runs)" in report


def test_a_path_that_changes_during_a_run_is_refused(monkeypatch):
    monkeypatch.setattr(kernels, "fix_kernel_path", lambda device, backend=None: "eager")
    kernels.check_kernel_path(None, "cpu")  # nothing to check
    kernels.check_kernel_path("eager", "cpu")
    with pytest.raises(RuntimeError, match="changed during the run"):
        kernels.check_kernel_path("cpp", "cpu")


def test_the_path_asked_for_by_name_is_the_one_recorded():
    assert kernels.fix_kernel_path("cpu", backend="eager") == "eager"
