"""spocu compare end to end on the user's data and model (tiny files the tests write, --epochs 1)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli_harness import assert_clean_failure, run_cli, snapshot
from spocu import cli

MODEL = """
from torch import nn

def build(activation, input_shape, num_classes):
    return nn.Sequential(nn.Linear(input_shape[0], 8), activation(), nn.Linear(8, num_classes))
"""

SWAP = """
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3), nn.ReLU())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(nn.functional.relu(self.features(x)).mean(dim=(2, 3)))

def net(*, weights=None, progress=True, **kwargs):  # torchvision's factory signature
    return Net(**kwargs)

class Hidden(Net):
    def forward(self, x):  # a relu no swap can reach
        return torch.ops.aten.relu.default(super().forward(x))

def hidden(*, weights=None, **kwargs):
    return Hidden(**kwargs)
"""


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def _compare(*args: str) -> int:
    return cli.main(
        ["compare", "--no-progress", "--epochs", "1", "--seeds", "1", "--activations", "spocu, relu", *args]
    )


def _csv(path: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    pd.DataFrame(
        {
            "size": rng.normal(size=n),
            "colour": rng.choice(["red", "blue"], n),
            "kind": np.where(np.arange(n) % 2, "rose", "tulip"),
        }
    ).to_csv(path, index=False)


def test_csv_and_model_file_end_to_end(tmp_path, capsys):
    _csv(tmp_path / "flowers.csv")
    (tmp_path / "net.py").write_text(MODEL)
    out = tmp_path / "out"
    assert (
        _compare(
            "--dataset", str(tmp_path / "flowers.csv"), "--model", f"{tmp_path / 'net.py'}:build", "--out", str(out)
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["class_mapping"] == {"rose": 0, "tulip": 1}
    assert results["dataset"]["one_hot"] == {"colour": ["blue", "red"]} and results["dataset"]["input_shape"] == [3]
    protocol = json.loads((out / "config.json").read_text())["protocol"]
    assert protocol["dataset"] == "flowers.csv" and protocol["data_sha256"] == results["dataset"]["content_sha256"]
    assert (
        protocol["model"]["name"] == "net.py:build" and protocol["model"]["source_sha256"] and protocol["init"] == "own"
    )
    assert {r["init"] for r in results["runs"]} == {"own"} and {r["num_parameters"] for r in results["runs"]} == {
        8 * 3 + 8 + 8 * 2 + 2
    }
    report = (out / "report.md").read_text()
    assert "rose → 0, tulip → 1" in report and "colour: blue, red" in report and "net.py:build" in report
    # resuming with the same files skips the finished runs
    assert (
        _compare(
            "--dataset", str(tmp_path / "flowers.csv"), "--model", f"{tmp_path / 'net.py'}:build", "--out", str(out)
        )
        == 0
    )
    assert "2 of 2 runs already finished" in _printed(capsys)


def test_resume_refused_after_the_data_or_the_model_changed(tmp_path, capsys):
    _csv(tmp_path / "d.csv")
    (tmp_path / "net.py").write_text(MODEL)
    args = (
        "--dataset",
        str(tmp_path / "d.csv"),
        "--model",
        f"{tmp_path / 'net.py'}:build",
        "--out",
        str(tmp_path / "out"),
    )
    assert _compare(*args) == 0
    before = snapshot(tmp_path / "out")
    _csv(tmp_path / "d.csv", seed=1)
    assert _compare(*args) == 2
    assert f"{tmp_path / 'd.csv'} changed since the runs in" in _printed(capsys)
    _csv(tmp_path / "d.csv")
    (tmp_path / "net.py").write_text(MODEL + "# wider next time\n")
    assert _compare(*args) == 2
    assert f"the model code {tmp_path / 'net.py'} changed since the runs" in _printed(capsys)
    assert snapshot(tmp_path / "out") == before


def _pets(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 3)):
        for name in ("cat", "dog"):
            (tmp_path / "pets" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(
                    tmp_path / "pets" / split / name / f"{i}.png"
                )


def test_a_partial_swap_is_refused_before_anything_is_written_unless_allowed(tmp_path):
    _pets(tmp_path)
    (tmp_path / "tv.py").write_text(SWAP)
    before = snapshot(tmp_path)
    args = [
        "compare",
        "--no-progress",
        "--epochs",
        "1",
        "--seeds",
        "1",
        "--dataset",
        "pets",
        "--model",
        "tv.py:hidden",
        "--swap",
        "relu",
    ]
    result = run_cli(args, cwd=tmp_path)
    assert_clean_failure(result, r"tv\.py:hidden --swap relu: 1 ops of the swapped kind still run after the swap \(3 of 4 relu "
                                 r"\(2 modules, 1 functional calls\)\): 1 in \(model\) \(tv\.py:\d+\); .*--allow-partial-swap")  # fmt: skip
    assert snapshot(tmp_path) == before
    out = tmp_path / "out"
    assert _compare("--dataset", str(tmp_path / "pets"), "--model", f"{tmp_path / 'tv.py'}:hidden", "--swap", "relu", "--allow-partial-swap",
                    "--activations", "spocu", "relu", "--out", str(out)) == 0  # fmt: skip
    model = json.loads((out / "results.json").read_text())["config"]["model"]
    assert model["swap_report"] == "3 of 4 relu (2 modules, 1 functional calls)" and model["swap_left"] == 1
    assert "swapped for the compared activation; 1 still run (--allow-partial-swap)" in (out / "report.md").read_text()


def test_image_folder_with_a_swapped_torchvision_style_factory(tmp_path):
    _pets(tmp_path)
    (tmp_path / "tv.py").write_text(SWAP)
    out = tmp_path / "out"
    assert (
        _compare(
            "--dataset",
            str(tmp_path / "pets"),
            "--model",
            f"{tmp_path / 'tv.py'}:net",
            "--swap",
            "relu",
            "--out",
            str(out),
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["dataset"]["test"] == 6 and results["dataset"]["input_shape"] == [3, 6, 7]
    assert results["config"]["model"]["swap"] == "relu"
    assert results["config"]["model"]["swap_report"] == "3 of 3 relu (2 modules, 1 functional calls)"
    assert results["config"]["model"]["swap_left"] == 0
    assert (
        "net with 3 of 3 relu (2 modules, 1 functional calls) swapped for the compared activation"
        in (out / "report.md").read_text()
    )


def test_npz_with_resnet20(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "a.npz",
        x_train=rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8),
        y_train=np.arange(30) % 3,
        x_test=rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )
    out = tmp_path / "out"
    args = (
        "--dataset",
        str(tmp_path / "a.npz"),
        "--model",
        "resnet20",
        "--lr-milestones",
        "1",
        "--activations",
        "relu",
    )
    assert _compare(*args, "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    assert {r["num_parameters"] for r in results["runs"]} == {
        269_722 - (64 * 10 + 10) + (64 * 3 + 3)
    }  # 3 classes, not 10
    assert results["config"]["lr_milestones"] == [1]


@pytest.mark.slow
def test_keras_engine_runs_a_keras_factory(tmp_path):
    pytest.importorskip("keras")
    _csv(tmp_path / "d.csv")
    (tmp_path / "k.py").write_text(
        textwrap.dedent("""
        import keras

        def build(activation, input_shape, num_classes):
            return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(8, activation=activation), keras.layers.Dense(num_classes)])
    """)
    )
    out = tmp_path / "out"
    assert (
        _compare(
            "--framework",
            "keras",
            "--dataset",
            str(tmp_path / "d.csv"),
            "--model",
            f"{tmp_path / 'k.py'}:build",
            "--out",
            str(out),
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert {r["framework"] for r in results["runs"]} == {"keras"} and {
        r["num_parameters"] for r in results["runs"]
    } == {3 * 8 + 8 + 8 * 2 + 2}


@pytest.mark.parametrize(
    "make, args, message",
    [
        (
            lambda d: (d / "d.csv").write_text("a,b,y\n1,,x\n2,3,y\n"),
            ("--dataset", "d.csv"),
            r"d\.csv: missing values in 1 column\(s\): b \(1\)",
        ),
        (
            lambda d: _csv(d / "d.csv"),
            ("--dataset", "d.csv", "--target", "label"),
            r"no column 'label' for --target; the columns are: size, colour, kind",
        ),
        (
            lambda d: (d / "m.py").write_text("import no_such_thing_spocu\n"),
            ("--model", "m.py:build"),
            r"m\.py:build: importing .*m\.py failed: ModuleNotFoundError",
        ),
        (
            lambda d: (d / "m.py").write_text("def build(a, b):\n    pass\n"),
            ("--model", "m.py:build"),
            r"cannot be called as build\(activation, input_shape, num_classes\)",
        ),
        (
            lambda d: (d / "m.py").write_text("def build(a, b, c):\n    return 42\n"),
            ("--model", "m.py:build"),
            r"m\.py:build: returned int, not a torch\.nn\.Module",
        ),
        (lambda d: None, ("--dataset", "wdbc", "--swap", "relu"), r"--swap applies to a model factory"),
        (
            lambda d: None,
            ("--dataset", "wdbc", "--model", "x.py:f", "--swap", "softsign"),
            r"--swap softsign: not an activation kind",
        ),
        (lambda d: None, ("--dataset", "wdbc", "--model", "resnet20"), r"--model resnet20 needs images"),
        (
            lambda d: None,
            ("--preset", "resnet20-cifar10", "--framework", "keras"),
            r"the PyTorch engine \(--framework torch\)",
        ),
    ],
)
def test_bad_data_and_models_fail_cleanly_before_writing(tmp_path, make, args, message):
    make(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(["compare", "--no-progress", "--epochs", "1", "--seeds", "1", *args], cwd=tmp_path)
    assert_clean_failure(result, message)
    assert snapshot(tmp_path) == before  # no output directory, nothing else
