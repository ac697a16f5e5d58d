"""The plan of (activation, seed) runs, trained in order, resumable and safe to interrupt.

:func:`run_experiment` trains every run of the grid that its output directory
(:class:`~spocu.experiments.run.store.OutputDir`) does not hold yet, in this process, in an
executor's workers (``--jobs``, :mod:`spocu.experiments.run.executors`), or together with the
other processes of a ``torchrun`` group. Runs are ordered seed by seed (all activations of
seed 0, then seed 1, ...), so an interrupted experiment stays balanced and timings of different
activations are interleaved. Every finished run is saved as it ends, so an interrupt loses at
most the runs in progress; running the same command on the same directory skips the finished runs.

Example:
    >>> from spocu.experiments.config import resolve_config
    >>> [(spec.canonical, seed) for spec, seed in plan(resolve_config({"activations": ("relu", "selu"), "seeds": 2}))]
    [('relu', 0), ('selu', 0), ('relu', 1), ('selu', 1)]
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, cast

from spocu.experiments.errors import BadRunFile, ExperimentError
from spocu.experiments.run.engine import Engine, EpochRecord, RunResult
from spocu.experiments.run.executors import DEFAULT_EXECUTOR, get_executor
from spocu.experiments.run.store import OutputDir

if TYPE_CHECKING:
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset

__all__ = ["Callbacks", "SilentCallbacks", "ExperimentRuns", "plan", "run_experiment"]


class Callbacks(Protocol):
    """What the runner reports while it works (the command shows a rich progress bar)."""

    def plan(self, total: int, finished: int, epochs: int) -> None:
        """Before the first run: ``total`` runs in the grid, ``finished`` of them on disk, ``epochs`` per run."""

    def run_started(self, activation: str, seed: int) -> None:
        """Run ``activation`` with ``seed`` starts."""

    def epoch_done(self, activation: str, seed: int, record: EpochRecord) -> None:
        """Run ``activation`` with ``seed`` finished an epoch (``record``)."""

    def run_finished(self, result: RunResult) -> None:
        """A run finished and its file is saved."""


class SilentCallbacks:
    """:class:`Callbacks` that report nothing (the tuning runs' default when none are given)."""

    def plan(self, total: int, finished: int, epochs: int) -> None:
        """Report nothing."""

    def run_started(self, activation: str, seed: int) -> None:
        """Report nothing."""

    def epoch_done(self, activation: str, seed: int, record: EpochRecord) -> None:
        """Report nothing."""

    def run_finished(self, result: RunResult) -> None:
        """Report nothing."""


@dataclass
class ExperimentRuns:
    """The runs of the grid, in plan order, and the run files left out as bad (``skip_bad_runs``)."""

    runs: list[RunResult]
    skipped: list[dict[str, str]] = field(default_factory=list)


def plan(config: ExperimentConfig) -> list[tuple[ActivationSpec, int]]:
    """The runs in order: seed by seed, the activations in the order given."""
    return [(spec, seed) for seed in config.seeds for spec in config.activations]


def run_experiment(
    config: ExperimentConfig,
    out: OutputDir,
    dataset: Dataset,
    engine: Engine,
    *,
    device: str = "cpu",
    threads: int | None = None,
    callbacks: Callbacks | None = None,
    jobs: int | None = 1,
    executor: str = DEFAULT_EXECUTOR,
    executor_options: dict[str, Any] | None = None,
    dist: Any = None,
    skip_bad_runs: bool = False,
) -> ExperimentRuns:
    """Train every run of the grid not yet in ``out``; return all runs in plan order.

    ``jobs > 1`` (or an executor other than the default): the pending runs go to ``executor``
    (:mod:`spocu.experiments.run.executors`), with ``executor_options`` (its own keyword options) and
    ``jobs`` (None: as many at once as the executor can). ``dist``: this process is one of a ``torchrun`` group
    (:mod:`spocu.experiments.run.distributed`); every process calls this, all train each run together,
    and only rank 0 reads and writes ``out`` and reports to ``callbacks`` (the others return no runs).

    A run file that fails validation raises :class:`~spocu.experiments.errors.BadRunFile`, or with
    ``skip_bad_runs`` is left as it is, not retrained and not used, and listed in ``skipped``.

    A ``KeyboardInterrupt`` (or any error) inside a run propagates; the runs finished before it
    are already on disk.
    """
    callbacks = callbacks or SilentCallbacks()
    main = dist is None or dist.is_main
    runs = plan(config)
    done: dict[tuple[str, int], RunResult | None] = {}
    skipped: list[dict[str, str]] = []
    bad: set[tuple[str, int]] = set()
    problem = None
    if main:
        try:
            out.prepare(config)
            for spec, seed in runs:
                try:
                    done[(spec.canonical, seed)] = out.load_run(spec, seed, config, dataset)
                except BadRunFile as error:
                    if not skip_bad_runs:
                        raise
                    skipped.append({"path": error.path, "reason": error.reason.split("; ")[0]})
                    bad.add((spec.canonical, seed))
        except (ExperimentError, OSError) as error:
            if dist is None:
                raise
            problem = error  # raised below in every process, so that none waits for the others
    if dist is not None:  # rank 0 alone sees the output directory: it tells the others what to train
        decision = dist.broadcast(
            {
                "problem": None if problem is None else str(problem),
                "done": sorted([*(k for k, v in done.items() if v is not None), *bad]),
            }
        )
        if decision["problem"] is not None:
            raise ExperimentError(decision["problem"])
        finished = {tuple(k) for k in decision["done"]}
    else:
        finished = {k for k, v in done.items() if v is not None} | bad
    if main:
        callbacks.plan(len(runs), len(finished), config.epochs)
    pending = [(spec, seed) for spec, seed in runs if (spec.canonical, seed) not in finished]
    if pending and dist is None and ((jobs or 1) > 1 and len(pending) > 1 or executor != DEFAULT_EXECUTOR):
        train_elsewhere = get_executor(executor)
        with contextlib.closing(
            train_elsewhere(
                pending,
                config=config,
                dataset=dataset,
                out_root=out.root,
                framework=engine.NAME,
                device=device,
                threads=threads,
                jobs=jobs,
                callbacks=callbacks,
                protocol_hash=config.protocol_hash(),
                **(executor_options or {}),
            )
        ) as finished_elsewhere:
            for result in finished_elsewhere:
                done[(result.activation, result.seed)] = result
    else:
        options = {} if dist is None else {"dist": dist}
        for spec, seed in pending:
            if main:
                callbacks.run_started(spec.canonical, seed)
            result = engine.train_run(
                config,
                dataset,
                spec,
                seed,
                device=device,
                threads=threads,
                on_epoch=partial(callbacks.epoch_done, spec.canonical, seed) if main else None,
                protocol_hash=config.protocol_hash(),
                **options,
            )
            if main:
                out.save_run(spec, result)
                callbacks.run_finished(result)
                done[(spec.canonical, seed)] = result
    if not main:
        return ExperimentRuns([])
    # every run that is not bad was loaded or trained above: none is None any more
    results = cast("list[RunResult]", [done[key] for spec, seed in runs if (key := (spec.canonical, seed)) not in bad])
    return ExperimentRuns(results, skipped)
