"""Independent (activation, seed) runs as Ray tasks: ``spocu compare --executor ray``.

The same sweep as ``--jobs N`` (:mod:`spocu.experiments.run.parallel`), spread over a Ray cluster
(one machine or many; ``ray start --head`` / ``ray start --address=...``, KubeRay, ``ray up``):

- **One task per run.** Each (activation, seed) run is one Ray task that asks for the CPU
  threads it trains with (``num_cpus = threads``, 1 when the engine sizes its own pools) and,
  with ``--device cuda``, one GPU (``num_gpus=1``: Ray sets ``CUDA_VISIBLE_DEVICES``, so the
  task sees its GPU as ``cuda``). ``jobs`` caps how many run at once; by default every run is
  submitted and Ray starts as many as the cluster's free resources allow.
- **Where.** ``address`` (else ``RAY_ADDRESS``) joins a running cluster; without either a
  local Ray is started on this machine's cores and shut down at the end. A Ray already
  initialized in this process (``ray.init`` by the caller) is used as it is and left running.
- **The driver owns the output.** The dataset is put once in Ray's object store and shared by
  all tasks; workers need neither the data files nor the output directory. Each finished run
  comes back to the driver as a :class:`~spocu.experiments.run.engine.RunResult` record, and the
  driver saves it (atomically, ``runs/<activation>-seed<k>.json``) before yielding it.
- **Progress.** Tasks report to the driver through a small Ray actor; the driver feeds the
  same callbacks as the local executor: ``run_started``, ``epoch_done``, ``run_finished``
  (and ``run_failed`` where the callbacks define it).
- **Same numbers.** A task trains with the engine's own ``train_run``, the code path of a local
  run, with the same seed and thread count: the same run gives the same numbers under Ray.
- **Failures.** A task whose worker dies (killed, out of memory, node lost) is retried up to
  ``max_retries`` times; an exception raised by the training code is not retried (the same
  seed would raise again). Either way the run is reported as failed *by name* while the other
  runs go on and are saved; at the end :class:`RunsFailed` lists the failed runs.
  Ctrl-C / SIGTERM (``KeyboardInterrupt``) on the driver, or a consumer that stops iterating,
  cancels every outstanding task (``ray.cancel(force=True)``) and re-raises; finished runs are
  on disk, so killing the driver loses at most the runs in flight.
- **Resources are checked first.** If no live node could ever run one task (``--device cuda``
  where no node has a GPU, more threads than any node has CPUs), :class:`ResourcesUnavailable`
  is raised before anything is submitted, instead of a task that waits forever.

Example:
    >>> task_resources(device="cuda", threads=None)
    {'num_cpus': 1, 'num_gpus': 1}
    >>> task_resources(device="cpu", threads=4)
    {'num_cpus': 4, 'num_gpus': 0}
    >>> find_unfit_resources({"num_cpus": 1, "num_gpus": 1}, [{"CPU": 8.0}, {"CPU": 2.0}])
    'no node of the Ray cluster can run a task that needs 1 CPU and 1 GPU (nodes: 8 CPUs; 2 CPUs)'
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spocu.experiments.activations import ActivationSpec
from spocu.experiments.config import ExperimentConfig
from spocu.experiments.data.datasets import Dataset
from spocu.experiments.errors import ExperimentError
from spocu.experiments.run.engine import EpochRecord, RunResult, get_engine

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "RunFailure",
    "RunsFailed",
    "ResourcesUnavailable",
    "RayUnavailable",
    "ray_session",
    "live_node_resources",
    "check_cluster_fits",
    "describe_cluster",
    "cluster_device",
    "largest_node_cpus",
    "task_resources",
    "find_unfit_resources",
    "train_with_ray",
]

#: how often a task whose worker died is tried again before its run is reported as failed
DEFAULT_MAX_RETRIES = 2
_POLL_SECONDS = 0.2
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

#: trains one run in a task: ``(config, dataset, activation, seed, *, device, threads, on_epoch, protocol_hash) -> RunResult``
TrainFunction = Callable[..., RunResult]


@dataclass(frozen=True)
class RunFailure:
    """One run that did not finish: its name and why."""

    activation: str
    seed: int
    reason: str

    def __str__(self) -> str:
        return f"{self.activation} seed {self.seed}: {self.reason}"


class RunsFailed(ExperimentError, RuntimeError):
    """Some runs failed (listed in ``failures``); every other run finished and was saved."""

    def __init__(self, failures: list[RunFailure], finished: int, out_root: Path | None = None) -> None:
        import shlex

        self.failures = list(failures)
        self.finished = finished
        names = "; ".join(str(f) for f in self.failures)
        where = f" in {out_root}" if out_root is not None else ""
        again = f"with --out {shlex.quote(str(out_root))} " if out_root is not None else ""
        super().__init__(
            f"{len(self.failures)} run(s) failed: {names}. The {finished} other run(s) of this command finished and are saved{where}; "
            f"run the same command {again}again to retry the failed ones."
        )


class ResourcesUnavailable(ExperimentError, ValueError):
    """No node of the Ray cluster can run one training task."""


class RayUnavailable(ExperimentError, ConnectionError):
    """The Ray cluster at the given address cannot be joined."""


def task_resources(device: str, threads: int | None) -> dict[str, int]:
    """What one run's task asks Ray for: its CPU threads (1 if the engine picks its own) and a GPU on CUDA."""
    on_gpu = device.split(":")[0] in ("cuda", "gpu")
    return {"num_cpus": max(1, threads or 1), "num_gpus": 1 if on_gpu else 0}


def _describe_node(resources: dict[str, float]) -> str:
    text = f"{resources.get('CPU', 0):g} CPUs"
    return text + (f", {resources['GPU']:g} GPUs" if resources.get("GPU") else "")


def find_unfit_resources(needed: dict[str, int], nodes: list[dict[str, float]], *, live: bool = False) -> str | None:
    """Why no node in ``nodes`` (each its total resources) can run a task needing ``needed``; None if one can.

    ``live``: phrased for a cluster whose autoscaler may still add such a node.
    """
    if any(n.get("CPU", 0) >= needed["num_cpus"] and n.get("GPU", 0) >= needed["num_gpus"] for n in nodes):
        return None
    wants = f"{needed['num_cpus']} CPU" + ("s" if needed["num_cpus"] != 1 else "")
    if needed["num_gpus"]:
        wants += f" and {needed['num_gpus']} GPU"
    have = "; ".join(_describe_node(n) for n in nodes) or "none alive"
    if live:
        return f"no live node of the Ray cluster can run a task that needs {wants} yet (nodes: {have})"
    return f"no node of the Ray cluster can run a task that needs {wants} (nodes: {have})"


def check_cluster_fits(
    device: str, threads: int | None, nodes: list[dict[str, float]], autoscaling: bool = False
) -> str | None:
    """Raise :class:`ResourcesUnavailable` if no node in ``nodes`` can run one task on ``device`` with ``threads``.

    ``autoscaling``: the cluster adds nodes on demand (Ray's autoscaler; ``--ray-autoscaling``), so
    a task no live node fits waits for one: the problem is returned as a note instead.

    Example:
        >>> check_cluster_fits("cuda", None, [{"CPU": 8.0}], autoscaling=True)
        'no live node of the Ray cluster can run a task that needs 1 CPU and 1 GPU yet (nodes: 8 CPUs): the tasks wait for the autoscaler to add one'
    """
    resources = task_resources(device, threads)
    problem = find_unfit_resources(resources, nodes, live=autoscaling)
    if problem is None:
        return None
    if autoscaling:
        return f"{problem}: the tasks wait for the autoscaler to add one"
    hint = "use --device cpu" if resources["num_gpus"] else "use fewer --threads"
    raise ResourcesUnavailable(
        f"{problem}: {hint}, add such a node to the cluster, or pass --ray-autoscaling if the cluster's autoscaler adds it"
    )


def describe_cluster(nodes: list[dict[str, float]]) -> str:
    """``2 nodes, 24 CPUs, 1 GPU`` (totals over the live nodes).

    Example:
        >>> describe_cluster([{"CPU": 8.0}, {"CPU": 16.0, "GPU": 1.0}])
        '2 nodes, 24 CPUs, 1 GPU'
    """
    cpus = sum(node.get("CPU", 0) for node in nodes)
    gpus = sum(node.get("GPU", 0) for node in nodes)
    text = f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {cpus:g} CPU{'s' if cpus != 1 else ''}"
    return text + (f", {gpus:g} GPU{'s' if gpus != 1 else ''}" if gpus else "")


def live_node_resources() -> list[dict[str, float]]:
    """The total resources of each live node of the connected Ray cluster (``{"CPU": 8.0, "GPU": 1.0, ...}``)."""
    import ray

    return [dict(node["Resources"]) for node in ray.nodes() if node.get("Alive")]


def cluster_device(requested: str, nodes: list[dict[str, float]]) -> str:
    """The device of every task: ``cpu``, or ``cuda`` (each task its own GPU); ``auto``: ``cuda`` if a node has a GPU.

    The driver need not have the GPU itself. An index (``cuda:1``) is refused: Ray assigns the GPUs.

    Example:
        >>> cluster_device("auto", [{"CPU": 8.0}, {"CPU": 8.0, "GPU": 2.0}]), cluster_device("auto", [{"CPU": 8.0}])
        ('cuda', 'cpu')
    """
    name = requested.strip().lower()
    if name == "auto":
        return "cuda" if any(node.get("GPU", 0) > 0 for node in nodes) else "cpu"
    if name in ("cpu", "cuda", "gpu"):
        return "cpu" if name == "cpu" else "cuda"
    if name.startswith(("cuda:", "gpu:")):
        raise ValueError(f"--executor ray gives each run a GPU of its own: use --device cuda, not {requested}")
    raise ValueError(f"unsupported device {requested!r}; use cpu, cuda or auto")


def largest_node_cpus(nodes: list[dict[str, float]]) -> int:
    """The CPU count of the largest node (at least 1): the most threads one task can get."""
    return max([int(node.get("CPU", 0)) for node in nodes] + [1])


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block.

    A Ray already initialized in this process is used as it is. Otherwise ``address`` (else
    ``RAY_ADDRESS``) joins that running cluster, and without either a local Ray is started
    (``num_cpus``: default the CPUs this process may use); both are disconnected (the local one
    shut down) at the end.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    from spocu.experiments.run import reaper

    # a local Ray is ours to end: should this process die unannounced (kill -9), the watcher ends it
    watcher = reaper.watch(os.getpid()) if not address else None
    try:
        with _keep_sigterm_handler():
            _init(address, num_cpus, quiet)
    except BaseException:
        reaper.release(watcher)
        raise
    try:
        yield
    finally:
        with _keep_sigterm_handler():
            ray.shutdown()
        reaper.release(watcher)


@contextlib.contextmanager
def _keep_sigterm_handler() -> Iterator[None]:
    """Keep the caller's SIGTERM handler: ``ray.init`` replaces it with ``sys.exit`` and a C++ handler that aborts,
    so ``kill`` would end the driver without cancelling its tasks or saying how to resume."""
    import signal
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast if a ``host:port`` address does not answer: Ray itself retries an unreachable cluster for minutes.

    Other forms (``auto``, ``ray://...``, ``local``) are left to Ray.
    """
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise RayUnavailable(
            f"cannot join the Ray cluster at {address!r} (--ray-address or RAY_ADDRESS): {reason}; "
            "is `ray start --head` running there, and is the port open?"
        ) from None


def _init(address: str | None, num_cpus: int | None, quiet: dict) -> None:
    import ray

    if address:
        _probe(address)
        try:
            ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise RayUnavailable(
                f"cannot join the Ray cluster at {address!r} (--ray-address or RAY_ADDRESS): {first}"
            ) from None
    else:
        from spocu.experiments.run.parallel import usable_cpus

        # "local": a fresh Ray on this machine, never a cluster that happens to run here (use --ray-address auto for that)
        ray.init(address="local", num_cpus=num_cpus or usable_cpus(), include_dashboard=False, **quiet)


# ----------------------------------------------------------------------------- task side


class _ProgressBox:
    """Ray actor: tasks ``put`` their events, the driver ``drain``s them (one call, in order)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def put(self, event: tuple) -> None:
        self.events.append(event)

    def drain(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


def _writable(dataset: Dataset) -> Dataset:
    """The dataset with writable arrays (the object store hands out read-only views)."""
    copies: dict[str, Any] = {
        name: np.array(getattr(dataset, name)) for name in _ARRAYS if not getattr(dataset, name).flags.writeable
    }
    return dataclasses.replace(dataset, **copies) if copies else dataset


def _run_task(
    framework: str,
    config: ExperimentConfig,
    dataset: Dataset,
    activation: ActivationSpec,
    seed: int,
    device: str,
    threads: int | None,
    protocol_hash: str,
    progress: Any,
    train_function: TrainFunction | None,
) -> dict:
    """One run inside a Ray worker; returns its RunResult record (the driver saves it)."""
    import ray

    key = (activation.canonical, seed)
    # events are sent without waiting (a round trip per epoch would slow small runs); the actor runs
    # one caller's calls in order, so waiting for the last one below means all have arrived
    last = [progress.put.remote(("started", key, None))]
    # before the framework loads in this worker (a worker serves one driver, so one sweep's settings);
    # set here rather than as a runtime_env, which would start each worker through Ray's slower env agent
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    keras_backend = getattr(config, "keras_backend", None)
    if keras_backend:
        os.environ["KERAS_BACKEND"] = keras_backend
    if threads is not None:
        for name in _THREAD_VARIABLES:
            os.environ[name] = str(threads)
    engine = get_engine(framework)
    device = str(engine.resolve_device(device))  # in the worker: "cuda" is the GPU Ray gave this task

    def on_epoch(record: EpochRecord) -> None:
        last[0] = progress.put.remote(("epoch", key, asdict(record)))

    train = train_function or engine.train_run
    result = train(
        config,
        _writable(dataset),
        activation,
        seed,
        device=device,
        threads=threads,
        on_epoch=on_epoch,
        protocol_hash=protocol_hash,
    )
    ray.get(last[0])  # every event of this run is in the box before the driver sees the run finished
    return result.to_json()


# ----------------------------------------------------------------------------- driver side


def _failure_reason(error: BaseException) -> str:
    import ray.exceptions

    if isinstance(error, ray.exceptions.RayTaskError):  # the training code raised: report its error, not Ray's wrapper
        cause = getattr(error, "cause", None)
        if cause is not None:
            return f"{type(cause).__name__}: {cause}".strip().splitlines()[0]
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if isinstance(
        error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError)
    ):
        return f"its worker died and every retry failed too ({type(error).__name__}: {first})"
    return f"{type(error).__name__}: {first}"


class _Dispatch:
    """Feeds a run's progress events to the callbacks: each run started once, epochs never repeated after a retry."""

    def __init__(self, callbacks: Any) -> None:
        self.callbacks = callbacks
        self.started: set[tuple[str, int]] = set()
        self.last_epoch: dict[tuple[str, int], int] = {}

    def __call__(self, events: list[tuple]) -> None:
        for kind, key, payload in events:
            key = tuple(key)
            if kind == "started":
                if key not in self.started:  # a retried task starts again: same run for the display
                    self.started.add(key)
                    self.callbacks.run_started(*key)
            elif kind == "epoch":
                record = EpochRecord(**payload)
                if record.epoch > self.last_epoch.get(key, 0):
                    self.last_epoch[key] = record.epoch
                    self.callbacks.epoch_done(*key, record)


def train_with_ray(
    pending: list[tuple[ActivationSpec, int]],
    *,
    config: ExperimentConfig,
    dataset: Dataset,
    out_root: Path,
    framework: str,
    device: str,
    threads: int | None,
    callbacks: Any,
    protocol_hash: str,
    jobs: int | None = None,
    address: str | None = None,
    autoscaling: bool = False,
    max_retries: int = DEFAULT_MAX_RETRIES,
    train_function: TrainFunction | None = None,
) -> Generator[RunResult, None, None]:
    """Train ``pending`` runs as Ray tasks; yield each RunResult as it finishes (saved already by the driver).

    ``device``: ``cpu``, ``cuda`` (each task gets a GPU of its own; no index) or ``auto``
    (:func:`cluster_device`). ``threads``: CPU
    threads per run (None: the engine decides; the task then reserves 1 CPU). ``jobs``: at most
    this many tasks at once (None: as many as the cluster's free resources allow). ``address``:
    see :func:`ray_session`. ``autoscaling``: the cluster adds nodes on demand, so tasks that no live
    node fits wait for one (see :func:`check_cluster_fits`). ``train_function``: trains one run in the task, default the
    engine's ``train_run`` (the local code path; a hook for tests and custom engines -- it must
    be importable or picklable by value on the workers).

    Raises :class:`ResourcesUnavailable` before submitting anything if no node fits one task,
    and :class:`RunsFailed` after every other run finished if some runs failed. See the module
    docstring for interrupts.
    """
    import ray

    from spocu.experiments.run.store import OutputDir

    device = cluster_device(device, []) if device != "auto" else device  # refuses cuda:N before connecting
    if jobs is not None and jobs < 1:
        raise ValueError(f"jobs must be >= 1 or None, got {jobs}")
    if not pending:
        return
    out = OutputDir(Path(out_root))
    with ray_session(address):
        nodes = live_node_resources()
        device = cluster_device(device, nodes)
        check_cluster_fits(device, threads, nodes, autoscaling)  # (with autoscaling the caller says why tasks wait)
        resources = task_resources(device, threads)
        task = ray.remote(_run_task)
        task_options = {**resources, "max_retries": max_retries, "retry_exceptions": False}
        # an actor handle (Ray's hints make it a union with the class)
        progress: Any = ray.remote(_ProgressBox).options(num_cpus=0).remote()
        dispatch = _Dispatch(callbacks)
        dataset_ref = ray.put(dataset)  # once; every task reads the same copy from the object store
        waiting = list(pending)
        running: dict[Any, tuple[ActivationSpec, int]] = {}
        failures: list[RunFailure] = []
        finished = 0
        limit = jobs or len(pending)
        try:
            while waiting or running:
                while waiting and len(running) < limit:
                    spec, seed = waiting.pop(0)
                    ref = task.options(**task_options, name=f"spocu {spec.canonical} seed {seed}").remote(
                        framework,
                        config,
                        dataset_ref,
                        spec,
                        seed,
                        device,
                        threads,
                        protocol_hash,
                        progress,
                        train_function,
                    )
                    running[ref] = (spec, seed)
                ready, _ = ray.wait(list(running), num_returns=len(running), timeout=_POLL_SECONDS)
                dispatch(ray.get(progress.drain.remote()))  # after wait: a ready run's epochs are all in the box
                for ref in ready:
                    spec, seed = running.pop(ref)
                    try:
                        result = RunResult.from_json(ray.get(ref))
                    except ray.exceptions.RayError as error:
                        failure = RunFailure(spec.canonical, seed, _failure_reason(error))
                        failures.append(failure)
                        run_failed = getattr(callbacks, "run_failed", None)
                        if run_failed is not None:
                            run_failed(failure)
                        continue
                    out.save_run(spec, result)
                    finished += 1
                    callbacks.run_finished(result)
                    yield result
        except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt), an error, or the consumer stopped
            _cancel(running)
            raise
        finally:
            with contextlib.suppress(Exception):
                ray.kill(progress)
        if failures:
            raise RunsFailed(failures, finished, out.root)


def _cancel(running: dict) -> None:
    """Cancel the outstanding tasks (running ones are killed) and wait briefly for Ray to confirm."""
    import ray

    for ref in running:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
    deadline = time.monotonic() + 10.0
    remaining = list(running)
    while remaining and time.monotonic() < deadline:
        try:
            _, remaining = ray.wait(remaining, num_returns=len(remaining), timeout=_POLL_SECONDS)
        except Exception:  # Ray itself is going away (Ctrl-C reached it too): nothing left to wait for
            break
