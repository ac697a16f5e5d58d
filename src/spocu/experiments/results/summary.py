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

__all__ = [
    "SCHEMA_RESULTS",
    "EPOCH_COLUMNS",
    "TABLE_COLUMNS",
    "assemble_results",
    "is_diverged",
    "test_train_ratio",
    "write_epochs_csv",
    "write_results",
    "table_rows",
    "format_cell",
    "run_count",
]

#: 2: t intervals (Nadeau–Bengio corrected with per-seed splits), Bonferroni-level difference intervals, diverged runs
#: left out of the statistics, ``pooled_test``, ``verdict``, ``analysis``; with per-seed splits ``test_labels`` is null
#: and ``test_labels_by_seed`` holds each seed's; runs carry ``split_fingerprint``
SCHEMA_RESULTS = "spocu.compare/2"
EPOCH_COLUMNS = (
    "activation",
    "seed",
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "epoch_seconds",
    "eval_seconds",
)


def is_diverged(run: RunResult) -> bool:
    """A run diverged if a loss became non-finite: in training (``diverged_at``) or on the test set."""
    return run.diverged_at is not None or run.test_loss is None


def test_train_ratio(dataset: Dataset) -> float:
    """Nadeau–Bengio's n_test / n_train where every seed draws its own split (their training sets overlap); else 0."""
    if dataset.info.get("split") != "per-seed":
        return 0.0
    return len(dataset.y_test) / max(len(dataset.y_train), 1)


def assemble_results(
    config: ExperimentConfig,
    dataset: Dataset,
    runs: list[RunResult],
    environment: dict,
    skipped: list[dict] | None = None,
    *,
    rope: float | None = None,
) -> dict:
    """results.json's content: config, environment, dataset, statistics, and every run.

    ``skipped``: run files left out because they failed validation (``--skip-bad-runs``), each
    ``{"path": ..., "reason": ...}``; they are listed, never averaged in. ``rope``: the verdict's
    region of practical equivalence in accuracy points (default :data:`~spocu.experiments.results.stats.DEFAULT_ROPE`).

    A diverged run (:func:`is_diverged`) is counted (``summary[a]["diverged"]``, ``["runs"]``) and
    left out of every accuracy and loss statistic: its predictions are those of a network with
    non-finite outputs (argmax of NaN is class 0), not a measurement.
    """
    import numpy as np

    from spocu.experiments.results import stats

    rope = stats.DEFAULT_ROPE if rope is None else float(rope)
    ratio = test_train_ratio(dataset)
    specs = config.activations
    by_activation = {spec.canonical: {r.seed: r for r in runs if r.activation == spec.canonical} for spec in specs}

    def accuracy(run: RunResult) -> float | None:
        return None if is_diverged(run) else run.test_accuracy

    def loss(run: RunResult) -> float | None:
        return None if is_diverged(run) else run.test_loss

    summary: dict[str, dict[str, Any]] = {}
    for spec in specs:
        mine = by_activation[spec.canonical]
        epoch_seconds = [e.seconds for r in mine.values() for e in r.epochs]
        q1, median, q3 = np.percentile(epoch_seconds, [25, 50, 75]).tolist() if epoch_seconds else [None] * 3
        diverged = sorted(r.seed for r in mine.values() if is_diverged(r))
        summary[spec.canonical] = {
            "init": spec.init,
            "init_reason": spec.init_reason,
            "num_parameters": next((r.num_parameters for r in mine.values()), None),
            "test_accuracy": stats.summarize(
                [accuracy(r) for r in mine.values()], test_train_ratio=ratio, bounds=(0.0, 1.0)
            ).as_dict(),
            "test_loss": stats.summarize([loss(r) for r in mine.values()], test_train_ratio=ratio).as_dict(),
            "seconds_per_epoch": {"median": median, "q1": q1, "q3": q3},
            "diverged": diverged,
            "runs": len(mine),
            "diverged_count": len(diverged),
            "test_loss_robust": _robust_loss([r for r in mine.values()]),
        }
    reference = by_activation[config.reference.canonical]
    level = stats.bonferroni_confidence(len(specs) - 1)
    decide_at = stats.decision_probability(len(specs) - 1)
    comparisons: list[dict[str, Any]] = []
    for spec in specs[1:]:
        mine = by_activation[spec.canonical]
        paired = dict(test_train_ratio=ratio, confidence=level)
        acc = stats.paired_test(
            {s: accuracy(r) for s, r in reference.items()}, {s: accuracy(r) for s, r in mine.items()}, **paired
        )
        los = stats.paired_test(
            {s: loss(r) for s, r in reference.items()}, {s: loss(r) for s, r in mine.items()}, **paired
        )
        common = sorted(set(reference) & set(mine))
        per_seed, tables = [], []
        for seed in common:
            labels = _test_labels(dataset, seed)
            result = stats.mcnemar_test(labels, reference[seed].test_predictions, mine[seed].test_predictions)
            per_seed.append({"seed": seed, **result.as_dict()})
            if not (is_diverged(reference[seed]) or is_diverged(mine[seed])):
                tables.append((labels, reference[seed].test_predictions, mine[seed].test_predictions))
        both = [s for s in common if not (is_diverged(reference[s]) or is_diverged(mine[s]))]
        decision = stats.verdict(
            [reference[s].test_accuracy for s in both],
            [mine[s].test_accuracy for s in both],
            rope=rope,
            test_train_ratio=ratio,
            probability=decide_at,
        ).as_dict()
        decision.update(
            _divergence_rule(
                decision,
                len(summary[config.reference.canonical]["diverged"]),
                len(summary[spec.canonical]["diverged"]),
                spec.canonical,
                config.reference.canonical,
            )
        )
        comparisons.append(
            {
                "activation": spec.canonical,
                "reference": config.reference.canonical,
                "test_accuracy": acc,
                "test_loss": los,
                "mcnemar": per_seed,
                "pooled_test": stats.pooled_test(tables),
                "verdict": decision,
            }
        )
    for metric in ("test_accuracy", "test_loss"):
        for key in ("p_ttest", "p_wilcoxon"):
            adjusted = stats.holm([getattr(c[metric], key) for c in comparisons])
            for comparison, value in zip(comparisons, adjusted):
                setattr(comparison[metric], f"{key}_holm", value)
    pooled = stats.holm(
        [np.nan if c["pooled_test"]["p_value"] is None else c["pooled_test"]["p_value"] for c in comparisons]
    )
    for comparison, value in zip(comparisons, pooled):
        comparison["pooled_test"]["p_value_holm"] = None if not np.isfinite(value) else float(value)
    for comparison in comparisons:
        for metric in ("test_accuracy", "test_loss"):
            comparison[metric] = comparison[metric].as_dict()
        comparison["mcnemar_significant"] = sum(
            1 for m in comparison["mcnemar"] if m["p_value"] is not None and m["p_value"] < 0.05
        )
    per_seed_split = dataset.info.get("split") == "per-seed"
    results = {
        "schema": SCHEMA_RESULTS,
        "created": utc_now(),
        "config": config.to_dict(),
        "protocol_hash": config.protocol_hash(),
        "reference": config.reference.canonical,
        "dataset": dataset.describe(),
        "environment": environment,
        "analysis": {
            "rope": rope,
            "rope_unit": "accuracy points",
            "decision_probability": decide_at,
            "decision_adjustment": f"Bonferroni: a label needs a posterior probability >= {decide_at:.4g} "
            f"(1 - 0.05/{len(specs) - 1}), so the {len(specs) - 1} verdict(s) hold together at 95%",
            "interval_adjustment": f"Bonferroni: each difference interval at {level:.4g} for {len(specs) - 1} comparison(s); p-values Holm",
            "test_train_ratio": ratio,
            "diverged_runs": "counted and left out of every accuracy and loss statistic and of the verdict",
        },
        "summary": summary,
        "comparisons": comparisons,
        "test_labels": None if per_seed_split else dataset.y_test.tolist(),
        # with per-seed splits each seed has its own test samples: their labels, by seed
        **(
            {"test_labels_by_seed": {str(seed): _test_labels(dataset, seed) for seed in config.seeds}}
            if per_seed_split
            else {}
        ),
        "runs": [r.to_json() for r in runs],
    }
    if skipped:
        results["skipped_runs"] = list(skipped)
    from spocu.experiments.config import PRESETS

    provenance = PRESETS.get(config.preset or "", {}).get("provenance")
    if provenance:  # where each value of a paper-* preset comes from
        results["preset_provenance"] = dict(provenance)
    return results


def _robust_loss(runs: list[RunResult]) -> dict:
    """The test loss that one exploding sample cannot dominate, over runs that recorded it.

    ``median``: median over the (not diverged) runs of each run's median per-sample loss;
    ``huge_logit_share``: mean over all runs of the share of test samples with |logit| > 1e6 (or non-finite),
    ``runs_with_huge_logits``: how many runs had any.
    """
    import numpy as np

    medians = [r.test_loss_median for r in runs if r.test_loss_median is not None and not is_diverged(r)]
    shares = [r.test_huge_logit_share for r in runs if r.test_huge_logit_share is not None]
    return {
        "median": float(np.median(medians)) if medians else None,
        "huge_logit_share": float(np.mean(shares)) if shares else None,
        "runs_with_huge_logits": sum(1 for v in shares if v > 0) if shares else None,
        "runs_recorded": len(shares),
    }


def _test_labels(dataset: Dataset, seed: int) -> list[int]:
    """The test labels the runs of ``seed`` were scored on (their own split with ``--split per-seed``)."""
    for_seed = getattr(dataset, "for_seed", None)
    return (for_seed(seed) if for_seed is not None else dataset).y_test.tolist()


def _divergence_rule(decision: dict, reference_diverged: int, other_diverged: int, name: str, reference: str) -> dict:
    """A side that diverged on more seeds cannot be called better or equivalent: such a label becomes inconclusive."""
    label = decision["label"]
    worse_side = (
        name if other_diverged > reference_diverged else reference if reference_diverged > other_diverged else None
    )
    downgrade = (label in ("better", "equivalent") and worse_side == name) or (
        label in ("worse", "equivalent") and worse_side == reference
    )
    if not downgrade:
        return {}
    return {
        "label": "inconclusive",
        "note": (decision.get("note") or "")
        + f"{'; ' if decision.get('note') else ''}{label} on the seeds where both trained, "
        f"but {worse_side} diverged on more seeds ({name} {other_diverged}, {reference} {reference_diverged})",
    }


def write_epochs_csv(path: Path, runs: list[RunResult]) -> None:
    """One row per run and epoch (empty cells where a value was not finite)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EPOCH_COLUMNS)
    for run in runs:
        for e in run.epochs:
            row = (
                run.activation,
                run.seed,
                e.epoch,
                e.train_loss,
                e.train_accuracy,
                e.val_loss,
                e.val_accuracy,
                e.seconds,
                e.eval_seconds,
            )
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
TABLE_COLUMNS = ("activation", "n", "test acc", "sd", "95% CI", "Δ", "p Holm", "pooled p", "verdict", "s/epoch")


def run_count(summary: dict) -> str:
    """'5' or '5 (2 diverged)': the runs of an activation and how many of them diverged."""
    k, n = summary.get("diverged_count", len(summary.get("diverged", []))), summary.get("runs")
    if n is None:
        return "n/a"
    return f"{n}" + (f" ({k} diverged)" if k else "")


def table_rows(results: dict) -> list[tuple[str, ...]]:
    """The summary table: one row per activation, cells as :data:`TABLE_COLUMNS` (strings)."""
    from spocu.experiments.results.report import fmt_p

    comparisons = {c["activation"]: c for c in results["comparisons"]}
    rows: list[tuple[str, ...]] = []
    for name in results["config"]["activations"]:
        s = results["summary"][name]
        acc = s["test_accuracy"]
        ci = "n/a" if acc["ci_low"] is None else f"{acc['ci_low']:.4f}–{acc['ci_high']:.4f}"
        c = comparisons.get(name)
        delta = (
            "—"
            if c is None or c["test_accuracy"]["mean_difference"] is None
            else format_cell(c["test_accuracy"]["mean_difference"], signed=True)
        )
        p = "—" if c is None else fmt_p(c["test_accuracy"]["p_ttest_holm"])
        pooled = "—" if c is None else fmt_p(c["pooled_test"]["p_value_holm"])
        label = "reference" if c is None else c["verdict"]["label"]
        median = s["seconds_per_epoch"]["median"]
        rows.append(
            (
                name,
                run_count(s),
                format_cell(acc["mean"]),
                format_cell(acc["sd"]),
                ci,
                delta,
                p,
                pooled,
                label,
                "n/a" if median is None else f"{median:.3g}",
            )
        )
    return rows
