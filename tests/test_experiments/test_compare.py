"""``spocu compare`` end to end on WDBC: outputs, report, resume, interrupts, errors."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from spocu import cli
from spocu.experiments.activations import parse_activation
from spocu.experiments.config import PRESETS, SPOCU_CORRECTION, resolve_config
from spocu.experiments.run import torch_engine as engine_torch


def _printed(capsys) -> str:
    """What the command printed (stdout and stderr), with the console's line wrapping (it depends on the terminal) undone."""
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def _strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default experiment (wdbc, spocu/spocu(c=1)/relu/selu, 5 seeds) with 3 epochs instead of 40."""
    out = tmp_path_factory.mktemp("default") / "run"
    assert _compare("--epochs", "3", "--out", str(out)) == 0
    return out


def test_default_run_writes_every_output(default_run):
    out = default_run
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        f"{a}-seed{s}.json" for a in ("spocu", "spocu_c-1", "relu", "selu") for s in range(5)
    )
    for name in ("curves.png", "activations.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob(".*.tmp"))
    results = _strict_json(out / "results.json")
    assert results["config"]["dataset"] == "wdbc" and results["config"]["activations"] == [
        "spocu",
        "spocu(c=1)",
        "relu",
        "selu",
    ]
    assert results["config"]["seeds"] == [0, 1, 2, 3, 4] and results["reference"] == "spocu"
    assert {"torch", "numpy", "scipy", "statsmodels"} <= set(results["environment"]["versions"])
    assert results["environment"]["hardware"]["cpu_count"] >= 1
    assert results["dataset"]["test"] == 114


def test_results_agree_with_the_runs_predictions(default_run):
    results = _strict_json(default_run / "results.json")
    # --split per-seed (the default): each seed its own stratified split, the same for every activation of the seed
    assert results["dataset"]["split"] == "per-seed" and results["test_labels"] is None
    assert results["analysis"]["test_train_ratio"] == pytest.approx(114 / 364)
    fingerprints = {}
    for run in results["runs"]:
        fingerprints.setdefault(run["seed"], set()).add(run["split_fingerprint"])
    assert all(len(f) == 1 for f in fingerprints.values()) and len(set().union(*fingerprints.values())) == 5
    by_seed = {int(seed): np.array(labels) for seed, labels in results["test_labels_by_seed"].items()}
    accuracy = {}
    for run in results["runs"]:
        labels = by_seed[run["seed"]]
        recomputed = float(np.mean(np.array(run["test_predictions"]) == labels))
        assert run["test_accuracy"] == pytest.approx(recomputed, abs=1e-12)
        accuracy.setdefault(run["activation"], {})[run["seed"]] = recomputed
        assert (
            run["init"]
            == {"spocu": "lecun-normal", "spocu(c=1)": "lecun-normal", "relu": "he-normal", "selu": "lecun-normal"}[
                run["activation"]
            ]
        )
        assert len(run["epochs"]) == 3 and all(e["seconds"] > 0 for e in run["epochs"])
    for name, per_seed in accuracy.items():
        values = [per_seed[s] for s in range(5)]
        summary = results["summary"][name]["test_accuracy"]
        assert summary["mean"] == pytest.approx(np.mean(values)) and summary["sd"] == pytest.approx(
            np.std(values, ddof=1)
        )
    for comparison in results["comparisons"]:
        diffs = [accuracy[comparison["activation"]][s] - accuracy["spocu"][s] for s in range(5)]
        assert comparison["test_accuracy"]["mean_difference"] == pytest.approx(np.mean(diffs))
        assert (
            comparison["test_accuracy"]["p_ttest_holm"] is None
            or comparison["test_accuracy"]["p_ttest_holm"] >= comparison["test_accuracy"]["p_ttest"]
        )
        for m in comparison["mcnemar"]:
            labels = by_seed[m["seed"]]
            ref = (
                np.array(
                    next(r for r in results["runs"] if r["activation"] == "spocu" and r["seed"] == m["seed"])[
                        "test_predictions"
                    ]
                )
                == labels
            )
            other = (
                np.array(
                    next(
                        r
                        for r in results["runs"]
                        if r["activation"] == comparison["activation"] and r["seed"] == m["seed"]
                    )["test_predictions"]
                )
                == labels
            )
            assert m["table"] == [
                [int(np.sum(ref & other)), int(np.sum(ref & ~other))],
                [int(np.sum(~ref & other)), int(np.sum(~ref & ~other))],
            ]
        # the pooled test: continuity-corrected McNemar on the discordant samples of all seeds, by hand
        b = sum(m["table"][0][1] for m in comparison["mcnemar"])
        c = sum(m["table"][1][0] for m in comparison["mcnemar"])
        pooled = comparison["pooled_test"]
        assert (pooled["only_reference_right"], pooled["only_other_right"]) == (b, c)
        assert pooled["p_value"] == (
            1.0 if b + c == 0 else pytest.approx(sps.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))
        )
        # the verdict: Student-t posterior of the mean difference in points, scale sd * sqrt(1/n + r)
        d = 100 * np.array(diffs)
        r = results["analysis"]["test_train_ratio"]
        v = comparison["verdict"]
        if d.std() > 0:
            post = sps.t(4, loc=d.mean(), scale=np.sqrt((1 / 5 + r) * d.var(ddof=1)))
            rope = results["analysis"]["rope"]
            assert (v["p_better"], v["p_worse"]) == pytest.approx((post.sf(rope), post.cdf(-rope)), abs=1e-12)


def test_epochs_csv_has_one_row_per_run_and_epoch(default_run):
    with open(default_run / "epochs.csv") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 20 * 3
    assert list(rows[0]) == [
        "activation",
        "seed",
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "epoch_seconds",
        "eval_seconds",
    ]
    assert {(r["activation"], r["seed"]) for r in rows} == {
        (a, str(s)) for a in ("spocu", "spocu(c=1)", "relu", "selu") for s in range(5)
    }
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in rows)


def test_report_holds_the_tables(default_run):
    report = (default_run / "report.md").read_text()
    results = _strict_json(default_run / "results.json")
    for name in ("spocu", "spocu(c=1)", "relu", "selu"):
        s = results["summary"][name]
        row = next(
            line for line in report.splitlines() if line.startswith(f"| {name} | 5 (0 diverged) | {s['init']} |")
        )
        assert f"{s['test_accuracy']['mean']:.4f} ± {s['test_accuracy']['sd']:.4f}" in row
    comparison_rows = [
        line for line in report.splitlines() if line.startswith(("| spocu(c=1) | ", "| relu | ", "| selu | "))
    ]
    assert len(comparison_rows) == 9  # each in the three tables
    for needed in (
        "## Each activation against spocu",
        "Holm",
        "Bonferroni",
        "Cochran–Mantel–Haenszel",
        "![learning curves](curves.png)",
        "lecun-normal",
        "he-normal",
        "Wilcoxon",
        "## Verdict",
        "## How to read this report",
        "Worked example",
    ):
        assert needed in report
    # the report opens with one verdict sentence per contender, with the numbers of results.json
    head = report.split("## Test accuracy")[0]
    for comparison in results["comparisons"]:
        v = comparison["verdict"]
        assert f"{comparison['activation']} vs spocu: " in head
        assert v["label"] in ("better", "worse", "equivalent", "inconclusive")
        assert v["p_better"] + v["p_equivalent"] + v["p_worse"] == pytest.approx(1.0)


@pytest.mark.slow
def test_rerun_skips_finished_runs_and_refuses_another_protocol(default_run, capsys):
    before = {p.name: p.read_bytes() for p in (default_run / "runs").iterdir()}
    assert _compare("--epochs", "3", "--out", str(default_run)) == 0
    assert "20 of 20 runs already finished" in _printed(capsys)
    assert {p.name: p.read_bytes() for p in (default_run / "runs").iterdir()} == before
    assert _compare("--epochs", "4", "--out", str(default_run)) == 2
    out = _printed(capsys)
    assert "different experiment" in out and "epochs: 3 there, 4 now" in out


@pytest.mark.slow  # trains, interrupts and resumes whole comparisons
def test_interrupted_run_resumes_to_the_same_results(tmp_path, monkeypatch, capsys):
    args = ("--activations", "relu", "spocu(c=1)", "--seeds", "2", "--epochs", "3")
    assert _compare(*args, "--out", str(tmp_path / "clean")) == 0
    real_train_run = engine_torch.train_run
    calls = []

    def interrupted_train_run(*a, on_epoch=None, **k):
        calls.append(1)
        if len(calls) == 3:  # Ctrl-C in the middle of the third run

            def on_epoch(record, inner=on_epoch):
                inner(record)
                if record.epoch == 2:
                    raise KeyboardInterrupt

        return real_train_run(*a, on_epoch=on_epoch, **k)

    monkeypatch.setattr(engine_torch, "train_run", interrupted_train_run)
    out = tmp_path / "interrupted"
    capsys.readouterr()
    assert _compare(*args, "--out", str(out)) == 130
    message = _printed(capsys)
    assert "interrupted" in message and "Resume with the same command and --out" in message and str(out) in message
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["relu-seed0.json", "spocu_c-1-seed0.json"]
    assert not (out / "results.json").exists() and not list(out.rglob(".*.tmp"))
    monkeypatch.setattr(engine_torch, "train_run", real_train_run)
    assert _compare(*args, "--out", str(out)) == 0
    assert "2 of 4 runs already finished" in _printed(capsys)
    clean, resumed = _strict_json(tmp_path / "clean" / "results.json"), _strict_json(out / "results.json")
    key = lambda r: (r["activation"], r["seed"])  # noqa: E731
    for a, b in zip(sorted(clean["runs"], key=key), sorted(resumed["runs"], key=key)):
        assert key(a) == key(b)
        assert a["test_predictions"] == b["test_predictions"]  # CPU training is deterministic
        assert [e["val_loss"] for e in a["epochs"]] == [e["val_loss"] for e in b["epochs"]]
    # the grid may grow: one more seed trains only the two new runs
    assert _compare("--activations", "relu", "spocu(c=1)", "--seeds", "3", "--epochs", "3", "--out", str(out)) == 0
    assert "4 of 6 runs already finished" in _printed(capsys)
    assert len(_strict_json(out / "results.json")["runs"]) == 6


@pytest.mark.slow  # trains, interrupts and resumes whole comparisons
def test_killed_process_loses_at_most_the_run_in_progress(tmp_path):
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
        "60",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("runs/*.json")):
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        process.stdout.close()
    finished = list((out / "runs").glob("*.json"))
    assert 1 <= len(finished) < 4
    for path in finished:
        _strict_json(path)  # every file under a final name is complete
    assert not (out / "results.json").exists()
    before = {p.name: p.read_bytes() for p in finished}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(finished)} of 4 runs already finished" in result.stdout
    assert {name: (out / "runs" / name).read_bytes() for name in before} == before
    assert len(_strict_json(out / "results.json")["runs"]) == 4


def test_diverged_runs_are_reported_not_fatal(tmp_path):
    out = tmp_path / "diverged"
    assert (
        _compare("--activations", "spocu", "relu", "--lr", "1e4", "--seeds", "3", "--epochs", "2", "--out", str(out))
        == 0
    )
    results = _strict_json(out / "results.json")
    assert results["summary"]["spocu"]["diverged"]  # SPOCU's x^8 tail overflows at this learning rate
    assert "diverged" in (out / "report.md").read_text()


def test_bad_options_are_clear_errors(tmp_path, cache, capsys):
    for args, message in (
        (("--activations", "swish"), "unknown activation 'swish'"),
        (("--activations", "spocu(beta=2)"), "beta=2.0 is out of range"),
    ):
        assert _compare(*args, "--out", str(tmp_path / "x")) == 2
        printed = _printed(capsys)
        assert "spocu compare: error: " in printed and message in printed
    with pytest.raises(SystemExit) as info:  # argparse refuses a preset that is not a choice
        _compare("--preset", "nope", "--out", str(tmp_path / "x"))
    assert info.value.code == 2 and "invalid choice: 'nope'" in _printed(capsys)
    assert _compare("--dataset", "cifar10", "--no-download", "--out", str(tmp_path / "x")) == 2
    message = _printed(capsys)
    assert "cifar-10-python.tar.gz" in message and "--data-dir" in message
    assert not (tmp_path / "x").exists()


def test_estimate_trains_nothing(tmp_path, capsys):
    assert _compare("--estimate", "--epochs", "5", "--activations", "relu", "selu", "--out", str(tmp_path / "x")) == 0
    out = _printed(capsys)
    assert "relu" in out and "selu" in out and "extrapolation" in out
    assert not (tmp_path / "x").exists()


def test_help_lists_presets_and_activations(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["compare", "--help"])
    assert info.value.code == 0
    out = _printed(capsys)
    for preset in PRESETS:
        assert preset in out
    assert "spocu(c=1)" in out


def test_presets_match_the_seed_and_the_paper():
    seed = resolve_config({"preset": "seed-cifar10"})
    names = tuple(a.canonical for a in seed.activations)
    assert (seed.dataset, seed.model.name, names, seed.optimizer, seed.lr, seed.batch_size, seed.epochs) == (
        "cifar10",
        "seed-cnn",
        ("spocu", "relu"),
        "adam",
        1e-3,
        100,
        50,
    )
    for name, dataset in (("paper-wdbc", "wdbc"), ("paper-mnist", "mnist")):
        config = resolve_config({"preset": name})
        assert config.dataset == dataset and config.reference.canonical == "spocu"
        assert {a.canonical for a in config.activations} == {
            "spocu",
            parse_activation(SPOCU_CORRECTION).canonical,
            "selu",
            "relu",
        }
    assert resolve_config({"preset": "seed-cifar10", "epochs": 2}).epochs == 2  # options override a preset
