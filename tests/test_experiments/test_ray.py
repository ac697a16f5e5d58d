"""``--executor ray``: (activation, seed) runs as Ray tasks on a local 2-CPU Ray, started once for the module."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

# a local Ray cluster (started once per module) and Ray worker processes importing torch
pytestmark = pytest.mark.slow

from spocu.experiments.config import resolve_config  # noqa: E402
from spocu.experiments.data.datasets import load_dataset  # noqa: E402
from spocu.experiments.run import torch_engine as engine_torch  # noqa: E402
from spocu.experiments.run.engine import RunResult  # noqa: E402
from spocu.experiments.run.ray_executor import (  # noqa: E402
    ResourcesUnavailable,
    RunsFailed,
    _Dispatch,
    _ProgressBox,
    _run_task,
    ray_session,
    train_with_ray,
)
from spocu.experiments.run.runner import plan  # noqa: E402

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _sigterm_to_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray with 2 CPUs for the whole module (starting Ray costs seconds on a small machine).

    Started as ``spocu compare`` starts it (ray.init(num_cpus=2, include_dashboard=False), quiet), with a
    SIGTERM handler installed first, as the command does, to check that Ray leaves it in place.
    """
    from ray import cloudpickle

    if ray.is_initialized():  # pragma: no cover - another module left one running
        ray.shutdown()
    previous = signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)
    saved_address = os.environ.pop("RAY_ADDRESS", None)
    try:
        with ray_session(num_cpus=2):
            # the test hooks below run inside Ray workers, which cannot import this test module by name
            cloudpickle.register_pickle_by_value(sys.modules[__name__])
            yield
            cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    finally:
        signal.signal(signal.SIGTERM, previous)
        if saved_address is not None:
            os.environ["RAY_ADDRESS"] = saved_address


@pytest.fixture(scope="module")
def wdbc():
    return load_dataset("wdbc", progress=False, split="per-seed")  # as the default config: each seed its own split


def _config(epochs=2, seeds=2, activations=("relu", "spocu(c=1)")):
    return resolve_config({"activations": activations, "seeds": seeds, "epochs": epochs, "hidden": (16,)})


class Recorder:
    """Callbacks that keep every event, in order."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def run_started(self, activation, seed):
        self.events.append(("started", activation, seed))

    def epoch_done(self, activation, seed, record):
        self.events.append(("epoch", activation, seed, record.epoch))

    def run_finished(self, result):
        self.events.append(("finished", result.activation, result.seed))

    def run_failed(self, failure):
        self.events.append(("failed", failure.activation, failure.seed))


def _train(config, dataset, out, callbacks=None, **options):
    options = {"device": "cpu", "threads": 1, **options}
    return train_with_ray(
        plan(config),
        config=config,
        dataset=dataset,
        out_root=out,
        framework="torch",
        callbacks=callbacks or Recorder(),
        protocol_hash=config.protocol_hash(),
        **options,
    )


# ----------------------------------------------------------------------------- hooks run in the workers


def _mark(directory: str, name: str) -> None:
    Path(directory, f"{name}-{time.monotonic_ns()}").touch()


def _raise_for_seed_1(config, dataset, activation, seed, **options):
    if seed == 1:
        raise FloatingPointError(f"injected failure for {activation.canonical} seed {seed}")
    return engine_torch.train_run(config, dataset, activation, seed, **options)


def _die_for_seed_1(markers, config, dataset, activation, seed, **options):
    if seed == 1:
        _mark(markers, "attempt")
        os._exit(1)  # the worker process dies, as when it is killed or runs out of memory
    return engine_torch.train_run(config, dataset, activation, seed, **options)


def _slow(markers, config, dataset, activation, seed, *, on_epoch, **options):
    def slow_epoch(record):
        _mark(markers, f"epoch-{activation.slug}-{seed}")
        try:
            on_epoch(record)
        except Exception:  # keep training without the driver's progress box: only a cancel stops this task
            pass
        time.sleep(0.3)

    return engine_torch.train_run(config, dataset, activation, seed, on_epoch=slow_epoch, **options)


def _never(*args, **kwargs):  # pragma: no cover - must not be submitted
    raise AssertionError("a task was submitted")


# ----------------------------------------------------------------------------- tests


def test_starting_ray_keeps_the_callers_sigterm_handler():
    # ray.init installs its own (sys.exit, then a C++ handler that aborts): kill would skip the cancel and the resume hint
    assert signal.getsignal(signal.SIGTERM) is _sigterm_to_keyboard_interrupt
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs in the main thread at the next bytecode


def test_runs_under_ray_equal_local_runs_and_the_driver_saves_them(tmp_path, wdbc):
    config = _config()
    callbacks = Recorder()
    results = list(_train(config, wdbc, tmp_path, callbacks))
    assert sorted((r.activation, r.seed) for r in results) == [
        ("relu", 0),
        ("relu", 1),
        ("spocu(c=1)", 0),
        ("spocu(c=1)", 1),
    ]
    saved = {p.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")}
    assert sorted(saved) == ["relu-seed0.json", "relu-seed1.json", "spocu_c-1-seed0.json", "spocu_c-1-seed1.json"]
    assert not list(tmp_path.rglob(".*.tmp"))
    specs = {spec.canonical: spec for spec in config.activations}
    for result in results:
        local = engine_torch.train_run(
            config,
            wdbc,
            specs[result.activation],
            result.seed,
            device="cpu",
            threads=1,
            protocol_hash=config.protocol_hash(),
        )
        assert [[getattr(e, k) for k in METRICS] for e in result.epochs] == [
            [getattr(e, k) for k in METRICS] for e in local.epochs
        ]
        assert (result.test_loss, result.test_accuracy, result.test_predictions) == (
            local.test_loss,
            local.test_accuracy,
            local.test_predictions,
        )
        assert (result.threads, result.device, result.dataset_fingerprint) == (
            1,
            "cpu",
            wdbc.for_seed(result.seed).fingerprint(),
        )
        assert result.split_fingerprint == local.split_fingerprint == wdbc.for_seed(result.seed).split_fingerprint()
        assert saved[f"{specs[result.activation].slug}-seed{result.seed}.json"] == result.to_json()
        # the driver saw this run start, both its epochs, then its end, in that order
        mine = [
            e[0] if e[0] != "epoch" else e[3] for e in callbacks.events if e[1:3] == (result.activation, result.seed)
        ]
        assert mine == ["started", 1, 2, "finished"]


def test_a_failing_run_is_reported_by_name_while_the_others_finish(tmp_path, wdbc):
    config = _config(epochs=1, activations=("relu", "selu"))
    callbacks = Recorder()
    finished = []
    with pytest.raises(RunsFailed) as caught:
        for result in _train(config, wdbc, tmp_path, callbacks, train_function=_raise_for_seed_1, jobs=1):
            finished.append((result.activation, result.seed))
    failures = caught.value.failures
    assert sorted((f.activation, f.seed) for f in failures) == [("relu", 1), ("selu", 1)]
    assert all("FloatingPointError: injected failure" in f.reason for f in failures)
    assert "relu seed 1" in str(caught.value) and "selu seed 1" in str(caught.value)
    assert sorted(finished) == [("relu", 0), ("selu", 0)] and caught.value.finished == 2
    assert sorted(p.name for p in (tmp_path / "runs").glob("*.json")) == ["relu-seed0.json", "selu-seed0.json"]
    assert sorted(e[1:] for e in callbacks.events if e[0] == "failed") == [("relu", 1), ("selu", 1)]
    # jobs=1: one task at a time, so each run ends before the next starts
    ends = [e[0] for e in callbacks.events if e[0] in ("started", "finished", "failed")]
    assert len(ends) == 8 and ends[0::2] == ["started"] * 4 and all(end in ("finished", "failed") for end in ends[1::2])


def test_a_run_whose_worker_dies_is_retried_then_reported_failed(tmp_path, wdbc):
    config = _config(epochs=1, activations=("relu",))
    markers = tmp_path / "markers"
    markers.mkdir()
    with pytest.raises(RunsFailed) as caught:
        for _ in _train(
            config,
            wdbc,
            tmp_path / "out",
            train_function=functools.partial(_die_for_seed_1, str(markers)),
            max_retries=1,
        ):
            pass
    [failure] = caught.value.failures
    assert (failure.activation, failure.seed) == ("relu", 1)
    assert "worker died" in failure.reason
    assert len(list(markers.glob("attempt-*"))) == 2  # the first try and one retry
    assert [p.name for p in (tmp_path / "out" / "runs").glob("*.json")] == ["relu-seed0.json"]


def test_interrupting_the_driver_cancels_the_outstanding_tasks(tmp_path, wdbc):
    config = _config(epochs=200, seeds=3, activations=("relu",))
    markers = tmp_path / "markers"
    markers.mkdir()

    class InterruptAtFirstEpoch(Recorder):
        def epoch_done(self, activation, seed, record):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for _ in _train(
            config,
            wdbc,
            tmp_path / "out",
            InterruptAtFirstEpoch(),
            train_function=functools.partial(_slow, str(markers)),
        ):
            pass
    # the tasks are gone: no epoch is trained any more and the CPUs are free again
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == 2
    seen = len(list(markers.iterdir()))
    time.sleep(1.5)
    assert len(list(markers.iterdir())) == seen < 20
    assert not list((tmp_path / "out").rglob("*.json"))


@pytest.mark.parametrize(
    ("device", "threads", "message"),
    [("cuda", None, "needs 1 CPU and 1 GPU"), ("cpu", 3, "needs 3 CPUs")],
)
def test_a_task_no_node_can_run_is_refused_before_anything_is_submitted(
    tmp_path, wdbc, monkeypatch, device, threads, message
):
    monkeypatch.setattr(ray, "remote", _never)
    with pytest.raises(ResourcesUnavailable, match=message) as caught:
        list(_train(_config(epochs=1), wdbc, tmp_path, device=device, threads=threads))
    assert "nodes: 2 CPUs" in str(caught.value)
    assert not (tmp_path / "runs").exists()


class _Submitted(Exception):
    pass


def _submitted(*args, **kwargs):
    raise _Submitted


@pytest.mark.parametrize(("device", "threads"), [("cuda", None), ("cpu", 3)])
def test_with_autoscaling_a_task_no_live_node_fits_is_submitted_to_wait_for_one(
    tmp_path, wdbc, monkeypatch, device, threads
):
    """An autoscaling cluster (GPU workers with min_workers 0) has no such node until tasks ask for it."""
    monkeypatch.setattr(ray, "remote", _submitted)  # reaching submission is the point; nothing runs
    with pytest.raises(_Submitted):
        list(_train(_config(epochs=1), wdbc, tmp_path, device=device, threads=threads, autoscaling=True))


def test_check_cluster_fits_says_what_waits_with_autoscaling_and_refuses_without():
    from spocu.experiments.run.ray_executor import check_cluster_fits

    nodes = [{"CPU": 8.0}, {"CPU": 2.0}]
    assert check_cluster_fits("cpu", 8, nodes) is None
    note = check_cluster_fits("cuda", None, nodes, autoscaling=True)
    assert note == (
        "no live node of the Ray cluster can run a task that needs 1 CPU and 1 GPU yet (nodes: 8 CPUs; 2 CPUs): "
        "the tasks wait for the autoscaler to add one"
    )
    with pytest.raises(ResourcesUnavailable, match="pass --ray-autoscaling if the cluster's autoscaler adds it"):
        check_cluster_fits("cpu", 16, nodes)


def test_cuda_with_an_index_is_refused(tmp_path, wdbc):
    with pytest.raises(ValueError, match="GPU of its own: use --device cuda, not cuda:1"):
        list(_train(_config(epochs=1), wdbc, tmp_path, device="cuda:1", threads=None))


def test_a_retried_run_is_shown_once_and_its_epochs_never_twice():
    callbacks = Recorder()
    dispatch = _Dispatch(callbacks)
    record = {
        "epoch": 1,
        "train_loss": 0.5,
        "train_accuracy": 0.8,
        "val_loss": 0.4,
        "val_accuracy": 0.9,
        "seconds": 0.1,
        "eval_seconds": 0.0,
    }
    dispatch([("started", ("relu", 0), None), ("epoch", ("relu", 0), record)])
    dispatch(
        [("started", ("relu", 0), None), ("epoch", ("relu", 0), record), ("epoch", ("relu", 0), {**record, "epoch": 2})]
    )
    assert callbacks.events == [("started", "relu", 0), ("epoch", "relu", 0, 1), ("epoch", "relu", 0, 2)]


def test_the_progress_box_hands_out_its_events_once_in_order():
    box = _ProgressBox()
    box.put(("started", ("relu", 0), None))
    box.put(("epoch", ("relu", 0), {"epoch": 1}))
    assert box.drain() == [("started", ("relu", 0), None), ("epoch", ("relu", 0), {"epoch": 1})]
    assert box.drain() == []


def _read_only(array):
    copy = np.array(array)
    copy.flags.writeable = False
    return copy


def test_a_task_trains_on_writable_data_and_sends_every_event_before_it_returns(wdbc, monkeypatch):
    """_run_task as a worker runs it (here in the driver, with the driver's progress actor): the object
    store's read-only arrays become writable copies, the threads reach the environment before the
    framework loads, and the box holds the run's start and each epoch of the result it returns."""
    for name in ("TF_CPP_MIN_LOG_LEVEL", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)  # (set by the task: restored after the test)
    config = _config(epochs=2, seeds=1, activations=("spocu(c=1)",))
    spec = config.activations[0]
    arrays = ("x_train", "y_train", "x_val", "y_val", "x_test")
    given = dataclasses.replace(wdbc, **{name: _read_only(getattr(wdbc, name)) for name in arrays})
    seen = {}

    def train(config, dataset, activation, seed, **options):
        seen["writable"] = [getattr(dataset, name).flags.writeable for name in (*arrays, "y_test")]
        seen["values"] = [np.array_equal(getattr(dataset, name), getattr(wdbc, name)) for name in arrays]
        seen["y_test kept"] = dataset.y_test is given.y_test  # writable already: not copied
        seen["threads"] = [os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")]
        seen["options"] = (options["device"], options["threads"], options["protocol_hash"])
        return engine_torch.train_run(config, dataset, activation, seed, **options)

    progress = ray.remote(_ProgressBox).options(num_cpus=0).remote()
    try:
        record = _run_task("torch", config, given, spec, 0, "cpu", 1, config.protocol_hash(), progress, train)
        events = ray.get(progress.drain.remote())
    finally:
        ray.kill(progress)
    assert seen == {
        "writable": [True] * 6,
        "values": [True] * 5,
        "y_test kept": True,
        "threads": ["1", "1"],
        "options": ("cpu", 1, config.protocol_hash()),
    }
    result = RunResult.from_json(record)
    local = engine_torch.train_run(config, wdbc, spec, 0, device="cpu", threads=1, protocol_hash=config.protocol_hash())
    assert [[getattr(e, k) for k in METRICS] for e in result.epochs] == [
        [getattr(e, k) for k in METRICS] for e in local.epochs
    ]
    key = ("spocu(c=1)", 0)
    assert events == [("started", key, None), *(("epoch", key, dataclasses.asdict(e)) for e in result.epochs)]


# ----------------------------------------------------------------------------- spocu compare --executor ray


def _compare(*args: str) -> int:
    from spocu import cli

    return cli.main(["compare", "--no-progress", *args])


def _run_files(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def test_compare_with_executor_ray_gives_the_local_numbers_report_and_table(tmp_path, monkeypatch, capsys):
    grid = ("--activations", "relu", "spocu(c=1)", "--seeds", "2", "--epochs", "2", "--hidden", "16")
    assert _compare(*grid, "--out", str(tmp_path / "local")) == 0

    def driver_must_not_train(*args, **kwargs):
        raise AssertionError("--executor ray trained in the driver")

    monkeypatch.setattr(engine_torch, "train_run", driver_must_not_train)  # the Ray workers import their own
    capsys.readouterr()
    assert _compare(*grid, "--executor", "ray", "--out", str(tmp_path / "ray")) == 0
    printed = capsys.readouterr().out
    assert "Ray (1 node, 2 CPUs): one task per run, 1 CPU(s) each, as many at a time as fit" in printed
    assert "test accuracy" in printed and "p Holm" in printed  # the per-run lines and the results table
    local, on_ray = _run_files(tmp_path / "local"), _run_files(tmp_path / "ray")
    assert (
        sorted(local)
        == sorted(on_ray)
        == ["relu-seed0.json", "relu-seed1.json", "spocu_c-1-seed0.json", "spocu_c-1-seed1.json"]
    )
    for name in local:
        a, b = local[name], on_ray[name]
        assert [[e[k] for k in METRICS] for e in a["epochs"]] == [[e[k] for k in METRICS] for e in b["epochs"]]
        assert (a["test_loss"], a["test_accuracy"], a["test_predictions"]) == (
            b["test_loss"],
            b["test_accuracy"],
            b["test_predictions"],
        )
    results = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert results["environment"]["parallel"] == {
        "executor": "ray",
        "jobs": None,
        "threads_per_job": 1,
        "cluster": "1 node, 2 CPUs",
    }
    assert (
        "Runs trained as Ray tasks, one per run, on a Ray cluster of 1 node, 2 CPUs"
        in (tmp_path / "ray" / "report.md").read_text()
    )
    assert not list((tmp_path / "ray").rglob(".*.tmp"))


def test_compare_refuses_a_cluster_without_a_gpu_before_touching_the_output(tmp_path, capsys):
    assert _compare("--executor", "ray", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path / "x")) == 2
    error = capsys.readouterr().err
    assert (
        "spocu compare: error: no node of the Ray cluster can run a task that needs 1 CPU and 1 GPU (nodes: 2 CPUs)"
        in error
    )
    assert "use --device cpu" in error and "Traceback" not in error
    assert not (tmp_path / "x").exists()
    assert _compare("--executor", "ray", "--device", "cuda:1", "--out", str(tmp_path / "x")) == 2
    assert "use --device cuda, not cuda:1" in capsys.readouterr().err


def test_ray_options_that_make_no_sense_are_refused(tmp_path, monkeypatch, capsys):
    assert _compare("--ray-address", "head:6379", "--out", str(tmp_path / "x")) == 2
    assert "--ray-address applies to --executor ray, not --executor local" in capsys.readouterr().err
    assert _compare("--ray-autoscaling", "--out", str(tmp_path / "x")) == 2
    assert "--ray-autoscaling applies to --executor ray, not --executor local" in capsys.readouterr().err
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    assert _compare("--executor", "ray", "--out", str(tmp_path / "x")) == 2
    assert "--executor ray and torchrun do not combine" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _ray_workers(session: int) -> list[int]:
    """Process ids of the Ray task workers (``ray::spocu ...``) in ``session`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            sid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if sid == session and command.startswith("ray::spocu"):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_a_killed_driver_loses_only_the_runs_in_flight_and_a_rerun_resumes(tmp_path, capsys):
    import subprocess

    out = tmp_path / "killed"
    grid = ("--activations", "relu", "--seeds", "4", "--epochs", "150", "--hidden", "16")
    # a fresh driver with its own local Ray, as from a shell; kill -9 gives it no chance to clean up
    driver = subprocess.Popen(
        [sys.executable, "-m", "spocu", "compare", "--no-progress", *grid, "--executor", "ray", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not list((out / "runs").glob("*.json")) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        finished_before = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:  # pragma: no cover - only if the wait above failed
            driver.kill()
    assert 1 <= len(finished_before) < 4, "the sweep should be cut mid-way"
    deadline = time.monotonic() + 60  # Ray's own processes see their driver gone and end its tasks
    while _ray_workers(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _ray_workers(driver.pid) == []
    capsys.readouterr()
    assert _compare(*grid, "--executor", "ray", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"{len(finished_before)} of 4 runs already finished in this directory: skipping them" in printed
    after = {p.name: p.read_bytes() for p in (out / "runs").glob("*.json")}
    assert sorted(after) == ["relu-seed0.json", "relu-seed1.json", "relu-seed2.json", "relu-seed3.json"]
    assert all(after[name] == data for name, data in finished_before.items())  # kept, not retrained
    assert (out / "results.json").exists() and not list(out.rglob(".*.tmp"))


def test_an_unreachable_cluster_is_a_one_line_error_within_seconds(tmp_path):
    from cli_harness import assert_clean_failure, run_cli, snapshot

    # a fresh process (this module's Ray would be reused); Ray alone would retry for minutes
    result = run_cli(
        ["compare", "--executor", "ray", "--ray-address", "127.0.0.1:1", "--out", "x"], cwd=tmp_path, timeout=120
    )
    assert_clean_failure(
        result, r"spocu compare: error: cannot join the Ray cluster at '127\.0\.0\.1:1' .*Connection refused"
    )
    assert snapshot(tmp_path) == set()


def test_the_progress_display_names_a_failed_run_and_keeps_its_epoch_count_honest():
    import io

    from rich.console import Console

    from spocu.commands.compare import _RichCallbacks
    from spocu.experiments.run.engine import EpochRecord
    from spocu.experiments.run.ray_executor import RunFailure

    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    with _RichCallbacks(console, enabled=True) as callbacks:
        callbacks.plan(total=2, finished=0, epochs=5)
        callbacks.run_started("relu", 1)
        for epoch in (1, 2):
            callbacks.epoch_done("relu", 1, EpochRecord(epoch, 0.5, 0.8, 0.4, 0.9, 0.1, 0.0))
        callbacks.run_failed(
            RunFailure("relu", 1, "its worker died and every retry failed too (WorkerCrashedError: ...)")
        )
        task = callbacks.progress.tasks[0]
        assert (task.completed, task.total) == (5, 10)  # the failed run's 5 epochs are accounted for, not 2 or 7
        assert callbacks.running == {}
    assert "relu           seed 1: failed: its worker died and every retry failed too" in console.file.getvalue()


def test_a_batch_norm_model_trains_under_ray_with_a_last_batch_of_one(tmp_path, capsys):
    """BatchNorm1d/2d, Dropout and LayerNorm in a user's model: the sizing probe and the 1-sample last batch."""
    from test_batch_dependent import BATCH_NORM_NET

    (tmp_path / "bnnet.py").write_text(BATCH_NORM_NET)
    out = tmp_path / "o"
    assert (
        _compare(
            "--model",
            f"{tmp_path / 'bnnet.py'}:build",
            "--activations",
            "relu",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "121",
            "--executor",
            "ray",
            "--out",
            str(out),
        )
        == 0
    ), capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["protocol"]["last_batch"] == "merged"
    assert sorted(_run_files(out)) == ["relu-seed0.json"]


def test_tuning_on_ray_chooses_what_the_local_executor_chooses(tmp_path):
    grid = ("--tune", "lr", "--activations", "relu", "--seeds", "1", "--epochs", "1", "--hidden", "8")
    assert _compare(*grid, "--out", str(tmp_path / "local")) == 0
    assert _compare(*grid, "--executor", "ray", "--out", str(tmp_path / "ray")) == 0
    local = json.loads((tmp_path / "local" / "results.json").read_text())
    on_ray = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert (
        on_ray["tuning"] == local["tuning"] and on_ray["config"]["learning_rates"] == local["config"]["learning_rates"]
    )
    assert len(list((tmp_path / "ray" / "tuning").rglob("runs/*.json"))) == 5 * 2


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
def test_no_ray_process_outlives_a_killed_driver_by_more_than_10_seconds(tmp_path):
    """kill -9 of the driver: the dashboard and runtime-env agents lived on for a minute with parent 1."""
    import subprocess

    from spocu.experiments.run.reaper import _descendants, _table

    driver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spocu",
            "compare",
            "--no-progress",
            "--activations",
            "relu",
            "--seeds",
            "2",
            "--epochs",
            "300",
            "--hidden",
            "16",
            "--executor",
            "ray",
            "--out",
            str(tmp_path / "o"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _ray_workers(driver.pid) and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ray_workers(driver.pid), "Ray did not start its task workers"
        time.sleep(1)  # the agents too
        started = _descendants(driver.pid, _table())
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:  # pragma: no cover - only if the wait above failed
            driver.kill()
    killed_at = time.monotonic()
    assert len(started) >= 3  # GCS server, raylet, agents, workers (and the watcher, which ends too)

    def alive() -> dict[int, str]:
        table = _table()
        return {pid: start for pid, start in started.items() if pid in table and table[pid][1] == start}

    while alive() and time.monotonic() < killed_at + 10:
        time.sleep(0.2)
    left = alive()
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:60] for pid in left if Path(f"/proc/{pid}").exists()}
    assert not left, f"still running 10 s after the driver was killed: {names}"
