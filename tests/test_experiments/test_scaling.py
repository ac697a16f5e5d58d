"""Scaling ``spocu compare``: ``--jobs N`` worker processes and ``torchrun`` data-parallel training."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch.distributed

from spocu import cli
from spocu.experiments.run import torch_engine as engine_torch
from spocu.experiments.run.distributed import from_environment, per_process_batch, shard
from spocu.experiments.run.engine import batch_order
from spocu.experiments.run.torch_engine import SeededDistributedSampler

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


def _runs(out: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))}


def _session_processes(session: int) -> list[tuple[int, str, str]]:
    """(pid, state, command line) of every process in ``session`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == session:
            found.append((int(entry.name), fields[0], command))
    return found


# ----------------------------------------------------------------------------- --jobs


@pytest.mark.slow  # worker processes, each importing torch
def test_jobs_2_trains_in_workers_and_matches_jobs_1_exactly(tmp_path, monkeypatch):
    grid = ("--activations", "relu", "spocu(c=1)", "--seeds", "2", "--epochs", "2")
    assert _compare(*grid, "--out", str(tmp_path / "one")) == 0

    def parent_must_not_train(*args, **kwargs):
        raise AssertionError("--jobs 2 trained in the parent process")

    monkeypatch.setattr(engine_torch, "train_run", parent_must_not_train)  # the spawned workers import their own
    assert _compare(*grid, "--jobs", "2", "--out", str(tmp_path / "two")) == 0
    one, two = _runs(tmp_path / "one"), _runs(tmp_path / "two")
    assert (
        sorted(one)
        == sorted(two)
        == ["relu-seed0.json", "relu-seed1.json", "spocu_c-1-seed0.json", "spocu_c-1-seed1.json"]
    )
    for name in one:
        a, b = one[name], two[name]
        assert [[e[k] for k in METRICS] for e in a["epochs"]] == [[e[k] for k in METRICS] for e in b["epochs"]]
        assert (a["test_loss"], a["test_accuracy"], a["test_predictions"]) == (
            b["test_loss"],
            b["test_accuracy"],
            b["test_predictions"],
        )
        assert a["threads"] == b["threads"] == 1
    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["environment"]["parallel"] == {"jobs": 2, "threads_per_job": 1}
    assert "2 at a time in separate processes" in (tmp_path / "two" / "report.md").read_text()
    assert not list((tmp_path / "two").rglob(".*.tmp"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
@pytest.mark.slow  # worker processes, each importing torch
def test_ctrl_c_with_jobs_ends_the_workers_keeps_finished_runs_and_resumes(tmp_path):
    out = tmp_path / "interrupted"
    command = [
        sys.executable,
        "-m",
        "spocu",
        "compare",
        "--no-progress",
        "--activations",
        "relu",
        "selu",
        "--seeds",
        "2",
        "--epochs",
        "60",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("runs/*.json")):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        workers = [p for p in _session_processes(process.pid) if "spawn_main" in p[2]]
        assert len(workers) == 2
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, output
    assert "interrupted" in output and "Resume with the same command" in output
    deadline = time.monotonic() + 10
    while any(state != "Z" for _, state, _ in _session_processes(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(state == "Z" for _, state, _ in _session_processes(process.pid))  # no worker trains on
    finished = _runs(out)
    assert 1 <= len(finished) < 4 and not (out / "results.json").exists()
    before = {name: (out / "runs" / name).read_bytes() for name in finished}
    resume = [*command[:-4], "--jobs", "1", "--out", str(out)]  # --jobs is not part of the protocol
    result = subprocess.run(resume, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(finished)} of 4 runs already finished" in result.stdout
    assert {name: (out / "runs" / name).read_bytes() for name in before} == before
    assert len(json.loads((out / "results.json").read_text())["runs"]) == 4


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc (Linux)")
@pytest.mark.slow  # worker processes, each importing torch
def test_sigkill_of_the_parent_leaves_no_worker_behind(tmp_path):
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "spocu",
        "compare",
        "--no-progress",
        "--activations",
        "relu",
        "selu",
        "--seeds",
        "2",
        "--epochs",
        "200",
        "--jobs",
        "2",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not list(out.glob("runs/*.json")):  # the workers are training (one run already finished)
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        others = [p for p in _session_processes(process.pid) if p[0] != process.pid]
        assert sum("spawn_main" in command for _, _, command in others) == 2
        assert any("resource_tracker" in command for _, _, command in others)
        process.kill()  # SIGKILL: the parent can neither end its workers nor tell them
        process.wait(timeout=30)
        killed = time.monotonic()
        while time.monotonic() - killed < 10 and [p for p in _session_processes(process.pid) if p[1] != "Z"]:
            time.sleep(0.1)
        survivors = [p for p in _session_processes(process.pid) if p[1] != "Z"]
        assert survivors == [], f"alive 10 s after the parent was killed: {survivors}"
    finally:
        for pid, _, _ in _session_processes(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for path in (out / "runs").glob("*.json"):
        json.loads(path.read_text())  # finished runs are whole


def test_bad_jobs_and_threads_are_refused(tmp_path, capsys):
    for option in ("--jobs", "--threads"):
        with pytest.raises(SystemExit) as info:
            _compare(option, "0", "--out", str(tmp_path / "x"))
        assert info.value.code == 2 and f"argument {option}: must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- torchrun


@pytest.mark.parametrize("n, world, batch", [(10, 2, 4), (11, 2, 4), (23, 3, 6), (7, 4, 4)])
def test_sampler_shards_are_the_single_process_batches(n, world, batch):
    seed, epoch = 5, 3
    order = batch_order(seed, epoch, n).tolist()
    per_rank = []
    for rank in range(world):
        sampler = SeededDistributedSampler(n, seed=seed, num_replicas=world, rank=rank)
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    assert len({len(indices) for indices in per_rank}) == 1  # equal shards: DDP averages equal-sized batches
    step = per_process_batch(batch, world)
    steps = -(-len(per_rank[0]) // step)
    for k in range(steps):
        together = sorted(i for indices in per_rank for i in indices[k * step : (k + 1) * step])
        single = order[k * batch : (k + 1) * batch]
        if k < steps - 1:
            assert together == sorted(single)
        else:  # the last batch: the rest of the epoch, padded with repeats of its first samples
            assert set(single) <= set(together) and len(together) - len(single) == (-n) % world
    assert sorted({i for indices in per_rank for i in indices}) == list(range(n))


def test_shards_cover_the_evaluation_sets_once():
    for n in (0, 1, 7, 114):
        for world in (1, 2, 3, 5):
            parts = [shard(n, r, world) for r in range(world)]
            assert parts[0][0] == 0 and parts[-1][1] == n and all(a[1] == b[0] for a, b in zip(parts, parts[1:]))


def test_torchrun_environment_errors_are_clear(monkeypatch, tmp_path, capsys):
    assert from_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None  # MASTER_* missing: not a torchrun launch
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "1"})
    with pytest.raises(ValueError, match="must be a multiple of 3 .e.g. 99 or 102."):
        per_process_batch(100, 3)
    for name, value in {
        "RANK": "0",
        "WORLD_SIZE": "3",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
    }.items():
        monkeypatch.setenv(name, value)
    capsys.readouterr()
    assert _compare("--jobs", "2", "--out", str(tmp_path / "x")) == 2
    assert "spocu compare: error: --jobs and torchrun do not combine" in capsys.readouterr().err
    assert _compare("--out", str(tmp_path / "x")) == 2  # refused before joining any process group
    assert "--batch-size 32 is the global batch, shared by the 3 processes" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


#: Imported by every torchrun process (PYTHONPATH): records what each rank creates, changes or removes
#: under $AUDIT_OUT, and writes the list to $AUDIT_LOG/rank<RANK>.json when the process exits.
_AUDIT_SITECUSTOMIZE = """
import atexit, json, os, sys

_out = os.path.realpath(os.environ["AUDIT_OUT"])
_events = []
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _hook(event, args):
    if event == "open":
        path, mode, flags = args
        if not ((mode and any(c in mode for c in "wax+")) or (flags or 0) & _WRITE_FLAGS):
            return
        paths = [path]
    elif event == "os.rename":
        paths = list(args[:2])
    elif event in ("os.mkdir", "os.remove", "os.rmdir", "os.chmod", "shutil.rmtree"):
        paths = [args[0]]
    else:
        return
    for path in paths:
        if isinstance(path, (str, bytes, os.PathLike)) and os.path.realpath(os.fsdecode(path)).startswith(_out):
            _events.append([event, os.fsdecode(path)])


def _dump():
    with open(os.path.join(os.environ["AUDIT_LOG"], "rank" + os.environ.get("RANK", "x") + ".json"), "w") as f:
        json.dump(_events, f)


if "RANK" in os.environ:
    sys.addaudithook(_hook)
    atexit.register(_dump)
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
@pytest.mark.slow  # torchrun: fresh processes, a gloo group
def test_torchrun_two_cpu_processes_train_each_run_together(tmp_path):
    out, audit = tmp_path / "ddp", tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(textwrap.dedent(_AUDIT_SITECUSTOMIZE))
    grid = ["--activations", "relu", "selu", "--seeds", "1", "--epochs", "2", "--device", "cpu"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "AUDIT_OUT": str(out),
        "AUDIT_LOG": str(audit),
        "PYTHONPATH": os.pathsep.join([str(audit), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "spocu",
        "compare",
        "--no-progress",
        *grid,
        "--out",
        str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("wdbc: train 364, val 91, test 114") == 1  # rank 1 printed nothing
    assert "torchrun: 2 processes (gloo), batch 16 per process" in result.stdout
    writes = {rank: json.loads((audit / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert any(path.endswith(os.sep + "results.json") for _, path in writes[0])  # the audit sees rank 0's writes
    assert writes[1] == []  # rank 1 wrote nothing

    # same schema as a single-process run, and the same training: DDP over the same global batches
    single = tmp_path / "single"
    assert _compare(*grid, "--out", str(single)) == 0
    ddp_results, single_results = (json.loads((d / "results.json").read_text()) for d in (out, single))
    assert set(ddp_results) == set(single_results)
    assert ddp_results["environment"]["distributed"] == {
        "world_size": 2,
        "backend": "gloo",
        "launcher": "torchrun",
        "per_process_batch": 16,
    }
    assert ddp_results["protocol_hash"] == single_results["protocol_hash"]
    n_train, n_val, n_test = 364, 91, 114
    for name, a in _runs(single).items():
        b = _runs(out)[name]
        assert set(a) == set(b)
        assert b["extra"]["distributed"] == {
            "world_size": 2,
            "backend": "gloo",
            "launcher": "torchrun",
            "per_process_batch": 16,
            "global_batch": 32,
        }
        for ea, eb in zip(a["epochs"], b["epochs"], strict=True):
            assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-5)
            assert eb["val_loss"] == pytest.approx(ea["val_loss"], rel=1e-5)
            assert abs(eb["train_accuracy"] - ea["train_accuracy"]) <= 1 / n_train + 1e-12
            assert abs(eb["val_accuracy"] - ea["val_accuracy"]) <= 1 / n_val + 1e-12
        assert len(b["test_predictions"]) == n_test  # gathered from both ranks, in order
        assert np.sum(np.array(a["test_predictions"]) != np.array(b["test_predictions"])) <= 1
        labels = np.array(ddp_results["test_labels_by_seed"][str(b["seed"])])
        assert b["split_fingerprint"] == a["split_fingerprint"]  # every rank drew the seed's own split
        assert b["test_accuracy"] == pytest.approx(np.mean(np.array(b["test_predictions"]) == labels))
    assert "Data-parallel: 2 of 2 runs trained by 2 processes" in (out / "report.md").read_text()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this PyTorch build has no torch.distributed")
@pytest.mark.slow  # torchrun: fresh processes, a gloo group
def test_torchrun_refuses_a_directory_that_is_not_ours_in_every_process(tmp_path):
    user = tmp_path / "notes"
    user.mkdir()
    (user / "report.md").write_text("mine\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "spocu",
        "compare",
        "--no-progress",
        "--device",
        "cpu",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--out",
        str(user),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)  # no rank waits for another
    assert result.returncode != 0
    assert result.stderr.count("spocu compare: error: --out") == 2 and "not a spocu compare output" in result.stderr
    # torchrun prints its own traceback (ChildFailedError) when a process fails; none comes from spocu
    assert "spocu/experiments/" not in result.stderr and "spocu/commands/" not in result.stderr
    assert sorted(p.name for p in user.iterdir()) == ["report.md"]
