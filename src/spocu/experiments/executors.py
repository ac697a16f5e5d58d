"""Where the pending runs of ``spocu compare --jobs N`` train: executors, by name, in one place.

An executor trains a list of pending (activation, seed) runs somewhere else (worker processes, a
cluster), saves each finished run into ``out_root`` itself, and yields each finished
:class:`~spocu.experiments.engines.RunResult` as it ends. It reports progress to ``callbacks``
(``run_started``, ``epoch_done``, ``run_finished``) in the calling process, in order per run. On
an exception in the caller (Ctrl-C) or in a run it stops its workers; finished runs stay saved.

:data:`EXECUTORS` maps a name (``spocu compare --executor NAME``) to ``"module:function"``,
imported only when used, so an executor's dependencies (ray, ...) load only when it is chosen.
To add one: implement :class:`Executor` in a module and add its entry here.

Example:
    >>> sorted(EXECUTORS)[:1], get_executor("process").__name__
    (['process'], 'train_in_pool')
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol

if TYPE_CHECKING:
    from spocu.experiments.activations import ActivationSpec
    from spocu.experiments.config import ExperimentConfig
    from spocu.experiments.datasets import Dataset
    from spocu.experiments.engines import RunResult

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
        jobs: int,
        callbacks: Any,
        protocol_hash: str,
    ) -> Iterator[RunResult]: ...


#: name -> "module:function" implementing :class:`Executor`
EXECUTORS: dict[str, str] = {
    "process": "spocu.experiments.parallel:train_in_pool",
}
DEFAULT_EXECUTOR = "process"


def get_executor(name: str) -> Executor:
    """The executor registered as ``name`` (imported now); ValueError for an unknown name."""
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")
    module, _, function = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), function)
