"""spocu compare --track mlflow / tensorboard: the runs read back through mlflow.search_runs and TensorBoard's
EventAccumulator equal results.json; a resumed comparison logs no run twice; a tracking failure warns once and
leaves the comparison's files complete and unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spocu import cli

mlflow = pytest.importorskip("mlflow", reason='MLflow is not installed (pip install "spocu[mlflow]")')
pytest.importorskip("sqlalchemy")
pytest.importorskip("tensorboard", reason='TensorBoard is not installed (pip install "spocu[tensorboard]")')
from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

FAST = ("compare", "--no-progress", "--activations", "relu", "selu", "--seeds", "2", "--epochs", "3", "--hidden", "8")
KEYS = {"relu-seed0", "relu-seed1", "selu-seed0", "selu-seed1"}


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def _printed(capsys) -> str:
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def _mlflow_runs(uri: str, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    frame = mlflow.search_runs(experiment_names=["spocu compare"])
    parents = frame[frame["tags.spocu.role"] == "comparison"]
    children = frame[frame["tags.spocu.role"] == "run"]
    return parents, children


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    home = tmp_path_factory.mktemp("tracked")
    out = home / "cmp"
    assert cli.main([*FAST, "--out", str(out), "--track", "mlflow", "--track", "tensorboard"]) == 0
    return home, out


@pytest.mark.slow
def test_mlflow_runs_equal_results_json(tracked, monkeypatch):
    home, out = tracked
    assert (home / "mlflow.db").is_file()  # the default store: beside the output directory
    parents, children = _mlflow_runs(f"sqlite:///{home / 'mlflow.db'}", monkeypatch)
    assert len(parents) == 1 and len(children) == 4
    parent = parents.iloc[0]
    assert set(children["tags.spocu.run"]) == KEYS
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"]}
    results = _results(out)
    client = MlflowClient()
    assert parent["params.protocol_hash"] == results["protocol_hash"] and parent["params.epochs"] == "3"
    assert parent["tags.spocu.seeds"] == "[0, 1]" and parent["tags.spocu.activations"] == '["relu", "selu"]'
    assert "params.seeds" not in children.columns  # the grid is not a param: it may grow on resume
    assert {"report.md", "results.json", "epochs.csv"} <= {a.path for a in client.list_artifacts(parent["run_id"])}
    for run in results["runs"]:
        row = children[children["tags.spocu.run"] == f"{run['activation']}-seed{run['seed']}"].iloc[0]
        assert row["status"] == "FINISHED"
        assert row["metrics.test_accuracy"] == run["test_accuracy"] and row["metrics.test_loss"] == run["test_loss"]
        assert row["params.activation"] == run["activation"] and row["params.seed"] == str(run["seed"])
        assert row["params.lr"] == "0.001" and row["params.model.hidden"] == "[8]"
        for metric in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            history = sorted((m.step, m.value) for m in client.get_metric_history(row["run_id"], metric))
            assert history == [(e["epoch"], e[metric]) for e in run["epochs"]], metric
        logged = [a.path for a in client.list_artifacts(row["run_id"])]
        assert logged == [f"{run['activation']}-seed{run['seed']}.json"]
        local = Path(client.download_artifacts(row["run_id"], logged[0], str(out.parent / f"dl-{row['run_id']}")))
        assert json.loads(local.read_text()) == run


def test_tensorboard_event_files_equal_results_json(tracked):
    _, out = tracked
    results = _results(out)
    assert {p.name for p in (out / "tensorboard").iterdir()} == KEYS
    for run in results["runs"]:
        events = EventAccumulator(str(out / "tensorboard" / f"{run['activation']}-seed{run['seed']}"))
        events.Reload()
        for tag, metric in (
            ("loss/train", "train_loss"),
            ("loss/val", "val_loss"),
            ("accuracy/train", "train_accuracy"),
            ("accuracy/val", "val_accuracy"),
        ):
            got = [(s.step, s.value) for s in events.Scalars(tag)]
            assert [s for s, _ in got] == [e["epoch"] for e in run["epochs"]]
            for (_, value), epoch in zip(got, run["epochs"]):
                assert value == pytest.approx(epoch[metric], rel=1e-6)  # event files hold float32
        (test,) = events.Scalars("test/accuracy")
        assert test.value == pytest.approx(run["test_accuracy"], rel=1e-6) and test.step == len(run["epochs"])


@pytest.mark.slow  # trains and resumes whole comparisons
def test_a_resumed_comparison_logs_no_run_twice(tmp_path, monkeypatch):
    out = tmp_path / "cmp"
    args = [*FAST, "--out", str(out), "--track", "mlflow", "--track", "tensorboard"]
    assert cli.main(args) == 0
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _, children = _mlflow_runs(uri, monkeypatch)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    first_ids = dict(zip(children["tags.spocu.run"], children["run_id"]))
    # one run retrained on resume, one run's MLflow logging and one TensorBoard directory "cut short"
    (out / "runs" / "relu-seed1.json").unlink()
    MlflowClient(uri).update_run(first_ids["selu-seed0"], status="RUNNING")
    (out / "tensorboard" / "selu-seed1").rename(out / "tensorboard" / ".selu-seed1.partial")
    assert cli.main([*args, "--seeds", "3"]) == 0  # resumed, and extended by a seed
    grown = KEYS | {"relu-seed2", "selu-seed2"}
    parents, children = _mlflow_runs(uri, monkeypatch)
    assert len(parents) == 1 and sorted(children["tags.spocu.run"]) == sorted(grown)  # each run once
    assert parents.iloc[0]["tags.spocu.seeds"] == "[0, 1, 2]"
    ids = dict(zip(children["tags.spocu.run"], children["run_id"]))
    assert ids["relu-seed1"] == first_ids["relu-seed1"] and ids["relu-seed0"] == first_ids["relu-seed0"]
    assert ids["selu-seed0"] != first_ids["selu-seed0"] and set(children["status"]) == {"FINISHED"}
    assert {p.name for p in (out / "tensorboard").iterdir()} == grown


@pytest.mark.slow
def test_a_tracking_failure_warns_once_and_changes_nothing(tracked, tmp_path, monkeypatch, capsys):
    _, tracked_out = tracked
    import errno

    import torch.utils.tensorboard

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "cmp"
    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", disk_full)  # TensorBoard cannot write
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # unreachable (the discard port): refused at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    capsys.readouterr()
    assert cli.main([*FAST, "--out", str(out), "--track", "mlflow", "--track", "tensorboard"]) == 0
    printed = _printed(capsys)
    assert printed.count("warning: --track mlflow failed") == 1
    assert printed.count("warning: --track tensorboard failed") == 1
    assert "the comparison's own files in" in printed and "No space left on device" in printed
    for name in ("results.json", "epochs.csv", "report.md"):
        assert (out / name).is_file()
    # tracking never changes results: the same runs as the tracked comparison's (CPU training is deterministic)
    strip = ("seconds", "started_at", "finished_at", "epochs", "threads")
    mine = [{k: v for k, v in r.items() if k not in strip} for r in _results(out)["runs"]]
    theirs = [{k: v for k, v in r.items() if k not in strip} for r in _results(tracked_out)["runs"]]
    assert mine == theirs
    assert all(not math.isnan(r["test_accuracy"]) for r in _results(out)["runs"])


def test_track_is_recorded_in_config_toml_and_read_back(tracked):
    import argparse

    from spocu.commands._config_file import _read
    from spocu.commands.compare import add_arguments

    _, out = tracked
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "track = [" in (out / "config.toml").read_text()
    args = parser.parse_args(_read(parser, str(out / "config.toml")))
    assert args.track == ["mlflow", "tensorboard"]


def test_unknown_or_missing_tracker_is_refused_before_training(tmp_path, monkeypatch, capsys):
    from spocu.experiments.results import tracking

    with pytest.raises(SystemExit) as exit_:
        cli.main([*FAST, "--out", str(tmp_path / "a"), "--track", "wandb"])
    assert exit_.value.code == 2 and "invalid choice: 'wandb'" in _printed(capsys)
    monkeypatch.setitem(tracking._NEEDS, "tensorboard", ("no_such_package_spocu",))
    assert cli.main([*FAST, "--out", str(tmp_path / "b"), "--track", "tensorboard"]) == 2
    assert 'needs no_such_package_spocu: pip install "spocu[tensorboard]"' in _printed(capsys)
    assert not (tmp_path / "b").exists()
