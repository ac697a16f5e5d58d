"""Where the pending runs of ``spocu compare`` train: executors, by name (``--executor``), in one place.

An executor trains a list of pending (activation, seed) runs somewhere else (worker processes, a
cluster), saves each finished run into ``out_root`` itself, and yields each finished
:class:`~spocu.experiments.run.engine.RunResult` as it ends. It reports progress to ``callbacks``
(``run_started``, ``epoch_done``, ``run_finished``) in the calling process, in order per run. On
an exception in the caller (Ctrl-C) or in a run it stops its workers; finished runs stay saved.

:data:`EXECUTORS` maps a name (``spocu compare --executor NAME``) to ``"module:function"``,
imported only when used, so an executor's dependencies (ray, ...) load only when it is chosen.
To add one: implement :class:`Executor` in a module and add its entry here. An executor may take
keyword options of its own after these (``ray``: ``address``), given through
:func:`~spocu.experiments.run.runner.run_experiment`'s ``executor_options``.

- ``local`` (the default): worker processes on this machine (:mod:`~spocu.experiments.run.parallel`);
  with ``--jobs 1`` the runs train in the calling process instead.
- ``ray``: one Ray task per run, on a local Ray or any Ray cluster (:mod:`~spocu.experiments.run.ray_executor`);
  ``jobs`` None lets the cluster's free resources decide how many run at once.

Example:
    >>> sorted(EXECUTORS), get_executor("local").__name__
    (['local', 'ray'], 'train_in_pool')
"""

from __future__ import annotations

import importlib
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.data.datasets import Dataset
    from spocu.experiments.run.engine import RunResult

__all__ = ["Executor", "EXECUTORS", "DEFAULT_EXECUTOR", "get_executor"]


class Executor(Protocol):
    """Train ``pending`` runs (``jobs`` at a time); save each into ``out_root``; yield each RunResult as it finishes."""

    def __call__(
        self,
        pending: list[tuple[ActivationSpec, int]],
        *,
        config: ExperimentConfig,
        dataset: Dataset,
        out_root: Path,
        framework: str,
        device: str,
        threads: int | None,
        jobs: int | None,
        callbacks: Any,
        protocol_hash: str,
    ) -> Generator[RunResult, None, None]:
        """Train every ``(activation, seed)`` of ``pending`` and yield each :class:`RunResult` as it
        finishes, after saving it under ``out_root``.
        """


#: name -> "module:function" implementing :class:`Executor`
EXECUTORS: dict[str, str] = {
    "local": "spocu.experiments.run.parallel:train_in_pool",
    "ray": "spocu.experiments.run.ray_executor:train_with_ray",
}
DEFAULT_EXECUTOR = "local"


def get_executor(name: str) -> Executor:
    """The executor registered as ``name`` (imported now); ValueError for an unknown name."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    module, _, function = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), function)
