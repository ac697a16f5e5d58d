"""``spocu compare --tune lr``: each activation's learning rate chosen on the validation split, never on the test set."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from spocu import cli
from spocu.experiments.compare import CompareOptions, estimate
from spocu.experiments.config import resolve_config
from spocu.experiments.data.datasets import load_dataset
from spocu.experiments.run import torch_engine as engine_torch
from spocu.experiments.run.engine import EpochRecord
from spocu.experiments.run.runner import run_experiment
from spocu.experiments.run.store import OutputDir
from spocu.experiments.run.tuning import choose_rate, tune_learning_rates, without_test


def _epochs(accuracy, loss):
    return [EpochRecord(1, 0.9, 0.5, 9.0, 0.1, 0.1, 0.01), EpochRecord(2, 0.5, 0.8, loss, accuracy, 0.1, 0.01)]


def test_the_grid_is_log_spaced_around_the_default_and_the_seeds_are_the_first_two():
    config = resolve_config({"tune": "lr", "lr": 0.02, "first_seed": 7, "seeds": 3})
    grid = np.array(config.tune_grid())
    assert len(grid) >= 5 and grid[len(grid) // 2] == pytest.approx(0.02)
    assert (
        np.allclose(np.diff(np.log10(grid)), 0.5) and grid[0] == pytest.approx(0.002) and grid[-1] == pytest.approx(0.2)
    )
    assert config.tune_seeds() == (7, 8)
    assert (
        resolve_config({"tune": "lr", "seeds": 10}).protocol() == resolve_config({"tune": "lr", "seeds": 2}).protocol()
    )
    assert "tune" not in resolve_config({}).protocol()  # untuned protocols and their hashes are as before
    assert resolve_config({"tune": "lr"}).protocol_hash() != resolve_config({}).protocol_hash()
    with pytest.raises(ValueError, match="--tune momentum"):
        resolve_config({"tune": "momentum"})


def test_the_choice_ranks_by_validation_accuracy_then_loss_then_nearness_and_skips_diverged_rates():
    scores = {
        1e-4: [_epochs(0.80, 0.40), _epochs(0.82, 0.40)],
        1e-3: [_epochs(0.90, 0.30), _epochs(0.90, 0.30)],
        1e-2: [_epochs(0.95, 0.10), None],  # the best seed, but the other diverged: not eligible
        1e-1: [_epochs(0.90, 0.25), _epochs(0.90, 0.25)],  # ties 1e-3 on accuracy, lower loss: wins
    }
    chosen, table = choose_rate(scores, default=1e-3)
    assert chosen == 1e-1
    assert [row["chosen"] for row in table] == [False, False, False, True]
    assert table[2]["diverged"] == 1 and table[2]["val_accuracy"] is None
    assert table[0]["val_accuracy"] == pytest.approx(0.81)
    tie = {1e-4: [_epochs(0.9, 0.3)], 1e-3: [_epochs(0.9, 0.3)], 3e-2: [_epochs(0.9, 0.3)]}
    assert choose_rate(tie, default=1e-3)[0] == 1e-3  # a full tie: the default's neighbourhood
    assert choose_rate({1e-3: [None], 1e-2: [None]}, default=1e-3)[0] == 1e-3  # nothing eligible: the default
    nan_val = [EpochRecord(1, 0.5, 0.5, None, None, 0.1, 0.01)]
    assert choose_rate({1e-3: [nan_val], 1e-2: [_epochs(0.6, 0.6)]}, default=1e-3)[0] == 1e-2


def _tune(config, dataset, root):
    def train(sub_config, sub_out, data, lr):
        return run_experiment(sub_config, sub_out, data, engine_torch, threads=1).runs

    OutputDir(root).claim()
    return tune_learning_rates(config, OutputDir(root), dataset, train)


def test_the_test_set_never_takes_part(tmp_path):
    """Poisoned test labels and features change nothing: not one score, not one choice."""
    config = resolve_config({"tune": "lr", "activations": ("spocu(c=1)", "relu"), "epochs": 2, "hidden": (16,)})
    dataset = load_dataset("wdbc")
    rng = np.random.default_rng(0)
    poisoned = dataclasses.replace(
        dataset,
        y_test=(dataset.y_test + 1) % dataset.num_classes,
        x_test=rng.normal(0, 100, dataset.x_test.shape).astype(np.float32),
    )
    tuned, record = _tune(config, dataset, tmp_path / "clean")
    tuned_poisoned, record_poisoned = _tune(config, poisoned, tmp_path / "poisoned")
    assert record == record_poisoned and tuned.learning_rates == tuned_poisoned.learning_rates
    assert {spec.canonical for spec, _ in tuned.learning_rates} == {"spocu(c=1)", "relu"}
    for entry in record["activations"].values():
        assert entry["chosen"] in config.tune_grid() and sum(row["chosen"] for row in entry["scores"]) == 1
        assert [row["lr"] for row in entry["scores"]] == list(config.tune_grid())
    files = list((tmp_path / "clean" / "tuning").rglob("runs/*.json"))
    assert len(files) == 2 * 5 * 2  # activations x rates x tuning seeds
    for path in files:
        run = json.loads(path.read_text())
        assert run["test_predictions"] == [] and run["lr"] in config.tune_grid()
        assert run["dataset_fingerprint"] == without_test(dataset).fingerprint() != dataset.fingerprint()
    # the recorded score is recomputed from the tuning runs' own validation accuracies
    for name, entry in record["activations"].items():
        for row in entry["scores"]:
            finals = []
            for seed in config.tune_seeds():
                run = json.loads(
                    (tmp_path / "clean" / "tuning" / f"lr-{row['lr']:.6g}" / "runs")
                    .joinpath(f"{'spocu_c-1' if name == 'spocu(c=1)' else name}-seed{seed}.json")
                    .read_text()
                )
                finals.append(run["epochs"][-1]["val_accuracy"])
            assert row["val_accuracy"] == pytest.approx(np.mean(finals), abs=1e-15)


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned") / "run"
    assert (
        _compare(
            "--tune",
            "lr",
            "--activations",
            "spocu(c=1)",
            "relu",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--out",
            str(out),
        )
        == 0
    )
    return out


@pytest.mark.slow
def test_every_seed_trains_at_its_activations_chosen_rate_and_the_report_says_so(tuned_run):
    results = json.loads((tuned_run / "results.json").read_text())
    tuning = results["tuning"]
    chosen = {name: entry["chosen"] for name, entry in tuning["activations"].items()}
    assert results["config"]["learning_rates"] == chosen
    assert results["config"]["tune"]["grid"] == tuning["grid"] and results["config"]["tune"]["seeds"] == [0, 1]
    assert {(r["activation"], r["lr"]) for r in results["runs"]} == set(chosen.items())
    stored = json.loads((tuned_run / "config.json").read_text())["protocol"]
    assert stored["tune"]["grid"] == tuning["grid"]
    assert json.loads((tuned_run / "tuning" / "tuning.json").read_text()) == tuning
    report = (tuned_run / "report.md").read_text()
    assert "## Learning rates chosen on the validation split (--tune lr)" in report
    for name, lr in chosen.items():
        assert f"| {name} | " in report and f"| {lr:.3g} |" in report
        assert f"{name} {lr:.3g}" in report  # the protocol line names each rate


@pytest.mark.slow
def test_a_tuned_experiment_resumes_and_refuses_a_run_at_another_rate(tuned_run, capsys):
    before = {p: p.read_bytes() for p in tuned_run.rglob("*.json") if "runs" in p.parts}
    capsys.readouterr()
    assert (
        _compare(
            "--tune",
            "lr",
            "--activations",
            "spocu(c=1)",
            "relu",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--out",
            str(tuned_run),
        )
        == 0
    )
    assert {p: p.read_bytes() for p in tuned_run.rglob("*.json") if "runs" in p.parts} == before  # nothing retrained
    path = tuned_run / "runs" / "relu-seed0.json"
    run = json.loads(path.read_text())
    run["lr"] = run["lr"] * 10
    path.write_text(json.dumps(run))
    capsys.readouterr()
    assert (
        _compare(
            "--tune",
            "lr",
            "--activations",
            "spocu(c=1)",
            "relu",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--out",
            str(tuned_run),
        )
        == 2
    )
    assert "was trained with lr" in capsys.readouterr().err
    path.write_bytes(before[path])
    assert (
        _compare(
            "--activations",
            "spocu(c=1)",
            "relu",
            "--seeds",
            "2",
            "--epochs",
            "2",
            "--hidden",
            "16",
            "--out",
            str(tuned_run),
        )
        == 2
    )
    assert "different experiment" in capsys.readouterr().err  # without --tune: another protocol


@pytest.mark.slow  # --jobs worker processes
def test_tuning_with_jobs_chooses_the_same_rates(tuned_run, tmp_path):
    out = tmp_path / "jobs"
    assert _compare("--tune", "lr", "--activations", "spocu(c=1)", "relu", "--seeds", "2", "--epochs", "2", "--hidden", "16",
                    "--jobs", "2", "--out", str(out)) == 0  # fmt: skip
    sequential = json.loads((tuned_run / "results.json").read_text())["tuning"]
    parallel = json.loads((out / "results.json").read_text())["tuning"]
    assert parallel == sequential


def test_estimate_includes_the_tuning_budget():
    options = CompareOptions(config={"tune": "lr", "activations": ("relu",), "seeds": 3, "epochs": 4})
    cost = estimate(options)
    (row,) = cost["rows"]
    assert row[4] == "3 + 10 tuning"
    per_epoch, per_run, total = float(row[2]), float(row[3]), float(row[5])
    assert total == pytest.approx((3 * per_run + 10 * 4 * per_epoch / 60), abs=0.11)  # table cells are rounded to 0.1
    assert "--tune lr" in cost["title"] and math.isfinite(cost["total_hours"])
