"""Bad ``spocu compare`` invocations: each a one-line error naming the problem, a non-zero exit,
no traceback, and no file written -- table-driven, in-process for the bulk, a few real subprocesses."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cli_harness import assert_clean_failure, run_cli, snapshot
from spocu import cli
from spocu.experiments.config import resolve_config
from tiny_data import tiny_mnist, write_mnist_idx

FAST = ("--epochs", "1", "--seeds", "1", "--no-progress")

#: (id, arguments, environment, regex the message must match)
CASES = [
    ("first-seed negative", ["--first-seed", "-5"], {}, r"--first-seed: must be >= 0, got -5"),
    ("val-size inf", ["--val-size", "inf"], {}, r"--val-size: expected a fraction in \(0, 1\) or a whole number"),
    ("val-size nan", ["--val-size", "nan"], {}, r"--val-size: expected a fraction .* got nan"),
    ("val-size 1.5", ["--val-size", "1.5"], {}, r"--val-size: expected a fraction .* got 1.5"),
    ("val-size too many", ["--val-size", "100000"], {}, r"val_size=100000 must be .* below 455"),
    ("test-size inf", ["--test-size", "inf"], {}, r"--test-size: expected a fraction"),
    (
        "test-size for mnist",
        ["--dataset", "mnist", "--test-size", "0.1"],
        {},
        r"--test-size applies to wdbc and digits; mnist has an official test set",
    ),
    ("lr inf", ["--lr", "inf"], {}, r"--lr: must be a finite number in \(0, ∞\), got inf"),
    ("lr zero", ["--lr", "0"], {}, r"--lr: must be a finite number in \(0, ∞\)"),
    ("lr nan", ["--lr", "nan"], {}, r"--lr: must be a finite number"),
    ("lr text", ["--lr", "fast"], {}, r"--lr: expected a number, got 'fast'"),
    ("weight decay negative", ["--weight-decay", "-1"], {}, r"--weight-decay: must be a finite number in \[0, ∞\)"),
    (
        "momentum negative",
        ["--optimizer", "sgd", "--momentum", "-1"],
        {},
        r"--momentum: must be a finite number in \[0, 1\)",
    ),
    ("momentum one", ["--optimizer", "sgd", "--momentum", "1"], {}, r"--momentum: must be a finite number in \[0, 1\)"),
    ("momentum with adam", ["--momentum", "0.9"], {}, r"--momentum applies to sgd and rmsprop; adam has none"),
    ("momentum with adamw", ["--optimizer", "adamw", "--momentum", "0.5"], {}, r"adamw has none"),
    ("seed-cnn on wdbc", ["--model", "seed-cnn"], {}, r"--model seed-cnn needs images .* wdbc has 30 features"),
    ("spocu tiny gamma", ["--activations", "spocu(gamma=1e-300)"], {}, r"gamma=1e-300 is outside the supported range"),
    ("elu nan", ["--activations", "elu(alpha=nan)"], {}, r"activation 'elu': alpha=nan is not a finite number"),
    ("unknown activation", ["--activations", "swish"], {}, r"unknown activation 'swish'"),
    ("spocu beta out of domain", ["--activations", "spocu(beta=2)"], {}, r"beta=2.0 is out of range"),
    ("activation twice", ["--activations", "relu, relu"], {}, r"activation listed twice: relu"),
    (
        "torch backend bogus",
        [],
        {"SPOCU_TORCH_BACKEND": "bogus"},
        r"unknown SPOCU torch backend \$SPOCU_TORCH_BACKEND='bogus'",
    ),
    ("depth zero", ["--model", "deep-mlp", "--depth", "0"], {}, r"--depth: must be >= 1, got 0"),
    ("width zero", ["--model", "deep-mlp", "--width", "0"], {}, r"--width: must be >= 1, got 0"),
    ("hidden zero", ["--hidden", "64,0"], {}, r"--hidden: widths must be >= 1"),
    ("hidden with deep-mlp", ["--model", "deep-mlp", "--hidden", "8"], {}, r"hidden sizes apply to mlp, not deep-mlp"),
    ("depth with mlp", ["--depth", "4"], {}, r"depth and width apply to deep-mlp, not mlp"),
    (
        "hidden too big",
        ["--hidden", "100000000000"],
        {},
        r"mlp 100000000000, batch 32 needs at least [\d,.]+ GiB of memory",
    ),
    (
        "data-dir for wdbc",
        ["--data-dir", "."],
        {},
        r"--data-dir applies to datasets read from files .* wdbc is embedded",
    ),
    (  # the dataset a preset names, as the spec resolves it
        "data-dir for a preset's wdbc",
        ["--preset", "paper-wdbc", "--data-dir", "."],
        {},
        r"--data-dir applies to datasets read from files \(mnist, cifar10\); wdbc is embedded in scikit-learn",
    ),
    (
        "data-dir for your data",
        ["--dataset", "mine.csv", "--data-dir", "."],
        {},
        r"--data-dir applies to the built-in datasets read from files \(mnist, cifar10\), not to --dataset mine.csv",
    ),
    ("data-dir empty", ["--dataset", "mnist", "--data-dir", " "], {}, r"--data-dir is empty"),
    ("seeds zero", ["--seeds", "0"], {}, r"--seeds: must be >= 1, got 0"),
    ("seeds huge", ["--seeds", "100000000"], {}, r"--seeds 100000000 is more than 10,000 seeds"),
    ("epochs zero", ["--epochs", "0"], {}, r"--epochs: must be >= 1, got 0"),
    ("batch zero", ["--batch-size", "0"], {}, r"--batch-size: must be >= 1, got 0"),
    ("jobs zero", ["--jobs", "0"], {}, r"--jobs: must be >= 1, got 0"),
    ("threads zero", ["--threads", "0"], {}, r"--threads: must be >= 1, got 0"),
    ("split seed negative", ["--split-seed", "-1"], {}, r"--split-seed: must be in \[0, 4294967296\)"),
    ("unknown preset", ["--preset", "nope"], {}, r"--preset: invalid choice: 'nope'"),
    ("unknown optimizer", ["--optimizer", "lion"], {}, r"--optimizer: invalid choice: 'lion'"),
    ("device tpu", ["--device", "tpu"], {}, r"--device tpu: not a device this engine can use"),
    (
        "keras backend without keras",
        ["--keras-backend", "jax"],
        {},
        r"Keras backend \(jax\) applies to --framework keras",
    ),
    ("out /dev/null", ["--out", "/dev/null"], {}, r"--out /dev/null is not a directory"),
    ("out empty", ["--out", ""], {}, r"--out is empty"),
    (
        "ray address empty",
        ["--executor", "ray", "--ray-address", ""],
        {},
        r"--ray-address is empty; give the cluster's HOST:PORT",
    ),
    (
        "ray address without ray",
        ["--ray-address", "head:6379"],
        {},
        r"--ray-address applies to --executor ray, not --executor local",
    ),
    ("out a file", ["--out", "a-file"], {}, r"--out a-file is a file, not a directory"),
    (
        "out with user files",
        ["--out", "user-dir"],
        {},
        r"--out user-dir holds files that are not a spocu compare output \(report.md\)",
    ),
    ("out unwritable", ["--out", "/proc/spocu-not-here"], {}, r"cannot write to --out /proc/spocu-not-here"),
    (
        "cifar10 not on disk",
        ["--dataset", "cifar10", "--no-download"],
        {},
        r"CIFAR-10 not found and not downloaded: downloads are off",
    ),
    ("rope negative", ["--rope", "-0.5"], {}, r"--rope: must be a finite number in \[0, 100\), got -0.5"),
    ("rope nan", ["--rope", "nan"], {}, r"--rope: must be a finite number in \[0, 100\), got nan"),
]


def _workdir(tmp_path: Path) -> Path:
    """A working directory holding a user's file and a user's directory of notes."""
    work = tmp_path / "work"
    (work / "user-dir").mkdir(parents=True)
    (work / "user-dir" / "report.md").write_text("my notes\n")
    (work / "a-file").write_text("mine\n")
    return work


@pytest.mark.parametrize("name, args, env, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_invocation_is_one_clean_line(name, args, env, pattern, tmp_path, monkeypatch, capsys):
    import re

    work = _workdir(tmp_path)
    monkeypatch.chdir(work)
    monkeypatch.setenv("SPOCU_DATA", str(tmp_path / "cache"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if "--out" not in args:
        args = [*args, "--out", "new-out"]
    before = snapshot(work)
    try:
        code = cli.main(["compare", *FAST, *args])
    except SystemExit as error:  # argparse
        code = error.code
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    assert code == 2, captured
    assert len(errors) == 1 and errors[0].startswith("spocu compare: error: "), captured.err
    assert re.search(pattern, errors[0]), errors[0]
    assert snapshot(work) == before, "a refused compare wrote files"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.tmp"))


def test_mnist_idx_labels_above_9_are_refused_before_the_output_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPOCU_DATA", str(tmp_path / "cache"))
    arrays = tiny_mnist()
    arrays["train_labels"][4] = 121  # uncompressed IDX files have no published checksum
    write_mnist_idx(tmp_path / "root" / "MNIST" / "raw", arrays, gz=False)
    out = tmp_path / "out"
    code = cli.main(
        [
            "compare",
            *FAST,
            "--dataset",
            "mnist",
            "--val-size",
            "10",
            "--no-download",
            "--data-dir",
            str(tmp_path / "root"),
            "--out",
            str(out),
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "holds label 121, but MNIST's classes are 0..9" in error and "train-labels-idx1-ubyte" in error
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX paths")
@pytest.mark.parametrize(
    "args, env, pattern",
    [
        (["--lr", "inf"], {}, r"--lr: must be a finite number"),
        (["--activations", "spocu(gamma=1e-300)"], {}, r"gamma=1e-300 is outside the supported range"),
        (["--model", "seed-cnn"], {}, r"seed-cnn needs images"),
        ([], {"SPOCU_TORCH_BACKEND": "bogus"}, r"unknown SPOCU torch backend"),
        (["--out", "/dev/null"], {}, r"is not a directory"),
        (["--out", "user-dir"], {}, r"not a spocu compare output"),
    ],
    ids=["lr-inf", "gamma-tiny", "seed-cnn-wdbc", "backend-bogus", "dev-null", "user-dir"],
)
@pytest.mark.slow
def test_bad_invocation_in_a_real_process(args, env, pattern, tmp_path):
    work = _workdir(tmp_path)
    before = snapshot(work)
    result = run_cli(
        ["compare", *FAST, *args, *([] if "--out" in args else ["--out", "new-out"])],
        cwd=work,
        env={**env, "SPOCU_DATA": str(tmp_path / "cache")},
    )
    assert result.code == 2
    assert_clean_failure(result, pattern)
    assert snapshot(work) == before


def test_explicit_defaults_are_the_default_protocol(tmp_path, capsys):
    default = resolve_config({"dataset": "wdbc"})
    explicit = resolve_config(
        {
            "dataset": "wdbc",
            "val_size": 0.2,
            "test_size": 0.2,
            "batch_size": 32,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "lr": 1e-3,
        }
    )
    assert explicit.protocol_hash() == default.protocol_hash()
    assert (
        resolve_config({"dataset": "mnist", "val_size": 5000}).protocol_hash()
        == resolve_config({"dataset": "mnist"}).protocol_hash()
    )
    assert resolve_config({"dataset": "wdbc", "val_size": 0.25}).protocol_hash() != default.protocol_hash()
    out = str(tmp_path / "out")
    grid = ["--activations", "relu", *FAST, "--out", out]
    assert cli.main(["compare", *grid]) == 0
    capsys.readouterr()
    assert (
        cli.main(["compare", *grid, "--val-size", "0.2", "--test-size", "0.2", "--batch-size", "32", "--momentum", "0"])
        == 0
    )
    assert "1 of 1 runs already finished" in capsys.readouterr().out


def test_deep_mlp_depth_and_width_are_what_was_asked():
    assert resolve_config({"model": "deep-mlp", "depth": 3, "width": 5}).model.hidden == (5, 5, 5)
    for bad in ({"depth": 0}, {"width": 0}):
        with pytest.raises(ValueError, match="deep-mlp needs depth >= 1 and width >= 1"):
            resolve_config({"model": "deep-mlp", **bad})


def test_ctrl_c_is_still_130(tmp_path, monkeypatch, capsys):
    from spocu.experiments.run import torch_engine as engine_torch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine_torch, "train_run", interrupted)
    assert cli.main(["compare", *FAST, "--activations", "relu", "--out", str(tmp_path / "o")]) == 130
    printed = capsys.readouterr().out
    assert "interrupted: nothing was trained" in " ".join(printed.split())
    assert os.path.isdir(tmp_path / "o")


def test_work_too_big_for_the_memory_is_refused_or_warned_with_the_estimate(tmp_path, monkeypatch, capsys):
    from spocu.experiments import compare

    monkeypatch.setattr(compare, "_physical_memory", lambda: 24 * 2**30)  # the machine of the OOM kill
    assert cli.main(["compare", *FAST, "--hidden", "100000000", "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert "needs at least 84.9 GiB of memory" in error and "more than this machine's 24.0 GiB" in error
    assert not (tmp_path / "o").exists()
    # 30-4000000-2: 132 M parameters x 4 copies (weights, gradients, Adam's two moments) x 4 bytes = 2.0 GiB,
    # plus a batch of 32 x 4 M activations x 3 x 4 bytes = 1.4 GiB: over half of 6 GiB, a warning
    monkeypatch.setattr(compare, "_physical_memory", lambda: 6 * 2**30)
    parameters = 30 * 4_000_000 + 4_000_000 + 4_000_000 * 2 + 2
    assert (
        compare.memory_estimate(resolve_config({"hidden": (4_000_000,)}), (30,), 2)
        == 16 * parameters + 12 * 32 * 4_000_002
    )
    said = []
    compare._check_size(resolve_config({"hidden": (4_000_000,)}), (30,), 2, 1, said.append)
    assert (
        len(said) == 1
        and said[0].startswith("warning: mlp 4000000, batch 32 needs at least 3.4 GiB")
        and "of this machine's 6.0 GiB" in said[0]
    )
    with pytest.raises(compare.OptionError, match="2 runs at a time needs at least 6.8 GiB"):  # --jobs multiplies it
        compare._check_size(resolve_config({"hidden": (4_000_000,)}), (30,), 2, 2, said.append)
    # a batch holds at most the training set: --batch-size 1000000 on 364 samples is not a million rows
    said.clear()
    huge_batch = resolve_config({"hidden": (100_000,), "batch_size": 1_000_000})
    compare._check_size(huge_batch, (30,), 2, 1, said.append, n_train=364)
    assert said == []
    with pytest.raises(compare.OptionError, match="mlp 100000, batch 1000000 needs at least"):
        compare._check_size(huge_batch, (30,), 2, 1, said.append)


def _tiny_png_folder(root: Path) -> None:
    import numpy as np
    from PIL import Image

    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(np.full((4, 4), 40 * i, dtype=np.uint8), "L").save(root / name / f"{i}.png")


@pytest.mark.parametrize("where", ["explicit", "default"])
def test_out_inside_an_image_folder_dataset_is_refused(where, tmp_path, monkeypatch, capsys):
    """The report's PNG figures would become images of a class "out" on the next run (or a resume)."""
    _tiny_png_folder(tmp_path / "pics")
    before = snapshot(tmp_path)
    if where == "explicit":
        monkeypatch.chdir(tmp_path)
        args = ["--dataset", "pics", "--out", "pics/out"]
        pattern = "--out pics/out is inside the image folder --dataset pics"
    else:  # run from inside the folder: the default spocu-runs/ would land in it
        monkeypatch.chdir(tmp_path / "pics")
        args = ["--dataset", "."]
        pattern = "the default output directory spocu-runs/pics-"
    assert cli.main(["compare", *FAST, *args]) == 2
    error = capsys.readouterr().err
    assert pattern in error and "choose an --out outside it" in error and error.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_estimate_with_a_factory_that_does_not_take_the_data(tmp_path, monkeypatch, capsys):
    """--estimate builds the model to choose threads: a model that does not fit the data is one line, not a traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flat.py").write_text(
        "from torch import nn\n"
        "def build(activation, input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Linear(7, 4), activation(), nn.Linear(4, num_classes))\n"
    )
    before = snapshot(tmp_path)
    assert cli.main(["compare", "--model", "flat.py:build", "--estimate"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "spocu compare: error: --model flat.py:build: a batch of shape (2, 30) does not go through the model"
    )
    assert error.count("\n") == 1
    assert snapshot(tmp_path) == before  # not even a __pycache__/ beside the model file


def test_explicit_default_target_is_the_default_protocol(tmp_path, monkeypatch, capsys):
    """--target naming the last column is what no --target means: resuming either way is the same experiment."""
    monkeypatch.chdir(tmp_path)
    rows = ["a,b,kind"] + [f"{i % 5},{(i * 7) % 3},{'x' if i % 2 else 'y'}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    grid = ["--dataset", "t.csv", "--activations", "relu", *FAST, "--out", "o"]
    assert cli.main(["compare", *grid]) == 0
    capsys.readouterr()
    assert cli.main(["compare", *grid, "--target", "kind"]) == 0
    assert "1 of 1 runs already finished" in capsys.readouterr().out
    assert cli.main(["compare", *grid, "--target", "b"]) == 2  # another column is another experiment
    assert "holds runs of a different experiment (target" in capsys.readouterr().err


def test_test_size_is_for_user_data_without_its_own_test_split(tmp_path, monkeypatch, capsys):
    """--test-size on a CSV (no official test set) is honoured; on an npz with x_test it is refused naming the file."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    rows = ["a,kind"] + [f"{i},{'x' if i % 2 else 'y'}" for i in range(40)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert (
        cli.main(["compare", "--dataset", "t.csv", "--test-size", "0.5", "--activations", "relu", *FAST, "--out", "o"])
        == 0
    )
    assert "Test set: 20 samples (a stratified 50% of the 40 samples" in (tmp_path / "o" / "report.md").read_text()
    capsys.readouterr()
    x, y = np.ones((20, 2)), np.arange(20) % 2
    np.savez(tmp_path / "split.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    assert cli.main(["compare", "--dataset", "split.npz", "--test-size", "0.5", *FAST, "--out", "o2"]) == 2
    error = capsys.readouterr().err
    assert error == "spocu compare: error: --test-size does not apply: split.npz has an official test set\n"
    assert not (tmp_path / "o2").exists()


def test_model_file_edited_during_the_sweep_is_one_line_and_keeps_the_finished_runs(tmp_path, monkeypatch, capsys):
    """The factory edits its own file once the first run is saved (as a user editing it mid-sweep would)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "selfedit.py").write_text(
        "import pathlib\n"
        "from torch import nn\n"
        "def build(activation, input_shape, num_classes):\n"
        "    if pathlib.Path('o/runs/relu-seed0.json').exists():\n"
        "        with open(__file__, 'a') as source:\n"
        "            source.write('# edited\\n')\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], 4), activation(), nn.Linear(4, num_classes))\n"
    )
    # relu is saved; selu's build edits the file (checked just before: selu is trained); elu's build sees the change
    code = cli.main(
        ["compare", "--model", "selfedit.py:build", "--activations", "relu, selu, elu", *FAST, "--out", "o"]
    )
    error = capsys.readouterr().err
    assert code == 2 and "Traceback" not in error and error.count("\n") == 1, error
    assert "--model selfedit.py:build: its source file" in error and "changed during the experiment" in error
    assert "the finished runs in o are kept" in error
    assert sorted(p.name for p in (tmp_path / "o" / "runs").glob("*.json")) == ["relu-seed0.json", "selu-seed0.json"]


# ----------------------------------------------------------------------------- hostile data (issue 24)


def _table(path: Path, header: str, row) -> None:
    path.write_text(header + "\n" + "\n".join(row(i) for i in range(40)) + "\n")


def _npz(path: Path, **arrays) -> None:
    import numpy as np

    np.savez(path, **arrays)


def _forged_npz(path: Path) -> None:
    """x.npy's header declares 40 billion rows; the file holds 40."""
    import io
    import zipfile

    import numpy as np

    def npy(array) -> bytes:
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array)
        return buffer.getvalue()

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", npy(np.zeros((40, 3))).replace(b"(40, 3)", b"(40000000000, 3)"))
        archive.writestr("y.npy", npy(np.arange(40) % 2))


def _features(**changes):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(40, 3))
    for (row, column), value in changes.get("cells", {}).items():
        x[row, column] = value
    if "column" in changes:
        x[:, 2] = changes["column"]
    return x


def _write(kind: str, path: Path) -> None:
    import numpy as np

    y = np.arange(40) % 2
    if kind == "1e308 in a csv":
        _table(path, "a,b,label", lambda i: f"{'1e308' if i == 3 else i},{i % 3},{i % 2}")
    elif kind == "1e300 in an npz":
        _npz(path, x=_features(cells={(5, 1): 1e300}), y=y)
    elif kind == "duplicate label column":
        _table(path, "a,label,label", lambda i: f"{i},{i % 2},{i % 2}")
    elif kind == "feature equal to the label":
        _table(path, "a,copy,label", lambda i: f"{i},{i % 2},{i % 2}")
    elif kind == "feature one-to-one onto the label":
        _table(path, "a,flag,label", lambda i: f"{i},{'yes' if i % 2 else 'no'},{'cat' if i % 2 else 'dog'}")
    elif kind == "npz column one-to-one onto y":
        _npz(path, x=_features(column=y * 3 + 1), y=y)
    elif kind == "integer beyond int64":
        _table(path, "a,big,label", lambda i: f"{i},{i % 3}99999999999999999999999,{i % 2}")
    elif kind == "npz huge declared shape":
        _forged_npz(path)
    elif kind == "npz zero-dimension images":
        _npz(path, x=np.zeros((40, 0, 5)), y=y)


DATA_CASES = [
    ("1e308 in a csv", "t.csv", r"t.csv: column 'a', row 4 holds 1e\+308, beyond float32's range"),
    ("1e300 in an npz", "t.npz", r"t.npz: x\[5, 1\] = 1e\+300 is beyond float32's range"),
    ("duplicate label column", "t.csv", r"t.csv: column names repeat: 'label' \(columns 2, 3\)"),
    (
        "feature equal to the label",
        "t.csv",
        r"feature 'copy' maps one-to-one onto the label 'label' .* pass --allow-leak",
    ),
    ("feature one-to-one onto the label", "t.csv", r"feature 'flag' maps one-to-one onto the label 'label'"),
    ("npz column one-to-one onto y", "t.npz", r"t.npz: feature x\[:, 2\] maps one-to-one onto the label y"),
    ("integer beyond int64", "t.csv", r"column 'big' holds numbers pandas cannot read as int64 or float \(row 3: 2999"),
    ("npz huge declared shape", "t.npz", r"t.npz: x declares shape \(40000000000, 3\) \(894.1 GiB\) but holds"),
    ("npz zero-dimension images", "t.npz", r"t.npz: x has shape \(40, 0, 5\); a sample must hold at least one value"),
]


@pytest.mark.parametrize("kind, name, pattern", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_hostile_data_is_one_line_before_anything_is_written(kind, name, pattern, tmp_path, monkeypatch, capsys):
    import re
    import warnings

    monkeypatch.chdir(tmp_path)
    _write(kind, tmp_path / name)
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy, sklearn or pandas warning on the way to the refusal
        code = cli.main(["compare", *FAST, "--activations", "relu", "--dataset", name, "--out", "o"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and error.startswith("spocu compare: error: "), error
    assert re.search(pattern, error), error
    assert snapshot(tmp_path) == before


def test_allow_leak_keeps_the_column(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _write("feature one-to-one onto the label", tmp_path / "t.csv")
    assert (
        cli.main(["compare", *FAST, "--activations", "relu", "--dataset", "t.csv", "--allow-leak", "--out", "o"]) == 0
    )
    assert "allow-leak = true" in (tmp_path / "o" / "config.toml").read_text()


def test_a_z_score_beyond_float32_names_the_file_column_and_row(tmp_path):
    """A column that is all but constant on the training split and far off on another: z = 1e40 is inf in float32."""
    from spocu.experiments.data.datasets import DatasetError
    from spocu.experiments.data.user_data import load_user_dataset

    refused = None
    for row in range(40):  # put the outlier on a row the split leaves out of training
        _table(tmp_path / "t.csv", "a,tiny,label", lambda i: f"{i},{1e10 if i == row else (-1) ** i * 1e-30},{i % 2}")
        try:
            load_user_dataset(tmp_path / "t.csv")
        except DatasetError as error:
            refused = (row, str(error))
            break
    assert refused is not None
    row, message = refused
    assert f"t.csv: column 'tiny', row {row + 1} = 10000000000.0 is not a finite float32 once standardized" in message


def test_constant_columns_are_centred_and_said_so(tmp_path):
    from spocu.experiments.data.user_data import load_user_dataset

    _table(tmp_path / "t.csv", "a,same,label", lambda i: f"{i % 7},5,{i % 2}")
    dataset = load_user_dataset(tmp_path / "t.csv")
    assert "1 constant on the training split, centred only (same)" in dataset.info["preprocessing"]
    assert (dataset.x_train[:, 1] == 0).all() and (dataset.x_test[:, 1] == 0).all()


def test_seed_cnn_on_huge_images_is_refused_with_its_memory_estimate(monkeypatch):
    """--image-size 1500 1500 with seed-cnn: the estimate was 0 for the CNNs, and the allocator failed mid-run."""
    from spocu.experiments import compare

    monkeypatch.setattr(compare, "_physical_memory", lambda: 24 * 2**30)
    config = resolve_config({"dataset": "cifar10", "model": "seed-cnn", "batch_size": 64})
    # conv 1: 32 x 1498 x 1498 floats per sample, kept as output, activation and gradient: 1.3 GB a sample
    assert compare.memory_estimate(config, (3, 1500, 1500), 10) > 64 * 3 * 32 * 1498 * 1498 * 4
    assert compare.memory_estimate(config, (3, 32, 32), 10) < 2**30  # CIFAR-10 itself stays small
    with pytest.raises(compare.OptionError, match=r"seed-cnn, batch 64 needs at least [\d,.]+ GiB of memory"):
        compare._check_size(config, (3, 1500, 1500), 10, 1, print)
    resnet = resolve_config({"dataset": "cifar10", "model": "resnet20", "batch_size": 128})
    assert compare.memory_estimate(resnet, (3, 1500, 1500), 10) > 128 * 7 * 16 * 1500 * 1500 * 4


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_fifo_inside_out_is_refused_without_blocking(tmp_path, capsys):
    """A FIFO named config.json blocked the ownership check forever; a FIFO, socket or device is refused."""
    out = tmp_path / "o"
    out.mkdir()
    (out / ".spocu-compare").write_text("spocu compare output directory\n")
    os.mkfifo(out / "config.json")
    before = snapshot(tmp_path)
    assert cli.main(["compare", *FAST, "--activations", "relu", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds config.json (a FIFO): not a file spocu compare writes" in error
    assert snapshot(tmp_path) == before


def test_prepare_removes_only_its_own_and_dead_processes_temp_files(tmp_path, capsys):
    import subprocess

    out = tmp_path / "o"
    assert cli.main(["compare", *FAST, "--activations", "relu", "--out", str(out)]) == 0
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        ).stdout.strip()
        theirs = out / "runs" / f".relu-seed1.json.{other.pid}.abcd1234.tmp"  # another run writing right now
        users = out / ".notes.txt.tmp"  # the user's own file in the directory
        stale = out / f".results.json.{dead}.zz9_zz9z.tmp"  # left by a process that died mid-write
        for path in (theirs, users, stale):
            path.write_text("x")
        capsys.readouterr()
        assert cli.main(["compare", *FAST, "--activations", "relu", "--out", str(out)]) == 0
        assert theirs.exists() and users.exists() and not stale.exists()
    finally:
        other.kill()
        other.wait()


@pytest.mark.slow  # two fresh processes, each importing torch
def test_default_output_names_differ_for_processes_started_in_the_same_second(tmp_path):
    import subprocess

    from cli_harness import REPO_SRC

    env = {**os.environ, "PYTHONPATH": str(REPO_SRC), "SPOCU_DATA": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "spocu", "compare", *FAST, "--activations", "relu", "--hidden", "4"]
    runs = [
        subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert [code for code, _ in results] == [0, 0], results
    made = sorted(p.name for p in (tmp_path / "spocu-runs").iterdir())
    assert len(made) == 2 and all(name.endswith(tuple(f"-{run.pid}" for run in runs)) for name in made), made


def test_os_exit_in_a_factory_is_a_refusal_not_a_silent_exit_0(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quits.py").write_text("import os\ndef build(activation, input_shape, num_classes):\n    os._exit(0)\n")
    before = snapshot(tmp_path)
    assert cli.main(["compare", *FAST, "--activations", "relu", "--model", "quits.py:build", "--out", "o"]) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and "--model quits.py:build: it called os._exit(0), which would end spocu compare silently" in error
    )
    assert snapshot(tmp_path) == before


@pytest.mark.slow  # a fresh process with worker processes
def test_a_jobs_worker_killed_by_the_oom_killer_is_one_line(tmp_path):
    """kill -9 of a --jobs worker (what the OOM killer does): one line naming it and how to resume, no traceback."""
    (tmp_path / "oom.py").write_text(
        "import multiprocessing, os, signal\n"
        "from torch import nn\n"
        "def build(activation, input_shape, num_classes):\n"
        "    if multiprocessing.current_process().name != 'MainProcess':  # a worker: killed as by the OOM killer\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], 4), activation(), nn.Linear(4, num_classes))\n"
    )
    result = run_cli(
        ["compare", *FAST, "--activations", "relu, selu", "--jobs", "2", "--model", "oom.py:build", "--out", "o"],
        cwd=tmp_path,
        env={"SPOCU_DATA": str(tmp_path / "cache")},
    )
    assert result.code == 2, result.output
    assert_clean_failure(
        result, r"a worker process died without reporting an error \(killed, or out of memory\?\).* \(--out o\)"
    )
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]


def test_category_names_with_line_breaks_stay_on_their_report_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    two_lines = "dark\nred"
    rows = ["a,colour,kind"] + [
        f'{i % 7},"{two_lines if i % 3 else "blue"}",{"x" if i % 2 else "y"}' for i in range(40)
    ]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    assert cli.main(["compare", *FAST, "--activations", "relu", "--dataset", "t.csv", "--out", "o"]) == 0
    report = (tmp_path / "o" / "report.md").read_text()
    line = next(line for line in report.splitlines() if line.startswith("- One-hot encoded columns"))
    assert "colour: blue, dark\\nred." in line


def test_pil_decompression_bomb_warnings_do_not_reach_the_user(tmp_path, monkeypatch):
    """Pillow warns above MAX_IMAGE_PIXELS; spocu's own memory check speaks for large images, in one line."""
    import warnings

    from PIL import Image

    from spocu.experiments.data.user_data import load_user_dataset

    _tiny_png_folder(tmp_path / "pics")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # 4 x 4 = 16 pixels: a "bomb" warning, not yet an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = load_user_dataset(tmp_path / "pics")
    assert dataset.input_shape == (1, 4, 4)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads files whatever their permissions"
)
@pytest.mark.parametrize("what", ["npz", "image root", "class folder"])
def test_unreadable_data_is_named_as_unreadable(what, tmp_path, monkeypatch, capsys):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    if what == "npz":
        np.savez(tmp_path / "d.npz", x=np.ones((20, 2)), y=np.arange(20) % 2)
        target, locked, pattern = "d.npz", tmp_path / "d.npz", "d.npz: cannot read it (Permission denied)"
    else:
        _tiny_png_folder(tmp_path / "pics")
        target = "pics"
        locked = tmp_path / "pics" if what == "image root" else tmp_path / "pics" / "b"
        pattern = (
            "pics: cannot read it (Permission denied)"
            if what == "image root"
            else "b: cannot read this class folder (Permission denied)"
        )
    locked.chmod(0)
    try:
        assert cli.main(["compare", *FAST, "--activations", "relu", "--dataset", target, "--out", "o"]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and pattern in error and not (tmp_path / "o").exists()
    finally:
        locked.chmod(0o755)


FACTORY_CASES = [
    (
        "right only for a batch of 2",
        "class Net(nn.Module):\n"
        "    def __init__(self, activation, n, k):\n"
        "        super().__init__(); self.l, self.a, self.o = nn.Linear(n, 8), activation(), nn.Linear(8, k)\n"
        "    def forward(self, x):\n"
        "        return self.o(self.a(self.l(x)).reshape(2, -1))\n"
        "def build(activation, input_shape, num_classes):\n"
        "    return Net(activation, input_shape[0], num_classes)\n",
        r"--model m.py:build: a training batch of 3 does not go through the model \(RuntimeError: mat1 and mat2 shapes",
    ),
    (
        "torch.set_default_dtype(float64)",
        "import torch\n"
        "def build(activation, input_shape, num_classes):\n"
        "    torch.set_default_dtype(torch.float64)\n"
        "    return nn.Sequential(nn.Linear(input_shape[0], 8), activation(), nn.Linear(8, num_classes))\n",
        r"--model m.py:build: the model's parameters are float64; spocu compare trains in float32",
    ),
]


@pytest.mark.parametrize("name, source, pattern", FACTORY_CASES, ids=[c[0] for c in FACTORY_CASES])
def test_hostile_factories_are_one_line_before_anything_is_written(
    name, source, pattern, tmp_path, monkeypatch, capsys
):
    import re

    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.py").write_text("from torch import nn\n" + source)
    before = snapshot(tmp_path)
    assert cli.main(["compare", *FAST, "--activations", "relu", "--model", "m.py:build", "--out", "o"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(pattern, error), error
    assert snapshot(tmp_path) == before
    assert torch.get_default_dtype() == torch.float32  # the factory's change did not outlive its call
