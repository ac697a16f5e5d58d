"""The output directory is ours or refused; run files are validated before they enter a report;
a full or read-only disk is a one-line error that keeps the finished runs and says how to resume."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest

from spocu import cli
from spocu.experiments.run import store

GRID = ("--activations", "relu", "selu", "--seeds", "2", "--epochs", "2")


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


def _error(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("spocu compare: error: "), captured.err
    return lines[0]


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 2 x 2 experiment (wdbc, 2 epochs)."""
    out = tmp_path_factory.mktemp("store") / "finished"
    assert _compare(*GRID, "--out", str(out)) == 0
    return out


@pytest.fixture
def experiment(finished, tmp_path) -> Path:
    """A private copy of the finished experiment, to damage."""
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    return copy


# ----------------------------------------------------------------------------- ours or refused


def test_a_directory_of_user_files_is_refused_untouched(tmp_path, capsys):
    user = tmp_path / "UD"
    user.mkdir()
    (user / "report.md").write_text("my notes")
    before = _files(user)
    assert _compare(*GRID, "--out", str(user)) == 2
    message = _error(capsys)
    assert "not a spocu compare output" in message and "report.md" in message
    assert _files(user) == before and sorted(p.name for p in user.iterdir()) == ["report.md"]


@pytest.mark.parametrize("target", ["file", "/dev/null", "below-a-file"])
def test_a_file_or_device_is_refused(tmp_path, capsys, target):
    (tmp_path / "file").write_text("x")
    out = {"file": str(tmp_path / "file"), "/dev/null": "/dev/null", "below-a-file": str(tmp_path / "file" / "run")}[
        target
    ]
    assert _compare(*GRID, "--out", out) == 2
    assert "not a directory" in _error(capsys)
    assert (tmp_path / "file").read_text() == "x"


def test_empty_out_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _compare(*GRID, "--out", "") == 2
    assert "--out is empty" in _error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_empty_directory_and_our_own_are_accepted(finished, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _compare(*GRID, "--seeds", "1", "--out", str(empty)) == 0
    assert (empty / store.MARKER).is_file() and (empty / "results.json").is_file()
    legacy = tmp_path / "legacy"  # made before the marker existed: recognized by its config.json
    shutil.copytree(finished, legacy)
    (legacy / store.MARKER).unlink()
    assert _compare(*GRID, "--out", str(legacy)) == 0
    assert "4 of 4 runs already finished" in capsys.readouterr().out


def test_unwritable_out_is_one_line(capsys):
    assert _compare(*GRID, "--out", "/proc/spocu-cannot-be-here") == 2
    assert "cannot write to --out /proc/spocu-cannot-be-here" in _error(capsys)


def test_read_only_filesystem_is_one_line(tmp_path, capsys, monkeypatch):
    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(store, "atomic_write_text", read_only)
    assert _compare(*GRID, "--out", str(tmp_path / "ro")) == 2
    assert "Read-only file system" in _error(capsys)


@pytest.mark.slow
def test_full_disk_mid_sweep_keeps_the_finished_runs_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    real = store.atomic_write_text
    saved = []

    def fills_up(path, text):
        if Path(path).parent.name == "runs":
            if len(saved) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            saved.append(path)
        real(path, text)

    monkeypatch.setattr(store, "atomic_write_text", fills_up)
    assert _compare(*GRID, "--out", str(out)) == 2
    message = _error(capsys)
    assert "disk is full" in message and "intact" in message and f"--out {out} to resume" in message
    finished = _files(out / "runs")
    assert len(finished) == 2 and not list(out.rglob(".*.tmp")) and not (out / "results.json").exists()
    monkeypatch.setattr(store, "atomic_write_text", real)
    assert _compare(*GRID, "--out", str(out)) == 0
    assert "2 of 4 runs already finished" in capsys.readouterr().out
    assert {k: v for k, v in _files(out / "runs").items() if k in finished} == finished


# ----------------------------------------------------------------------------- run files


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    result = change(data)
    path.write_text(json.dumps(data if result is None else result))


_DAMAGE = {
    "accuracy above 1": (lambda d: d.update(test_accuracy=1.5), "test_accuracy = 1.5 is not a number in [0, 1]"),
    "accuracy not its predictions": (
        lambda d: d.update(test_accuracy=0.5),
        "test_accuracy = 0.5 but its test predictions score",
    ),
    "negative loss": (lambda d: d.update(test_loss=-0.1), "test_loss = -0.1 is not a number >= 0"),
    "epochs cut": (lambda d: d.update(epochs=d["epochs"][:1]), "holds 1 epoch(s), but the protocol trains 2"),
    "epoch accuracy": (lambda d: d["epochs"][1].update(val_accuracy=2.0), "epoch 2: val_accuracy = 2.0"),
    "class 7 of 2": (lambda d: d["test_predictions"].__setitem__(0, 7), "predicts class 7, outside the 2 classes"),
    "predictions short": (
        lambda d: d.update(test_predictions=d["test_predictions"][:-1]),
        "113 test predictions for a test set of 114",
    ),
    "string seed": (lambda d: d.update(seed="1"), 'seed = "1" is not a whole number'),
    "other seed": (lambda d: d.update(seed=7), "holds relu seed 7"),
    "other protocol": (lambda d: d.update(protocol_hash="0" * 12), "different protocol"),
    "list": (lambda d: [1, 2, 3], "holds JSON list, not a run record"),
}


@pytest.mark.parametrize("case", list(_DAMAGE))
def test_a_damaged_run_file_is_named_and_refused(experiment, capsys, case):
    change, reason = _DAMAGE[case]
    path = experiment / "runs" / "relu-seed1.json"
    _edit(path, change)
    before = _files(experiment)
    assert _compare(*GRID, "--out", str(experiment)) == 2
    message = _error(capsys)
    assert str(path) in message and reason in message and "--skip-bad-runs" in message
    assert _files(experiment) == before  # results.json and the report are not rewritten


def test_run_files_holding_null_or_a_directory_are_refused(experiment, capsys):
    path = experiment / "runs" / "relu-seed1.json"
    path.write_text("null")
    assert _compare(*GRID, "--out", str(experiment)) == 2
    assert "holds JSON NoneType, not a run record" in _error(capsys)
    path.unlink()
    path.mkdir()
    assert _compare(*GRID, "--out", str(experiment)) == 2
    assert "is a directory, not a run file" in _error(capsys)


def test_skip_bad_runs_leaves_the_file_out_and_says_so(experiment, capsys):
    path = experiment / "runs" / "relu-seed1.json"
    _edit(path, lambda d: d.update(test_accuracy=1.5))
    damaged = path.read_bytes()
    assert _compare(*GRID, "--skip-bad-runs", "--out", str(experiment)) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert f"skipped {path}" in printed
    results = json.loads((experiment / "results.json").read_text())
    assert [s["path"] for s in results["skipped_runs"]] == [str(path)]
    assert sorted((r["activation"], r["seed"]) for r in results["runs"]) == [("relu", 0), ("selu", 0), ("selu", 1)]
    assert (
        results["summary"]["relu"]["test_accuracy"]["n"] == 1
        and results["summary"]["relu"]["test_accuracy"]["mean"] <= 1
    )
    assert "Left out of every statistic (--skip-bad-runs)" in (experiment / "report.md").read_text()
    assert path.read_bytes() == damaged  # not retrained over, not touched


@pytest.mark.parametrize("content", ["[]", "null", '{"schema": "spocu.compare-config/1", "protocol": "x"}', "{"])
def test_a_corrupt_config_json_is_refused(experiment, capsys, content):
    (experiment / "config.json").write_text(content)
    before = _files(experiment)
    assert _compare(*GRID, "--out", str(experiment)) == 2
    message = _error(capsys)
    assert "config.json" in message and (
        "not a spocu compare config" in message or "not a spocu compare output" in message
    )
    assert _files(experiment) == before


def test_validate_run_accepts_what_the_engine_wrote(finished):
    from spocu.experiments.activations import parse_activation
    from spocu.experiments.config import resolve_config
    from spocu.experiments.data.datasets import load_dataset

    config = resolve_config({"activations": ("relu", "selu"), "seeds": 2, "epochs": 2})
    dataset = load_dataset("wdbc", split=config.split)
    for spec in config.activations:
        for seed in config.seeds:
            data = json.loads((finished / "runs" / f"{spec.slug}-seed{seed}.json").read_text())
            assert store.validate_run(data, parse_activation(spec.canonical), seed, config, dataset).seed == seed
