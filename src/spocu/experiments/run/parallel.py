"""Independent (activation, seed) runs in parallel worker processes: ``spocu compare --jobs N``.

Each run is independent (its own seed-derived init and batch order, see
:mod:`spocu.experiments.run.engine`), so N runs can train at once in N worker processes.
The parent keeps the output directory's lock, shows the progress bar and assembles the
results; each worker trains one run at a time and writes its finished run itself,
atomically, to its own file ``runs/<activation>-seed<k>.json`` (no shared file, no race):
the same resumability as a sequential run.

- Processes are started with the ``spawn`` method (:class:`concurrent.futures.ProcessPoolExecutor`):
  no forked copies of the parent's thread pools or CUDA state.
- Threads: each worker uses ``threads`` CPU threads (:func:`threads_per_worker`: the usable
  cores divided among the workers, at most what one sequential run would use), so N workers
  do not oversubscribe the cores.
- Devices: with ``--device cuda`` (no index) worker k uses ``cuda:(k mod #GPUs)``, so ``--jobs 4``
  on a 4-GPU machine puts one run on each GPU.
- Results are those of a sequential run: a run's randomness depends on its seed only, never on
  the worker or the order. Bit-identical whenever the run uses the same number of CPU threads
  as the sequential run (always for the small models, which use one thread; pass ``--threads``
  to fix it for large ones): a different thread count may change float rounding in reductions.
- Ctrl-C (or SIGTERM to the parent): pending runs are cancelled, the workers are ended (they ignore
  SIGINT themselves so that the parent decides), the runs in progress are lost, finished runs stay
  on disk.
- No orphans: a worker ends within about a second when its parent dies by any signal, SIGKILL
  included -- on Linux the kernel kills it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), elsewhere
  a watchdog thread sees that its parent changed (:func:`_die_with_parent`). With the workers
  gone, multiprocessing's resource tracker sees its pipe close and ends too. A run in progress
  is lost; its temporary file is removed by the next run on the directory.
- An error in one run: no new runs start; the runs in progress finish and are saved; the error
  is raised.

Example:
    >>> threads_per_worker(jobs=2, usable_cpus=16, sequential_threads=16)
    8
    >>> threads_per_worker(jobs=4, usable_cpus=16, sequential_threads=1)  # small models: one thread each
    1
    >>> threads_per_worker(jobs=32, usable_cpus=16, sequential_threads=16)
    1
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Generator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from spocu.experiments.activations import ActivationSpec
from spocu.experiments.config import ExperimentConfig
from spocu.experiments.data.datasets import Dataset
from spocu.experiments.run.engine import EpochRecord, RunResult, get_engine
from spocu.experiments.run.store import OutputDir

__all__ = ["threads_per_worker", "usable_cpus", "train_in_pool", "WorkerFailed"]

#: environment variables that size the BLAS/OpenMP thread pools of a worker before its libraries load
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_POLL_SECONDS = 0.2
_LATE_EVENT_SECONDS = 30.0
#: how often a worker's watchdog checks that its parent is alive
_WATCHDOG_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerFailed(RuntimeError):
    """A worker process died (killed, out of memory) without reporting an error."""


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def threads_per_worker(jobs: int, usable_cpus: int, sequential_threads: int | None) -> int:
    """CPU threads for each of ``jobs`` workers: ``min(sequential_threads, max(1, usable_cpus // jobs))``.

    ``sequential_threads`` is what one run alone would use (None: no limit beyond the cores).
    """
    share = max(1, usable_cpus // max(1, jobs))
    return share if sequential_threads is None else max(1, min(share, sequential_threads))


# ----------------------------------------------------------------------------- worker side

_worker: dict[str, Any] = {}


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` dies, even by SIGKILL (which it cannot relay).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` asks the kernel to kill us when the parent goes.
    Everywhere: a daemon thread checks ``os.getppid()`` every :data:`_WATCHDOG_SECONDS` (an
    orphan is re-parented) and ends the process at once; it also covers a parent that died
    before the ``prctl`` call.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no libc: the watchdog alone
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_WATCHDOG_SECONDS)
        os._exit(1)  # orphaned: nobody will assemble this run; no cleanup handlers of the parent's making

    threading.Thread(target=watch, name="spocu-parent-watchdog", daemon=True).start()


def _init_worker(
    framework: str,
    config: ExperimentConfig,
    dataset: Dataset,
    out_root: str,
    device: str,
    threads: int | None,
    protocol_hash: str,
    events: Any,
    counter: Any,
    parent: int,
) -> None:
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    if threads is not None:
        for name in _THREAD_VARIABLES:  # before the framework loads its thread pools
            os.environ[name] = str(threads)
    # several workers may share a GPU: TensorFlow and JAX would otherwise each reserve (nearly) all its memory
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    engine = get_engine(framework)
    worker_device = getattr(engine, "worker_device", None)
    _worker.update(
        engine=engine,
        config=config,
        dataset=dataset,
        out_root=Path(out_root),
        device=worker_device(device, index) if worker_device else device,
        threads=threads,
        protocol_hash=protocol_hash,
        events=events,
        parent=parent,
    )


class _ParentGone(Exception):
    pass


def _train_one(activation: ActivationSpec, seed: int) -> dict:
    w = _worker
    events = w["events"]
    key = (activation.canonical, seed)
    events.put(("started", key, None))

    def on_epoch(record: EpochRecord) -> None:
        if os.getppid() != w["parent"]:  # orphaned: nobody will assemble this run
            raise _ParentGone
        events.put(("epoch", key, asdict(record)))

    result = w["engine"].train_run(
        w["config"],
        w["dataset"],
        activation,
        seed,
        device=w["device"],
        threads=w["threads"],
        on_epoch=on_epoch,
        protocol_hash=w["protocol_hash"],
    )
    OutputDir(w["out_root"]).save_run(activation, result)
    data = result.to_json()
    events.put(("finished", key, data))  # after the epochs, through the same ordered queue
    return data


# ----------------------------------------------------------------------------- parent side


def _end_workers(executor: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the worker processes now."""
    terminate = getattr(executor, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
    else:
        for process in list((getattr(executor, "_processes", None) or {}).values()):
            if process.is_alive():
                process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)


def train_in_pool(
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
) -> Generator[RunResult, None, None]:
    """Train ``pending`` runs in ``jobs`` worker processes; yield each RunResult as it finishes (saved already).

    ``callbacks`` receives ``run_started``, ``epoch_done`` and ``run_finished`` in the parent,
    in order per run. See the module docstring for interrupts and errors.
    """
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    counter = context.Value("i", 0)
    executor = ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(pending))),
        mp_context=context,
        initializer=_init_worker,
        initargs=(
            framework,
            config,
            dataset,
            str(out_root),
            device,
            threads,
            protocol_hash,
            events,
            counter,
            os.getpid(),
        ),
    )
    futures: dict[Future, tuple[str, int]] = {
        executor.submit(_train_one, spec, seed): (spec.canonical, seed) for spec, seed in pending
    }
    reported: set[tuple[str, int]] = set()
    failure: BaseException | None = None
    try:
        while True:
            finished = _drain(events, callbacks, reported)
            yield from finished
            running = [f for f in futures if not f.done()]
            if not running:
                break
            wait(running, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            for future in futures:
                if future.done() and not future.cancelled() and future.exception() is not None and failure is None:
                    failure = future.exception()
                    for other in futures:  # no new runs; the running ones finish and are saved
                        other.cancel()
        # a finished run's last events may still be on their way through the queue
        deadline = time.monotonic() + _LATE_EVENT_SECONDS
        for future, key in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                while key not in reported and time.monotonic() < deadline:
                    yield from _drain(events, callbacks, reported, block=True)
                if key not in reported:  # should not happen: the worker put the event before returning
                    result = RunResult.from_json(future.result())
                    reported.add(key)
                    callbacks.run_finished(result)
                    yield result
    except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), or the consumer stopped
        _end_workers(executor)
        raise
    else:
        executor.shutdown(wait=True)
    finally:
        events.close()
        events.join_thread()
    if failure is not None:
        if isinstance(failure, BrokenProcessPool):
            raise WorkerFailed(
                "a worker process died without reporting an error (killed, or out of memory?); "
                "the finished runs are saved: run the same command again to resume"
            ) from failure
        raise failure


def _drain(events: Any, callbacks: Any, reported: set, block: bool = False) -> list[RunResult]:
    finished: list[RunResult] = []
    while True:
        try:
            kind, key, payload = events.get(timeout=_POLL_SECONDS) if block else events.get_nowait()
        except queue.Empty:
            return finished
        block = False
        activation, seed = key
        if kind == "started":
            callbacks.run_started(activation, seed)
        elif kind == "epoch":
            callbacks.epoch_done(activation, seed, EpochRecord(**payload))
        else:
            result = RunResult.from_json(payload)
            reported.add(key)
            callbacks.run_finished(result)
            finished.append(result)
