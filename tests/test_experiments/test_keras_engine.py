"""``spocu compare --framework keras``: the seed's model in Keras, the init schemes, and end-to-end runs per backend."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from spocu import cli
from spocu.experiments.activations import parse_activation
from spocu.experiments.config import ModelSpec, resolve_config

keras = pytest.importorskip("keras")
pytest.importorskip("spocu.keras")

from spocu.experiments.models import keras_models as models_keras  # noqa: E402
from spocu.experiments.models import torch_models as models_torch  # noqa: E402
from spocu.experiments.run import keras_engine as engine_keras  # noqa: E402  (after the skips)
from spocu.experiments.run.engine import batch_order  # noqa: E402


def test_seed_cnn_has_the_seeds_layers_and_42442_parameters():
    model = models_keras.build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("spocu"), seed=0)
    # the seed's model.summary(): Conv2D (30,30,32) 896, MaxPool (15,15,32), Conv2D (13,13,64) 18,496,
    # MaxPool (6,6,64), Flatten 2304, Dense 10 23,050
    summary = [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params()) for layer in model.layers]
    assert summary == [
        ("Conv2D", (30, 30, 32), 896),
        ("MaxPooling2D", (15, 15, 32), 0),
        ("Conv2D", (13, 13, 64), 18_496),
        ("MaxPooling2D", (6, 6, 64), 0),
        ("Flatten", (2304,), 0),
        ("Dense", (10,), 23_050),
    ]
    assert model.count_params() == models_keras.count_parameters(model) == 42_442
    from spocu.keras import SPOCU

    assert isinstance(model.layers[0].activation, SPOCU) and model.layers[-1].activation is keras.activations.linear


def test_init_schemes_are_untruncated_and_paired_across_activations():
    spec = ModelSpec("mlp", (512,))
    selu = models_keras.build_model(spec, (400,), 10, parse_activation("selu"), seed=3)  # LeCun normal
    relu = models_keras.build_model(spec, (400,), 10, parse_activation("relu"), seed=3)  # He normal
    other = models_keras.build_model(spec, (400,), 10, parse_activation("selu"), seed=4)
    k_selu, k_relu, k_other = (np.asarray(m.layers[1].kernel, dtype=np.float64) for m in (selu, relu, other))
    np.testing.assert_allclose(k_relu, math.sqrt(2) * k_selu, rtol=1e-6)  # the same draws, scaled by the scheme
    assert not np.allclose(k_selu, k_other)
    z = k_selu.ravel() / math.sqrt(1 / 400)  # should be N(0, 1): 204,800 draws
    assert abs(z.std() - 1) < 0.01 and abs(z.mean()) < 0.01
    beyond = np.mean(np.abs(z) > 2)  # Keras's lecun_normal truncates at 2 sd: 0 here; N(0, 1): 4.55%
    assert beyond == pytest.approx(2 * stats.norm.sf(2), abs=0.003)
    assert np.all(np.asarray(selu.layers[1].bias) == 0)
    glorot = models_keras.build_model(spec, (400,), 10, parse_activation("relu", "glorot-uniform"), seed=3)
    u = np.asarray(glorot.layers[1].kernel, dtype=np.float64).ravel() / math.sqrt(6 / (400 + 512))
    assert u.min() >= -1 and u.max() <= 1 and stats.kstest(u, "uniform", args=(-1, 2)).pvalue > 1e-3


def test_training_batches_follow_the_runs_batch_order_across_epochs():
    x, y = np.arange(7 * 3 * 2 * 2, dtype=np.uint8).reshape(7, 3, 2, 2), np.arange(7)
    batches = engine_keras.SeededBatches(x, y, 3, 1 / 255, seed=11)
    assert batches.num_batches is None and batches.steps == 2
    for epoch in (0, 1, 2):
        served = [batches[epoch * 2 + step] for step in range(2)]
        assert [len(b[1]) for b in served] == [3, 4]  # a last batch of one sample joins the one before
        labels = np.concatenate([b[1] for b in served])
        assert labels.tolist() == batch_order(11, epoch, 7).tolist()
        images = np.concatenate([b[0] for b in served])
        np.testing.assert_array_equal(images, x[labels].transpose(0, 2, 3, 1).astype(np.float32) * np.float32(1 / 255))
    evaluation = engine_keras.SeededBatches(x, y, 4, None)
    assert evaluation.num_batches == 2 and np.concatenate([evaluation[i][1] for i in range(2)]).tolist() == list(
        range(7)
    )


def test_keras_specific_refusals(tmp_path, capsys):
    with pytest.raises(ValueError, match="agree only for adamw and for sgd without momentum"):
        engine_keras._optimizer(resolve_config({"framework": "keras", "weight_decay": 1e-4}))
    engine_keras._optimizer(resolve_config({"framework": "keras", "optimizer": "adamw", "weight_decay": 1e-4}))
    other = next(b for b in engine_keras.BACKENDS if b != keras.backend.backend())
    for args, message in (  # each refused before any data is loaded or trained
        (["--framework", "keras", "--weight-decay", "1e-4"], "agree only for adamw"),
        (["--keras-backend", "jax"], "applies to --framework keras"),
        (["--framework", "keras", "--estimate"], "--estimate times the PyTorch engine"),
        (
            ["--framework", "keras", "--keras-backend", other],
            f"Keras is already imported in this process with the {keras.backend.backend()} backend",
        ),
    ):
        assert cli.main(["compare", *args, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    tf = resolve_config({"framework": "keras", "keras_backend": "tensorflow"})
    assert tf.protocol()["keras_backend"] == "tensorflow"
    assert tf.protocol_hash() != resolve_config({"framework": "keras", "keras_backend": "jax"}).protocol_hash()
    assert "keras_backend" not in resolve_config({}).protocol()  # torch protocols and their hashes are unchanged


@pytest.mark.parametrize(
    "backend, data, majority",
    [  # the seed's CNN (channels-last images) on TensorFlow; the MLP on the others, for time
        ("tensorflow", ("--dataset", "digits", "--model", "seed-cnn"), 0.11),
        (
            "jax",
            (
                "--dataset",
                "wdbc",
            ),
            0.63,
        ),
        (
            "torch",
            (
                "--dataset",
                "wdbc",
            ),
            0.63,
        ),
    ],
)
@pytest.mark.slow
def test_compare_runs_end_to_end_on_each_keras_backend(backend, data, majority, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    out = tmp_path / backend
    command = [
        sys.executable,
        "-m",
        "spocu",
        "compare",
        "--no-progress",
        "--framework",
        "keras",
        "--keras-backend",
        backend,
        *data,
        "--activations",
        "relu",
        "spocu(c=1)",
        "--seeds",
        "1",
        "--epochs",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("KERAS_BACKEND", None)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    # the schema of a PyTorch run (test_compare.py checks those files in detail)
    assert set(results) == {
        "schema",
        "created",
        "config",
        "protocol_hash",
        "reference",
        "dataset",
        "environment",
        "summary",
        "comparisons",
        "test_labels",
        "runs",
        "analysis",
        "test_labels_by_seed",
    }
    assert results["config"]["framework"] == "keras" and results["config"]["keras_backend"] == backend
    assert (
        results["environment"]["versions"]["keras"] == keras.__version__ and results["environment"]["versions"][backend]
    )
    config = resolve_config({"dataset": results["config"]["dataset"], "model": results["config"]["model"]["name"]})
    torch_twin = models_torch.build_model(
        config.model,
        tuple(results["dataset"]["input_shape"]),
        results["dataset"]["num_classes"],
        parse_activation("relu"),
    )
    for run in results["runs"]:
        labels = np.array(results["test_labels_by_seed"][str(run["seed"])])
        assert set(run) == {
            "schema",
            "activation",
            "seed",
            "init",
            "framework",
            "framework_version",
            "device",
            "threads",
            "num_parameters",
            "epochs",
            "test_loss",
            "test_accuracy",
            "test_predictions",
            "diverged_at",
            "seconds",
            "started_at",
            "finished_at",
            "protocol_hash",
            "dataset_fingerprint",
            "extra",
            "kernel_path",
            "lr",
            "activation_source_sha256",
            "split_fingerprint",
            "test_loss_median",
            "test_huge_logit_share",
        }
        assert run["framework"] == "keras" and run["extra"]["keras_backend"] == backend
        assert run["lr"] == results["config"]["lr"]  # untuned: every run at the protocol's rate
        if run["activation"] == "relu":  # no SPOCU in the network: no kernel path
            assert run["kernel_path"] is None
        else:
            assert run["kernel_path"].startswith(f"keras-{backend}")
        assert run["num_parameters"] == models_torch.count_parameters(
            torch_twin
        )  # the same network as the PyTorch engine's
        assert [e["epoch"] for e in run["epochs"]] == [1, 2] and all(
            e["seconds"] > 0 and e["eval_seconds"] > 0 for e in run["epochs"]
        )
        assert run["test_accuracy"] == pytest.approx(np.mean(np.array(run["test_predictions"]) == labels))
        assert run["init"] == {"relu": "he-normal", "spocu(c=1)": "lecun-normal"}[run["activation"]]
        # it learns: a network fed misaligned batches would stay near the majority class
        assert run["epochs"][-1]["val_accuracy"] > majority + 0.2 and run["test_accuracy"] > majority + 0.2
    assert f"framework keras ({backend} backend)" in (out / "report.md").read_text()
    with open(out / "epochs.csv") as stream:
        assert len(stream.read().splitlines()) == 1 + 2 * 2


@pytest.mark.slow  # a fresh process importing TensorFlow
def test_a_normal_keras_run_prints_no_framework_log_lines(tmp_path):
    """No TensorFlow/absl/numpy lines on stderr (the issue saw 4-7 of them on every --framework keras run)."""
    import os
    import subprocess
    import sys

    from cli_harness import REPO_SRC

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "PYTHONWARNINGS")}
    env.update(PYTHONPATH=str(REPO_SRC), SPOCU_DATA=str(tmp_path / "cache"), KERAS_BACKEND="tensorflow")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spocu",
            "compare",
            "--framework",
            "keras",
            "--activations",
            "relu",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--hidden",
            "4",
            "--no-progress",
            "--out",
            "o",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
