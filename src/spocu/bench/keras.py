"""The keras section: the seed CNN in Keras 3, one subprocess per backend.

With ``spocu.keras``, ReLU and (TensorFlow) the old 0.0.1 Keras layer, with XLA
(``jit_compile="auto"``) and, in the full run, without it. A backend that fails to run
becomes a note, not an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from spocu.bench.config import BenchConfig
from spocu.bench.old import OLD_DEFAULTS, OLD_VERSION, load_old_module
from spocu.bench.timing import interleaved_samples, paired_ratio

__all__ = ["keras_worker", "run"]

_WORKER = (
    "import json, sys; from spocu.bench.keras import keras_worker; "
    "print('@@' + json.dumps(keras_worker(json.loads(sys.argv[1]))))"
)


def keras_worker(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs inside a subprocess whose KERAS_BACKEND is set; returns the rows."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(config["seed"])
    x = rng.random((100, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, size=(100,))
    activations: dict[str, Any] = {"ReLU": "relu"}
    notes = []
    try:
        import spocu.keras

        activations["SPOCU (spocu.keras)"] = spocu.keras.spocu
    except Exception as exc:  # noqa: BLE001 -- report, do not fail the benchmark
        notes.append(f"spocu.keras unavailable: {type(exc).__name__}: {exc}")
    if backend == "tensorflow" and not config["no_old"]:
        old, note = load_old_module("spocu_tensorflow", config["old_wheel"])
        if old is None:
            notes.append(f"old spocu {OLD_VERSION} Keras layer: skipped: {note}")
        else:
            activations[f"spocu {OLD_VERSION} (old Keras layer)"] = old.SPOCU(*OLD_DEFAULTS)
    jit_modes = ["auto"] if config["quick"] else ["auto", False]

    def make(activation, jit):
        keras.utils.set_random_seed(config["seed"])
        model = keras.Sequential([
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, 3, activation=activation), keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation=activation), keras.layers.MaxPooling2D(),
            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax"),
        ])  # fmt: skip
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
        return lambda: model.train_on_batch(x, y)

    steps = {}
    for jit in jit_modes:
        for name, act in activations.items():
            if jit is False and name.startswith("spocu 0"):
                continue
            steps[f"{jit}|{name}"] = make(act, jit)
    samples = interleaved_samples(steps, rounds=config["rounds"], warmup=3, seed=config["seed"])
    rows = []
    for key, values in samples.items():
        jit, name = key.split("|", 1)
        ratio, low, high = paired_ratio(samples, key, f"{jit}|ReLU", seed=config["seed"])
        rows.append({"section": "keras", "framework": f"Keras ({backend})", "mode": f"jit_compile={jit}",
                     "name": name, "step_ms": float(np.median(values)) * 1e3, "ratio": ratio,
                     "ratio_ci95": [low, high]})  # fmt: skip
    rows.extend({"section": "keras", "note": note} for note in notes)
    return rows


def run(config: BenchConfig, notes: list[str]) -> list[dict[str, Any]]:
    """Time the seed CNN's Keras training step in one subprocess per ``config.keras_backends``
    backend; their rows, and a note in ``notes`` for a backend that failed or timed out.
    """
    rows = []
    payload_config = {"seed": config.seed, "rounds": config.step_rounds, "quick": config.quick, "no_old": config.no_old,
                      "old_wheel": config.old_wheel}  # fmt: skip
    for backend in config.keras_backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        try:
            proc = subprocess.run([sys.executable, "-c", _WORKER, json.dumps(payload_config)], env=env,
                                  capture_output=True, text=True, timeout=1800)  # fmt: skip
        except subprocess.TimeoutExpired:
            notes.append(f"Keras ({backend}): no result within 30 minutes")
            continue
        payload = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
        if proc.returncode != 0 or not payload:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            notes.append(f"Keras ({backend}): failed: {tail}")
            continue
        for row in json.loads(payload[-1][2:]):
            if "note" in row and "name" not in row:
                notes.append(row["note"])
            else:
                rows.append(row)
    return rows
