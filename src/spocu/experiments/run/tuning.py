"""``spocu compare --tune lr``: each activation's learning rate chosen on the validation split.

One learning rate for every activation favours whichever activation it happens to suit. With
``--tune lr`` every activation gets the same budget: each rate of the grid
(:meth:`~spocu.experiments.config.ExperimentConfig.tune_grid`, 5 log-spaced rates from lr/10 to
lr x 10) trains on the tuning seeds (:meth:`~spocu.experiments.config.ExperimentConfig.tune_seeds`,
the experiment's first two) for the protocol's epochs, and is scored by the mean over those seeds
of the last epoch's validation accuracy (the network the test set would see). A rate at which a
tuning seed diverged is not eligible; ties go to the lower mean validation loss, then to the rate
nearer the default. Then every seed of the experiment trains at its activation's chosen rate.

**The test set never takes part**: the tuning runs get the dataset with its test part removed
(:func:`without_test`), so no test sample reaches them.

**How it runs.** The tuning runs are ordinary runs: for each rate, a sub-experiment (the
protocol with that ``lr``, the tuning seeds) in ``OUT/tuning/lr-<rate>/``, trained by
:func:`~spocu.experiments.run.runner.run_experiment` like any other -- in this process, in
``--jobs`` workers or on Ray -- and resumed the same way (finished tuning runs are skipped). This
keeps the executors unchanged (they train (activation, seed) runs of one protocol) at the cost of
a barrier per rate. The chosen rates enter the main experiment as
``config.learning_rates``; each main run records its ``lr``, and a run file trained at another
rate is refused on resume.

Example:
    >>> from spocu.experiments.run.engine import EpochRecord
    >>> def last(acc, loss):
    ...     return [EpochRecord(1, 0.5, 0.8, loss, acc, 0.1, 0.01)]
    >>> scores = {1e-3: [last(0.90, 0.30), last(0.92, 0.28)], 1e-2: [last(0.95, 0.20), None]}
    >>> choose_rate(scores, default=1e-3)[0]
    0.001
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

from spocu.experiments.run.engine import EpochRecord, RunResult
from spocu.experiments.run.store import OutputDir, dump_json

if TYPE_CHECKING:
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset

__all__ = ["TUNING_DIR", "TuningCallbacks", "choose_rate", "rate_label", "tune_learning_rates", "without_test"]

#: where the tuning runs live, below the output directory
TUNING_DIR = "tuning"


def rate_label(lr: float) -> str:
    """A learning rate as a directory name: ``lr-0.000316228``."""
    return f"lr-{lr:.6g}"


def without_test(dataset: Dataset) -> Dataset:
    """``dataset`` with an empty test split (the tuning runs' data: the test set never takes part), for every seed's split too."""
    resplit = None if dataset.resplit is None else dataclasses.replace(dataset.resplit, drop_test=True)
    return dataclasses.replace(dataset, x_test=dataset.x_test[:0], y_test=dataset.y_test[:0], resplit=resplit)


def _last(epochs: list[EpochRecord] | None) -> tuple[float | None, float | None]:
    if not epochs:
        return None, None
    return epochs[-1].val_accuracy, epochs[-1].val_loss


def choose_rate(
    scores: dict[float, list[list[EpochRecord] | None]], default: float
) -> tuple[float, list[dict[str, Any]]]:
    """The winning rate among ``scores`` (rate -> each tuning seed's epochs, None if it diverged) and each rate's score.

    Score: the mean last-epoch validation accuracy over the seeds; a rate with a diverged seed
    (None, or a non-finite last validation value) is not eligible; ties: lower mean validation
    loss, then the rate nearer ``default`` (in log scale). With no eligible rate, ``default``.
    """
    table, ranked = [], []
    for lr, runs in scores.items():
        values = [_last(epochs) for epochs in runs]
        diverged = sum(1 for epochs, (acc, loss) in zip(runs, values) if epochs is None or acc is None or loss is None)
        accuracy = loss = None
        if not diverged and values:
            # not diverged: every seed has a last accuracy and loss (the filters only say so to the type checker)
            accuracy = math.fsum(a for a, _ in values if a is not None) / len(values)
            loss = math.fsum(v for _, v in values if v is not None) / len(values)
            ranked.append((-accuracy, loss, abs(math.log(lr / default)), lr))
        table.append({"lr": lr, "val_accuracy": accuracy, "val_loss": loss, "diverged": diverged, "seeds": len(runs)})
    chosen = min(ranked)[-1] if ranked else default
    for row in table:
        row["chosen"] = row["lr"] == chosen
    return chosen, table


class TuningCallbacks:
    """The runner's callbacks for the tuning runs of one rate: runs labelled ``"<activation> lr <rate>"``; a
    finished run carries ``extra["tuning_lr"]`` (it has no test set: show its validation accuracy instead)."""

    def __init__(self, inner: Any, lr: float) -> None:
        self.inner, self.lr = inner, lr

    def _label(self, activation: str) -> str:
        return f"{activation} lr {self.lr:.3g}"

    def plan(self, total: int, finished: int, epochs: int) -> None:
        """Pass the plan on to the wrapped callbacks."""
        self.inner.plan(total, finished, epochs)

    def run_started(self, activation: str, seed: int) -> None:
        """Report the run's start under its tuning label, ``<activation> lr <rate>``."""
        self.inner.run_started(self._label(activation), seed)

    def epoch_done(self, activation: str, seed: int, record: EpochRecord) -> None:
        """Report the epoch under the run's tuning label."""
        self.inner.epoch_done(self._label(activation), seed, record)

    def run_finished(self, result: RunResult) -> None:
        """Report the finished run under its tuning label, with ``extra['tuning_lr']`` set to the rate."""
        label = self._label(result.activation)
        self.inner.run_finished(
            dataclasses.replace(result, activation=label, extra={**result.extra, "tuning_lr": self.lr})
        )

    def run_failed(self, failure: Any) -> None:
        """Report the failed run under its tuning label (if the wrapped callbacks take failures)."""
        if hasattr(self.inner, "run_failed"):
            self.inner.run_failed(dataclasses.replace(failure, activation=self._label(failure.activation)))


def tune_learning_rates(
    config: ExperimentConfig, out: OutputDir, dataset: Dataset, train: Any, *, say: Any = None
) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Train the tuning runs (``train(sub_config, sub_out, data, lr) -> list[RunResult]``, one call per rate), choose.

    Returns the config with ``learning_rates`` set, and the tuning record for results.json
    (``{"parameter", "grid", "seeds", "score", "activations": {name: {"chosen", "scores"}}}``),
    also written to ``OUT/tuning/tuning.json``.
    """
    data = without_test(dataset)
    seeds = config.tune_seeds()
    runs: dict[tuple[str, float, int], RunResult] = {}
    for lr in config.tune_grid():
        sub = dataclasses.replace(config, lr=lr, seeds=seeds, tune=None, learning_rates=())
        if say is not None:
            say(
                f"tuning lr {lr:.3g}: {', '.join(a.canonical for a in config.activations)} x seeds {', '.join(map(str, seeds))} (validation split only)"
            )
        for result in train(sub, OutputDir(out.root / TUNING_DIR / rate_label(lr)), data, lr):
            runs[(result.activation, lr, result.seed)] = result
    chosen: dict[ActivationSpec, float] = {}
    record: dict[str, Any] = {}
    for spec in config.activations:
        scores = {}
        for lr in config.tune_grid():  # the run files name their activation by its canonical string
            scores[lr] = [
                None if (r := runs.get((spec.canonical, lr, seed))) is None or r.diverged_at is not None else r.epochs
                for seed in seeds
            ]
        chosen[spec], table = choose_rate(scores, config.lr)
        record[spec.canonical] = {"chosen": chosen[spec], "scores": table}
    tuning = {
        "parameter": "lr",
        "grid": list(config.tune_grid()),
        "seeds": list(seeds),
        "score": config.protocol()["tune"]["score"],
        "activations": record,
    }
    from spocu._atomic import atomic_write_text

    (out.root / TUNING_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_text(out.root / TUNING_DIR / "tuning.json", dump_json(tuning))
    return dataclasses.replace(config, learning_rates=tuple(chosen.items())), tuning
