"""From the runs to the results: ``results.json``, ``epochs.csv`` and the rows of the results table.

:func:`assemble_results` computes the statistics (:mod:`spocu.experiments.results.stats`) of validated runs
(:mod:`spocu.experiments.run.store`); :func:`write_results` writes ``results.json`` and ``epochs.csv``
atomically; :func:`table_rows` gives the summary table the command prints.

Example:
    >>> format_cell(None), format_cell(0.95), format_cell(0.0123, signed=True)
    ('n/a', '0.9500', '+0.0123')
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spocu._atomic import atomic_write_text
from spocu.experiments.run.engine import RunResult, utc_now
from spocu.experiments.run.store import dump_json

if TYPE_CHECKING:
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset

__all__ = ["SCHEMA_RESULTS", "EPOCH_COLUMNS", "TABLE_COLUMNS", "assemble_results", "write_epochs_csv", "write_results", "table_rows", "format_cell"]

SCHEMA_RESULTS = "spocu.compare/1"
EPOCH_COLUMNS = ("activation", "seed", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds", "eval_seconds")


def assemble_results(
    config: ExperimentConfig, dataset: Dataset, runs: list[RunResult], environment: dict, skipped: list[dict] | None = None
) -> dict:
    """results.json's content: config, environment, dataset, statistics, and every run.

    ``skipped``: run files left out because they failed validation (``--skip-bad-runs``), each
    ``{"path": ..., "reason": ...}``; they are listed, never averaged in.
    """
    import numpy as np

    from spocu.experiments.results import stats

    specs = config.activation_specs()
    by_activation = {spec.canonical: {r.seed: r for r in runs if r.activation == spec.canonical} for spec in specs}
    y_test = dataset.y_test.tolist()
    summary = {}
    for spec in specs:
        mine = by_activation[spec.canonical]
        epoch_seconds = [e.seconds for r in mine.values() for e in r.epochs]
        q1, median, q3 = (np.percentile(epoch_seconds, [25, 50, 75]).tolist() if epoch_seconds else [None] * 3)
        summary[spec.canonical] = {
            "init": spec.init,
            "init_reason": spec.init_reason,
            "num_parameters": next((r.num_parameters for r in mine.values()), None),
            "test_accuracy": stats.summarize([r.test_accuracy for r in mine.values()]).as_dict(),
            "test_loss": stats.summarize([r.test_loss for r in mine.values()]).as_dict(),
            "seconds_per_epoch": {"median": median, "q1": q1, "q3": q3},
            "diverged": sorted(r.seed for r in mine.values() if r.diverged_at is not None),
        }
    reference = by_activation[config.reference]
    comparisons = []
    for spec in specs[1:]:
        mine = by_activation[spec.canonical]
        accuracy = stats.paired_test({s: r.test_accuracy for s, r in reference.items()}, {s: r.test_accuracy for s, r in mine.items()})
        loss = stats.paired_test({s: r.test_loss for s, r in reference.items()}, {s: r.test_loss for s, r in mine.items()})
        per_seed = []
        for seed in sorted(set(reference) & set(mine)):
            result = stats.mcnemar_test(y_test, reference[seed].test_predictions, mine[seed].test_predictions)
            per_seed.append({"seed": seed, **result.as_dict()})
        comparisons.append({"activation": spec.canonical, "reference": config.reference, "test_accuracy": accuracy, "test_loss": loss, "mcnemar": per_seed})
    for metric in ("test_accuracy", "test_loss"):
        for key in ("p_ttest", "p_wilcoxon"):
            adjusted = stats.holm([getattr(c[metric], key) for c in comparisons])
            for comparison, value in zip(comparisons, adjusted):
                setattr(comparison[metric], f"{key}_holm", value)
    for comparison in comparisons:
        for metric in ("test_accuracy", "test_loss"):
            comparison[metric] = comparison[metric].as_dict()
        comparison["mcnemar_significant"] = sum(1 for m in comparison["mcnemar"] if m["p_value"] is not None and m["p_value"] < 0.05)
    results = {
        "schema": SCHEMA_RESULTS,
        "created": utc_now(),
        "config": config.to_dict(),
        "protocol_hash": config.protocol_hash(),
        "reference": config.reference,
        "dataset": dataset.describe(),
        "environment": environment,
        "summary": summary,
        "comparisons": comparisons,
        "test_labels": y_test,
        "runs": [r.to_json() for r in runs],
    }
    if skipped:
        results["skipped_runs"] = list(skipped)
    from spocu.experiments.config import PRESETS

    provenance = PRESETS.get(config.preset or "", {}).get("provenance")
    if provenance:  # where each value of a paper-* preset comes from
        results["preset_provenance"] = dict(provenance)
    return results


def write_epochs_csv(path: Path, runs: list[RunResult]) -> None:
    """One row per run and epoch (empty cells where a value was not finite)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EPOCH_COLUMNS)
    for run in runs:
        for e in run.epochs:
            row = (run.activation, run.seed, e.epoch, e.train_loss, e.train_accuracy, e.val_loss, e.val_accuracy, e.seconds, e.eval_seconds)
            writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    atomic_write_text(path, buffer.getvalue())


def write_results(root: Path, results: dict, runs: list[RunResult]) -> None:
    """``results.json`` and ``epochs.csv`` into ``root``, atomically."""
    atomic_write_text(Path(root) / "results.json", dump_json(results))
    write_epochs_csv(Path(root) / "epochs.csv", runs)


def format_cell(value: Any, digits: int = 4, *, signed: bool = False) -> str:
    """A number for a table cell: fixed ``digits`` decimals, 'n/a' for None."""
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


#: columns of :func:`table_rows` (the first is the activation)
TABLE_COLUMNS = ("activation", "test acc", "sd", "95% CI", "Δ", "p Holm", "McNemar", "s/epoch")


def table_rows(results: dict) -> list[tuple[str, ...]]:
    """The summary table: one row per activation, cells as :data:`TABLE_COLUMNS` (strings)."""
    from spocu.experiments.results.report import fmt_p

    comparisons = {c["activation"]: c for c in results["comparisons"]}
    rows = []
    for name in results["config"]["activations"]:
        s = results["summary"][name]
        acc = s["test_accuracy"]
        ci = "n/a" if acc["ci_low"] is None else f"{acc['ci_low']:.4f}–{acc['ci_high']:.4f}"
        c = comparisons.get(name)
        delta = "—" if c is None or c["test_accuracy"]["mean_difference"] is None else format_cell(c["test_accuracy"]["mean_difference"], signed=True)
        p = "—" if c is None else fmt_p(c["test_accuracy"]["p_ttest_holm"])
        mcnemar = "—" if c is None else f"{c['mcnemar_significant']}/{len(c['mcnemar'])}"
        median = s["seconds_per_epoch"]["median"]
        rows.append((name, format_cell(acc["mean"]), format_cell(acc["sd"]), ci, delta, p, mcnemar, "n/a" if median is None else f"{median:.3g}"))
    return rows
