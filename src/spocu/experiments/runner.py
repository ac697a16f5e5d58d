"""The plan of (activation, seed) runs, resumable and safe to interrupt.

Output directory layout::

    config.json                     the protocol (checked when the directory is reused)
    runs/<activation>-seed<k>.json  one finished run each (RunResult), written as the run ends
    results.json, epochs.csv        assembled from runs/ when every run of the grid is done
    report.md, curves.png, activations.png

Every file is written to a temporary file in the same directory and renamed over the final
name (``os.replace``, atomic on POSIX and Windows), so an interrupt (Ctrl-C, kill) loses at
most the run in progress and never leaves a half-written file under a final name. Running the
same command on the same directory skips the finished runs. Runs are ordered seed by seed
(all activations of seed 0, then seed 1, ...), so an interrupted experiment stays balanced
and timings of different activations are interleaved.

Writes go through :mod:`spocu._atomic`.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from spocu._atomic import atomic_write_text
from spocu.experiments.activations import ActivationSpec
from spocu.experiments.config import ExperimentConfig
from spocu.experiments.datasets import Dataset
from spocu.experiments.engines import EpochRecord, RunResult

__all__ = [
    "SCHEMA_RESULTS",
    "ConfigMismatch",
    "OutputBusy",
    "Callbacks",
    "OutputDir",
    "run_experiment",
    "assemble_results",
    "write_epochs_csv",
]

SCHEMA_RESULTS = "spocu.compare/1"
SCHEMA_CONFIG = "spocu.compare-config/1"


class ConfigMismatch(ValueError):
    """The output directory holds runs of a different protocol."""


class OutputBusy(RuntimeError):
    """Another ``spocu compare`` is writing to the same output directory."""


def _dump(data: Any) -> str:
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


class Callbacks(Protocol):
    """What the runner reports while it works (the command shows a rich progress bar)."""

    def plan(self, total: int, finished: int, epochs: int) -> None: ...
    def run_started(self, activation: str, seed: int) -> None: ...
    def epoch_done(self, activation: str, seed: int, record: EpochRecord) -> None: ...
    def run_finished(self, result: RunResult) -> None: ...


class SilentCallbacks:
    def plan(self, total: int, finished: int, epochs: int) -> None:
        pass

    def run_started(self, activation: str, seed: int) -> None:
        pass

    def epoch_done(self, activation: str, seed: int, record: EpochRecord) -> None:
        pass

    def run_finished(self, result: RunResult) -> None:
        pass


@dataclass
class OutputDir:
    """An experiment's output directory; see the module docstring for the layout."""

    root: Path

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    def run_path(self, activation: ActivationSpec, seed: int) -> Path:
        return self.runs / f"{activation.slug}-seed{seed}.json"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock on the directory (POSIX ``flock``; a no-op where unavailable)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            yield
            return
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputBusy(f"another spocu compare is writing to {self.root}; wait for it or use another --out") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def prepare(self, config: ExperimentConfig) -> None:
        """Create the directory, or check that its protocol is ``config``'s; remove stale temp files."""
        self.runs.mkdir(parents=True, exist_ok=True)
        for directory in (self.root, self.runs):
            for stale in directory.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        path = self.root / "config.json"
        protocol = config.protocol()
        if path.exists():
            try:
                stored = json.loads(path.read_text())["protocol"]
            except (ValueError, KeyError) as error:
                raise ConfigMismatch(f"{path} is not a spocu compare config ({error}); use another --out") from None
            if stored != json.loads(json.dumps(protocol)):
                differences = [
                    f"{key}: {json.dumps(stored.get(key))} there, {json.dumps(protocol.get(key))} now"
                    for key in sorted(set(stored) | set(protocol))
                    if json.dumps(stored.get(key)) != json.dumps(protocol.get(key))
                ]
                raise ConfigMismatch(
                    f"{self.root} holds runs of a different experiment ({'; '.join(differences)}). "
                    "Use the same options to resume it, or another --out for a new experiment."
                )
        else:
            atomic_write_text(path, _dump({"schema": SCHEMA_CONFIG, "protocol": protocol, "protocol_hash": config.protocol_hash()}))

    def load_run(self, activation: ActivationSpec, seed: int, config: ExperimentConfig, fingerprint: str) -> RunResult | None:
        """The finished run, or None if it is not there. Raises if it belongs to other data or another protocol."""
        path = self.run_path(activation, seed)
        if not path.exists():
            return None
        try:
            result = RunResult.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise ConfigMismatch(f"{path} is not a readable run record ({error}); delete it to run it again") from None
        if result.protocol_hash != config.protocol_hash():
            raise ConfigMismatch(f"{path} was made with a different protocol; use another --out")
        if result.dataset_fingerprint != fingerprint:
            raise ConfigMismatch(
                f"{path} was trained on different data (fingerprint {result.dataset_fingerprint}, now {fingerprint}): "
                "the dataset files changed; use another --out"
            )
        if (result.activation, result.seed, result.init) != (activation.canonical, seed, activation.init):
            raise ConfigMismatch(f"{path} holds {result.activation} seed {result.seed} ({result.init}), not what its name says")
        return result

    def save_run(self, activation: ActivationSpec, result: RunResult) -> Path:
        path = self.run_path(activation, result.seed)
        atomic_write_text(path, _dump(result.to_json()))
        return path


def plan(config: ExperimentConfig) -> list[tuple[ActivationSpec, int]]:
    """The runs in order: seed by seed, the activations in the order given."""
    specs = config.activation_specs()
    return [(spec, seed) for seed in config.seeds for spec in specs]


def run_experiment(
    config: ExperimentConfig,
    out: OutputDir,
    dataset: Dataset,
    engine,
    *,
    device: str = "cpu",
    threads: int | None = None,
    callbacks: Callbacks | None = None,
    jobs: int = 1,
    dist=None,
) -> list[RunResult]:
    """Train every run of the grid not yet in ``out``; return all runs in plan order.

    ``jobs > 1``: independent runs in that many worker processes (:mod:`spocu.experiments.parallel`).
    ``dist``: this process is one of a ``torchrun`` group (:mod:`spocu.experiments.distributed`);
    every process calls this, all train each run together, and only rank 0 reads and writes
    ``out`` and reports to ``callbacks`` (the others return an empty list).

    A ``KeyboardInterrupt`` (or any error) inside a run propagates; the runs finished before it
    are already on disk.
    """
    callbacks = callbacks or SilentCallbacks()
    main = dist is None or dist.is_main
    fingerprint = dataset.fingerprint()
    runs = plan(config)
    done: dict[tuple[str, int], RunResult | None] = {}
    problem = None
    if main:
        try:
            out.prepare(config)
            done = {(spec.canonical, seed): out.load_run(spec, seed, config, fingerprint) for spec, seed in runs}
        except ConfigMismatch as error:
            if dist is None:
                raise
            problem = str(error)
    if dist is not None:  # rank 0 alone sees the output directory: it tells the others what to train
        decision = dist.broadcast({"problem": problem, "done": sorted(k for k, v in done.items() if v is not None)})
        if decision["problem"] is not None:
            raise ConfigMismatch(decision["problem"])
        finished = {tuple(k) for k in decision["done"]}
    else:
        finished = {k for k, v in done.items() if v is not None}
    if main:
        callbacks.plan(len(runs), len(finished), config.epochs)
    pending = [(spec, seed) for spec, seed in runs if (spec.canonical, seed) not in finished]
    if jobs > 1 and len(pending) > 1 and dist is None:
        from spocu.experiments.parallel import train_in_pool

        with contextlib.closing(
            train_in_pool(
                pending, config=config, dataset=dataset, out_root=out.root, framework=engine.NAME, device=device,
                threads=threads, jobs=jobs, callbacks=callbacks, protocol_hash=config.protocol_hash(),
            )
        ) as results_in_pool:
            for result in results_in_pool:
                done[(result.activation, result.seed)] = result
    else:
        options = {} if dist is None else {"dist": dist}
        for spec, seed in pending:
            if main:
                callbacks.run_started(spec.canonical, seed)
            result = engine.train_run(
                config, dataset, spec, seed, device=device, threads=threads,
                on_epoch=(lambda record, a=spec.canonical, s=seed: callbacks.epoch_done(a, s, record)) if main else None,
                protocol_hash=config.protocol_hash(),
                **options,
            )
            if main:
                out.save_run(spec, result)
                callbacks.run_finished(result)
                done[(spec.canonical, seed)] = result
    return [done[(spec.canonical, seed)] for spec, seed in runs] if main else []


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def assemble_results(config: ExperimentConfig, dataset: Dataset, runs: list[RunResult], environment: dict) -> dict:
    """results.json's content: config, environment, dataset, statistics, and every run."""
    import numpy as np

    from spocu.experiments import stats

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
    return {
        "schema": SCHEMA_RESULTS,
        "created": _now(),
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


EPOCH_COLUMNS = ("activation", "seed", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds", "eval_seconds")


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


def write_results(out: OutputDir, results: dict, runs: list[RunResult]) -> None:
    atomic_write_text(out.root / "results.json", _dump(results))
    write_epochs_csv(out.root / "epochs.csv", runs)
