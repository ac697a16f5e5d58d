"""The whole ``spocu compare`` run as one function: options in, :class:`CompareOutcome` out.

:func:`compare` validates the options, resolves the experiment (:mod:`~spocu.experiments.config`),
picks the engine and device, loads and checks the data, claims the output directory
(:mod:`~spocu.experiments.run.store`: ours or refused), trains the missing runs
(:mod:`~spocu.experiments.run.runner`), and writes ``results.json``, ``epochs.csv`` (:mod:`~spocu.experiments.results.summary`)
and the report (:mod:`~spocu.experiments.results.report`). Everything the user can fix is raised as an
:class:`~spocu.experiments.errors.ExperimentError` with a one-line message, before the output
directory is touched wherever it can be known then. An interrupt raises :class:`Interrupted`,
which says where the finished runs are and how to resume. :func:`estimate` times a few steps
instead of training.

``commands/compare.py`` only parses the command line into :class:`CompareOptions` and renders.

Examples:
    >>> options = CompareOptions(config={"dataset": "wdbc"}, jobs=0)
    >>> check_options(options)
    Traceback (most recent call last):
    ...
    spocu.experiments.errors.OptionError: --jobs must be >= 1, got 0
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import math
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spocu.experiments.config import ExperimentConfig, check_data_dir, resolve_config
from spocu.experiments.errors import ExperimentError, OptionError, OutputBusy
from spocu.experiments.models.factories import UserModelError
from spocu.experiments.run.executors import DEFAULT_EXECUTOR, EXECUTORS
from spocu.experiments.run.parallel import WorkerFailed
from spocu.experiments.run.runner import Callbacks, run_experiment
from spocu.experiments.run.store import OutputDir

__all__ = ["CompareOptions", "CompareOutcome", "Interrupted", "compare", "check_options", "estimate", "memory_estimate"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class CompareOptions:
    """What ``spocu compare`` was asked to do.

    ``config``: the experiment's options for :func:`~spocu.experiments.config.resolve_config`
    (None = not given). The rest says where and how to run it. ``jobs``: runs at once
    (None: 1 with the local executor; with Ray, as many as the cluster's free resources allow).
    ``ray_address``: the Ray cluster to join with ``executor="ray"`` (None: ``RAY_ADDRESS``, else a
    local Ray started for this compare). ``ray_autoscaling``: that cluster adds nodes on demand,
    so runs that no live node can take wait for the autoscaler instead of being refused.
    ``rope``: the verdict's region of practical equivalence, ± accuracy points (None: 0.5); analysis only,
    not part of the protocol, so a resume may change it.
    """

    config: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    threads: int | None = None
    jobs: int | None = None
    executor: str = DEFAULT_EXECUTOR
    ray_address: str | None = None
    ray_autoscaling: bool = False
    data_dir: str | Path | None = None
    download: bool = True
    progress: bool = True
    out: str | Path | None = None
    skip_bad_runs: bool = False
    #: keep a feature that equals the label or maps one-to-one onto it (user tables and arrays)
    allow_leak: bool = False
    #: the options as a TOML document (``spocu compare --config`` reads it), recorded as ``OUT/config.toml``
    options_toml: str | None = None
    rope: float | None = None
    track: tuple[str, ...] = ()  # "mlflow", "tensorboard": log the finished comparison there (results/tracking.py)


@dataclass
class CompareOutcome:
    """What a finished compare produced (on rank 0; other torchrun ranks get None)."""

    config: ExperimentConfig
    out: Path
    results: dict
    report: Path
    skipped: list[dict[str, str]]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a compare; ``str()`` says what was kept and how to resume."""

    def __init__(self, out: Path, saved: bool) -> None:
        kept = f"the finished runs are saved in {out}" if saved else "nothing was trained"
        super().__init__(
            f"interrupted: {kept}.\nResume with the same command and --out {shlex.quote(str(out))}: finished runs are skipped."
        )
        self.out, self.saved = out, saved


def _say_nothing(text: str) -> None:
    pass


# ----------------------------------------------------------------------------- checks


def check_options(options: CompareOptions) -> None:
    """The checks that need neither the data nor a framework; raises OptionError."""
    if options.rope is not None and not (
        isinstance(options.rope, (int, float)) and math.isfinite(options.rope) and 0 <= options.rope < 100
    ):
        raise OptionError(f"--rope must be a number of accuracy points in [0, 100), got {options.rope}")
    if options.jobs is not None and options.jobs < 1:
        raise OptionError(f"--jobs must be >= 1, got {options.jobs}")
    if options.threads is not None and options.threads < 1:
        raise OptionError(f"--threads must be >= 1, got {options.threads}")
    if options.executor not in EXECUTORS:
        raise OptionError(f"unknown executor {options.executor!r}; choose one of {', '.join(EXECUTORS)}")
    if options.ray_address is not None and options.executor != "ray":
        raise OptionError(f"--ray-address applies to --executor ray, not --executor {options.executor}")
    if options.ray_autoscaling and options.executor != "ray":
        raise OptionError(f"--ray-autoscaling applies to --executor ray, not --executor {options.executor}")
    if (
        options.ray_address is not None and not options.ray_address.strip()
    ):  # not a silent local Ray instead of the cluster
        raise OptionError(
            "--ray-address is empty; give the cluster's HOST:PORT (or 'auto'), or leave it out for a local Ray"
        )
    if options.track:
        from spocu.experiments.results.tracking import check_trackers

        check_trackers(tuple(options.track))
    if options.out is not None and not str(options.out).strip():
        raise OptionError(
            "--out is empty; give a directory name (a new or empty directory, or an earlier spocu compare output)"
        )


def _resolve(options: CompareOptions) -> ExperimentConfig:
    """The experiment spec, built and checked once: its options, and --data-dir against its dataset."""
    try:
        config = resolve_config(options.config)
        check_data_dir(config, options.data_dir)
    except ValueError as error:
        raise OptionError(str(error)) from None
    return config


def memory_estimate(
    config: ExperimentConfig, input_shape: tuple[int, ...], num_classes: int, n_train: int | None = None
) -> int:
    """Bytes one run needs at least: parameters x 4 (weights, gradients, two optimizer moments) plus
    the activations of a batch x 3 (outputs, pre-activations, gradients), float32. A batch holds
    at most the ``n_train`` training samples.

    Examples:
        >>> from spocu.experiments.config import resolve_config
        >>> memory_estimate(resolve_config({"hidden": (100_000_000,)}), (30,), 2) > 10**10
        True
    """
    batch = config.batch_size if n_train is None else min(config.batch_size, n_train)
    if config.model.name in ("seed-cnn", "resnet20") and len(input_shape) == 3:
        return _cnn_memory(config.model.name, input_shape, num_classes, batch)
    if config.model.name not in ("mlp", "deep-mlp"):
        return 0  # a factory's size is its author's to know
    widths = [math.prod(input_shape), *config.model.hidden, num_classes]
    parameters = sum(a * b + b for a, b in zip(widths, widths[1:]))
    activations = batch * sum(widths[1:])
    return 4 * (4 * parameters + 3 * activations)


def _cnn_memory(name: str, input_shape: tuple[int, ...], num_classes: int, batch: int) -> int:
    """:func:`memory_estimate` for the built-in CNNs: their feature maps grow with the image's area.

    seed-cnn: two valid 3x3 convolutions (32, 64 channels), each map kept as output, activation
    and gradient, a pool after each; resnet20: 19 convolutions (16, 32, 64 channels at full, half,
    quarter size), each with a batch norm and an activation, x 3 as well; parameters x 4.
    """
    channels, height, width = input_shape
    if name == "seed-cnn":
        maps, parameters = 0, 0
        for out in (32, 64):
            height, width = max(height - 2, 0), max(width - 2, 0)
            maps += 2 * out * height * width  # the convolution's output and its activation
            parameters += out * (channels * 9 + 1)
            channels = out
            if height >= 2 and width >= 2:
                height, width = height // 2, width // 2
                maps += out * height * width
        parameters += channels * height * width * num_classes + num_classes
    else:
        area = height * width
        maps = 3 * (7 * 16 * area + 6 * 32 * area // 4 + 6 * 64 * area // 16)  # convolution, batch norm, activation
        parameters = 270_000 + 64 * num_classes
    return 4 * (4 * parameters + 3 * batch * maps // 2)


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _check_size(
    config: ExperimentConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    jobs: int,
    say: Say,
    n_train: int | None = None,
) -> None:
    jobs = max(1, min(jobs, len(config.activations) * len(config.seeds)))  # never more workers than runs
    need = memory_estimate(config, input_shape, num_classes, n_train) * jobs
    have = _physical_memory()
    if have is None or need == 0:
        return
    what = f"{config.model.label}, batch {config.batch_size}" + (f", {jobs} runs at a time" if jobs > 1 else "")
    if need > have:
        raise OptionError(
            f"{what} needs at least {_gib(need)} of memory (parameters, gradients, optimizer state and one batch's activations), "
            f"more than this machine's {_gib(have)}: use smaller --hidden/--width or --batch-size"
        )
    if need > have / 2:
        say(f"warning: {what} needs at least {_gib(need)} of this machine's {_gib(have)} memory")


def _check_torch_backend() -> None:
    from spocu.torch._dispatch import ENV_VAR, requested_backend

    try:
        requested_backend()
    except ValueError as error:
        raise OptionError(f"{error} (unset {ENV_VAR} for the default)") from None


def _select_keras_backend(requested: str | None) -> None:
    """Set KERAS_BACKEND before Keras is imported; refuse if Keras already runs on another backend."""
    import sys

    # TensorFlow's C++ log lines (oneDNN notes, CUDA factory registrations, absl's pre-init warning) on a normal
    # run bury the progress bar and read as errors; its real failures raise Python exceptions. Set it to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if requested is None:
        return
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != requested:
            raise OptionError(
                f"--keras-backend {requested}: Keras is already imported in this process with the {current} backend; "
                f"run spocu compare in a fresh process (or set KERAS_BACKEND={requested} before Python starts)"
            )
    os.environ["KERAS_BACKEND"] = requested


def _engine_for(config: ExperimentConfig):
    from spocu.experiments.run.engine import get_engine

    try:
        if config.framework == "keras":
            _select_keras_backend(config.keras_backend)  # before Keras is imported
        else:
            _check_torch_backend()
        engine = get_engine(config.framework)
    except ImportError as error:
        raise OptionError(
            f"--framework {config.framework} cannot import {error.name or error}; "
            'Keras 3 with TensorFlow: pip install "spocu[tensorflow]" (or "spocu[keras]" with jax or torch)'
        ) from None
    except ValueError as error:
        raise OptionError(str(error)) from None
    if config.framework == "keras":
        keras_engine: Any = engine  # the Keras engine also names its backend
        backend: str = keras_engine.backend()
        config = dataclasses.replace(config, keras_backend=backend)
        os.environ["KERAS_BACKEND"] = backend  # --jobs workers start Keras on the same backend
    try:
        getattr(engine, "check_config", lambda config: None)(config)
    except ValueError as error:
        raise OptionError(str(error)) from None
    return engine, config


def _device(engine, requested: str):
    try:
        return engine.resolve_device(requested)
    except ValueError as error:
        message = _one_line(error)
        raise OptionError(message if message.startswith("--device") else f"--device {requested}: {message}") from None
    except RuntimeError:  # torch.device("tpu"): PyTorch lists every device type it has ever heard of
        raise OptionError(
            f"--device {requested}: not a device this engine can use; choose cpu, cuda, cuda:N or auto"
        ) from None


def _check_out_outside_data(config: ExperimentConfig, root: Path, *, explicit: bool) -> None:
    """Refuse an output directory inside an image-folder dataset: its figures (PNG) would join the data as a class."""
    if not config.user_data or not Path(config.dataset).expanduser().is_dir():
        return
    data = Path(config.dataset).expanduser().resolve()
    where = root.expanduser().resolve()
    if where == data or data in where.parents:
        option = f"--out {root}" if explicit else f"the default output directory {root}"
        raise OptionError(
            f"{option} is inside the image folder --dataset {config.dataset}: its figures would be read as images of a class "
            "on the next run; choose an --out outside it"
        )


def _one_line(text: object) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _load_dataset(config: ExperimentConfig, options: CompareOptions, *, progress: bool, download: bool):
    from spocu.experiments.data.datasets import DatasetError
    from spocu.experiments.run.inputs import load_data

    try:
        return load_data(
            config, data_dir=options.data_dir, download=download, progress=progress, allow_leak=options.allow_leak
        )
    except (DatasetError, ValueError) as error:
        raise ExperimentError(_one_line(error)) from None


def _load_dataset_distributed(config: ExperimentConfig, options: CompareOptions, dist):
    """Every process loads the data, local rank 0 of each node first (it alone downloads).

    The processes then compare data fingerprints, so nodes holding different files are caught.
    """
    dataset, problem = None, None
    for turn in ("first", "others"):
        if (dist.local_rank == 0) == (turn == "first"):
            try:
                dataset = _load_dataset(
                    config,
                    options,
                    progress=dist.is_main and options.progress,
                    download=turn == "first" and options.download,
                )
            except ExperimentError as error:
                problem = f"rank {dist.rank}: {error}"
        if not dist.all_agree(problem is None):
            raise ExperimentError(problem or "another process could not load the data (see its message)")
    assert dataset is not None  # every process loaded it (all_agree above)
    fingerprints = dist.all_gather_ints([int(dataset.fingerprint()[:15], 16)])
    if len(set(fingerprints)) > 1:
        raise ExperimentError(
            "the processes loaded different data (data fingerprints differ between ranks): give every node the same dataset files (--data-dir)"
        )
    return dataset


def _finalize(config: ExperimentConfig, dataset, out: OutputDir) -> ExperimentConfig:
    """The data and model hashes into the protocol, the model checked on the data, a changed resume refused."""
    from spocu.experiments.run.inputs import check_resume, finalize

    try:
        config = finalize(config, dataset)
        check_resume(config, out.root)
    except ValueError as error:  # UserModelError, ResumeRefused, a model that cannot take the data
        raise ExperimentError(_one_line(error)) from None
    return config


def _write_failure(error: OSError, out: OutputDir) -> ExperimentError:
    """A one-line message for an OSError while writing ``out``; a full disk says how to resume."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno == errno.ENOSPC:
        return ExperimentError(
            f"the disk is full{where}: the finished runs in {out.root} are intact; free some space and run the same command "
            f"with --out {shlex.quote(str(out.root))} to resume"
        )
    return ExperimentError(
        f"cannot write the output{where}: {error.strerror or error}; the finished runs in {out.root} are intact: "
        f"fix this and run the same command with --out {shlex.quote(str(out.root))} to resume"
    )


# ----------------------------------------------------------------------------- the run


def compare(
    options: CompareOptions, *, callbacks: Callbacks | None = None, say: Say = _say_nothing
) -> CompareOutcome | None:
    """Run the comparison ``options`` describes; see the module docstring.

    ``callbacks`` receive the progress (:class:`~spocu.experiments.run.runner.Callbacks`); ``say``
    receives one-line notes (what is compared, where the output goes, warnings). Under
    ``torchrun`` every process calls this; rank 0 returns the outcome, the others None.

    Raises:
        ExperimentError: anything the user can fix (one-line message).
        Interrupted: Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the caller).
    """
    from spocu.experiments.run.distributed import from_environment

    check_options(options)
    config = _resolve(options)
    try:
        dist = from_environment()
    except ValueError as error:
        raise OptionError(str(error)) from None
    if dist is not None:
        if config.framework != "torch":
            raise OptionError(f"torchrun data-parallel training is for --framework torch, not {config.framework}")
        if options.jobs not in (None, 1):
            raise OptionError(
                "--jobs and torchrun do not combine: under torchrun all processes train each run together"
            )
        if config.tune is not None:
            raise OptionError("--tune and torchrun do not combine: tune without torchrun (or pass the chosen --lr)")
        if options.executor != DEFAULT_EXECUTOR:
            raise OptionError(
                f"--executor {options.executor} and torchrun do not combine: under torchrun all processes train each run together; "
                f"to spread many runs, run spocu compare --executor {options.executor} without torchrun"
            )
    main = dist is None or dist.is_main
    say = say if main else _say_nothing
    on_ray = options.executor == "ray"
    if on_ray:
        _check_ray_installed()
    engine, config = _engine_for(config)
    if dist is not None:
        from spocu.experiments.run.distributed import initialize, per_process_batch

        try:
            per_process_batch(config.batch_size, dist.world_size)  # every process checks before joining the group
            dist = initialize(dist, options.device)
        except (ValueError, RuntimeError) as error:
            raise OptionError(str(error)) from None
        device = _device(engine, dist.device)
    elif on_ray:
        device = None  # the cluster's: known once connected (the driver itself may have no GPU)
    else:
        device = _device(engine, options.device)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    # a path would nest directories; resolved, so that "--dataset ." is named after its folder
    name = (Path(config.dataset).expanduser().resolve().stem or "data") if config.user_data else config.dataset
    # the process id: two runs started in the same second get their own directories (rank 0's under torchrun)
    default = Path("spocu-runs") / f"{name}-{stamp}-{os.getpid()}"
    if options.out is None and dist is not None:
        default = Path(dist.broadcast(str(default)))
    out = OutputDir(Path(options.out) if options.out is not None else default)
    _check_out_outside_data(config, out.root, explicit=options.out is not None)
    success = False
    stack = contextlib.ExitStack()
    try:
        problem = None
        if main:  # refuse a directory that is not ours before loading (or downloading) anything
            try:
                out.inspect()
            except ExperimentError as error:
                if dist is None:
                    raise
                problem = str(error)
        if dist is not None:  # rank 0 alone looks at the output directory: the others learn its verdict
            problem = dist.broadcast(problem)
            if problem is not None:
                raise ExperimentError(problem)
        nodes: list[dict[str, float]] = []
        if on_ray:  # connect first: a cluster that cannot run the tasks is refused before the data loads
            from spocu.experiments.run.ray_executor import cluster_device, live_node_resources, ray_session

            stack.enter_context(ray_session(options.ray_address))
            nodes = live_node_resources()
            try:
                device = cluster_device(options.device, nodes)
            except ValueError as error:
                raise OptionError(str(error)) from None
            if device == "cuda" or options.ray_autoscaling:  # the checks that need no data: before loading it
                from spocu.experiments.run.ray_executor import check_cluster_fits

                note = check_cluster_fits(device, options.threads, nodes, options.ray_autoscaling)
                if note is not None:
                    say(f"note: {note}")
        if dist is None:
            dataset = _load_dataset(config, options, progress=options.progress, download=options.download)
        else:
            dataset = _load_dataset_distributed(config, options, dist)
        try:
            config.model.check_input(dataset.input_shape, dataset.name)
        except ValueError as error:
            raise OptionError(str(error)) from None
        local_jobs = options.jobs or 1  # runs at a time on this machine (without Ray)
        jobs = options.jobs if on_ray else local_jobs
        _check_size(
            config, dataset.input_shape, dataset.num_classes, 1 if on_ray else local_jobs, say, len(dataset.y_train)
        )
        config = _finalize(config, dataset, out)  # builds the model once: after the size check
        if on_ray:
            from spocu.experiments.run.ray_executor import check_cluster_fits, describe_cluster, largest_node_cpus

            threads = options.threads
            if threads is None and device == "cpu":  # as a local run would, but never more than the largest node has
                threads = engine.choose_threads(
                    config, dataset.input_shape, dataset.num_classes, engine.resolve_device("cpu")
                )
                threads = threads and min(threads, largest_node_cpus(nodes))
            check_cluster_fits(device, threads, nodes)
        else:
            threads = options.threads or engine.choose_threads(config, dataset.input_shape, dataset.num_classes, device)
        if not on_ray and local_jobs > 1 and not options.threads and str(device) == "cpu":
            from spocu.experiments.run.parallel import threads_per_worker, usable_cpus

            threads = threads_per_worker(local_jobs, usable_cpus(), threads)
        size = dataset.describe()
        scale = ""
        if on_ray:
            each = f"{threads or 1} CPU(s)" + (" and 1 GPU" if device == "cuda" else "")
            at_once = f"at most {jobs} at a time" if jobs else "as many at a time as fit"
            scale = f" | Ray ({describe_cluster(nodes)}): one task per run, {each} each, {at_once}"
        elif local_jobs > 1:
            scale = f" | {local_jobs} runs at a time" + (f", {threads} thread(s) each" if threads else "")
        elif dist is not None:
            scale = f" | torchrun: {dist.world_size} processes ({dist.backend}), batch {config.batch_size // dist.world_size} per process"
        elif threads:
            scale = f", {threads} thread(s)"
        say(
            f"{config.dataset}: train {size['train']:,}, val {size['val']:,}, test {size['test']:,} | {config.model.label} | "
            f"{', '.join(a.canonical for a in config.activations)} x {len(config.seeds)} seeds | {config.epochs} epochs, batch {config.batch_size}, "
            f"{config.optimizer} lr {config.lr:g} | {device}{scale}"
        )
        say(f"output: {out.root}")
        try:
            outcome = _train_and_report(
                config, options, out, dataset, engine, device, threads, dist, callbacks, jobs, nodes
            )
        except KeyboardInterrupt:
            raise Interrupted(out.root, out.runs.is_dir() and any(out.runs.glob("*.json"))) from None
        except UserModelError as error:  # e.g. the model file edited while the sweep runs
            raise ExperimentError(
                f"{_one_line(error)}; the finished runs in {out.root} are kept: restore the file and run the same command "
                f"with --out {shlex.quote(str(out.root))} to resume, or start a new --out"
            ) from None
        except OSError as error:
            raise _write_failure(error, out) from None
        except WorkerFailed as error:  # a --jobs worker killed (OOM killer, kill -9): one line, not a chained traceback
            raise ExperimentError(f"{_one_line(error)} (--out {shlex.quote(str(out.root))})") from None
        success = True
        if outcome is not None and options.track:  # after every file is written: tracking cannot change them
            from spocu.experiments.results.tracking import track_comparison

            track_comparison(tuple(options.track), outcome, say)
        return outcome
    finally:
        stack.close()  # a local Ray started for this compare is shut down
        if dist is not None:
            dist.finish(success)


def _check_ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise OptionError('--executor ray needs Ray: pip install "spocu[ray]"') from None


def _train_and_report(
    config, options, out, dataset, engine, device, threads, dist, callbacks, jobs, nodes
) -> CompareOutcome | None:
    from spocu.experiments.environment import environment
    from spocu.experiments.results.report import write_report
    from spocu.experiments.results.summary import assemble_results, write_results

    main = dist is None or dist.is_main
    problem = None
    if main:
        try:
            out.claim()
        except ExperimentError as error:
            problem = error
    if dist is not None:  # rank 0 alone writes: the others learn whether it could
        message = dist.broadcast(None if problem is None else str(problem))
        if message is not None:
            raise ExperimentError(message)
    elif problem is not None:
        raise problem
    with contextlib.ExitStack() as stack:
        busy = None
        if main:
            try:
                stack.enter_context(out.lock())
            except ExperimentError as error:
                busy = str(error)
        if dist is not None:
            busy = dist.broadcast(busy)
        if busy is not None:
            raise OutputBusy(busy)
        if main and options.options_toml is not None:  # under the lock: a busy directory keeps its own
            out.record_options(options.options_toml)
        tuning = None
        if config.tune is not None:
            config, tuning = _tune(config, options, out, dataset, engine, device, threads, callbacks, jobs)
        experiment = run_experiment(
            config,
            out,
            dataset,
            engine,
            device=str(device),
            threads=threads,
            callbacks=callbacks,
            jobs=jobs,
            executor=options.executor,
            executor_options=(
                {"address": options.ray_address, "autoscaling": options.ray_autoscaling}
                if options.executor == "ray"
                else None
            ),
            dist=dist,
            skip_bad_runs=options.skip_bad_runs,
        )
    if not main:
        return None
    runs = experiment.runs
    info = environment(
        runs[0].device if runs else str(device), extra_packages=("keras",) if config.framework == "keras" else ()
    )
    if (
        config.framework == "keras"
    ):  # the backend's import version (its distribution may be tensorflow-cpu, jax[cuda], ...)
        info["versions"][engine.backend()] = engine.backend_version()
    if dist is not None:
        info["distributed"] = {**dist.describe(), "per_process_batch": config.batch_size // dist.world_size}
    if options.executor == "ray":
        from spocu.experiments.run.ray_executor import describe_cluster

        info["parallel"] = {
            "executor": "ray",
            "jobs": jobs,
            "threads_per_job": threads,
            "cluster": describe_cluster(nodes),
        }
    elif jobs > 1:
        info["parallel"] = {"jobs": jobs, "threads_per_job": threads}
    results = assemble_results(config, dataset, runs, info, experiment.skipped, rope=options.rope)
    if tuning is not None:
        results["tuning"] = tuning
    sources = {spec.canonical: {"source_sha256": spec.source_sha256} for spec in config.activations if spec.is_user}
    if sources:  # the user's activations: which code made the runs
        results["activation_sources"] = sources
    write_results(out.root, results, runs)
    report = write_report(out.root, results, config.activations)
    return CompareOutcome(config, out.root, results, report, experiment.skipped)


def _tune(config, options, out, dataset, engine, device, threads, callbacks, jobs):
    """``--tune lr``: the tuning runs (:mod:`~spocu.experiments.run.tuning`), then the config with the chosen rates."""
    from spocu.experiments.run.runner import SilentCallbacks
    from spocu.experiments.run.tuning import TuningCallbacks, tune_learning_rates

    out.prepare(config)  # a directory of another experiment is refused before any tuning run trains

    def train(sub_config, sub_out, data, lr):
        return run_experiment(
            sub_config,
            sub_out,
            data,
            engine,
            device=str(device),
            threads=threads,
            callbacks=TuningCallbacks(callbacks or SilentCallbacks(), lr),
            jobs=jobs,
            executor=options.executor,
            executor_options=(
                {"address": options.ray_address, "autoscaling": options.ray_autoscaling}
                if options.executor == "ray"
                else None
            ),
            skip_bad_runs=options.skip_bad_runs,
        ).runs

    return tune_learning_rates(config, out, dataset, train)


# ----------------------------------------------------------------------------- --estimate


#: (input shape, classes, official training samples, official test samples or None) per dataset
_SHAPES = {
    "wdbc": ((30,), 2, 569, None),
    "digits": ((1, 8, 8), 10, 1797, None),
    "mnist": ((1, 28, 28), 10, 60000, 10000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
}


def estimate(options: CompareOptions) -> dict:
    """Time a few training steps per activation on synthetic data and extrapolate; train nothing.

    Returns ``{"title", "rows": [(activation, s/step, s/epoch, min/run, runs, min total)], "where", "steps", "total_hours"}``.
    """
    check_options(options)
    config = _resolve(options)
    if _under_torchrun():
        raise OptionError("run --estimate without torchrun")
    if config.framework != "torch":
        raise OptionError("--estimate times the PyTorch engine; run it without --framework keras")
    from spocu.experiments.data.datasets import DEFAULT_TEST_SIZE, DEFAULT_VAL_SIZE
    from spocu.experiments.run import torch_engine as engine_torch

    _check_torch_backend()
    n_test: int | None
    if config.user_data:  # its shapes and sizes are in the file: read it (nothing is written)
        dataset = _load_dataset(config, options, progress=False, download=False)
        input_shape, classes = dataset.input_shape, dataset.num_classes
        n_train, n_val, n_test = len(dataset.y_train), len(dataset.y_val), len(dataset.y_test)
    else:
        input_shape, classes, n_train_full, n_test = _SHAPES[config.dataset]
    try:
        config.model.check_input(input_shape, config.dataset)
        from spocu.experiments.config import with_model_source

        config, _ = with_model_source(config)  # a factory that does not import is named now, not mid-timing
    except ValueError as error:
        raise OptionError(_one_line(error)) from None
    _check_size(config, input_shape, classes, options.jobs or 1, _say_nothing)
    if not config.user_data:
        if n_test is None:
            test = config.test_size or DEFAULT_TEST_SIZE
            n_test = int(test if test >= 1 else round(n_train_full * test))
            n_train_full -= n_test
        val = config.val_size or DEFAULT_VAL_SIZE[config.dataset]
        n_val = int(val if val >= 1 else round(n_train_full * val))
        n_train = n_train_full - n_val
    assert n_test is not None  # read from the file, or set above
    device = _device(engine_torch, options.device)
    steps = -(-n_train // config.batch_size)
    rows, total = [], 0.0
    try:  # both build the model: a factory whose model does not take this data fails here, naming itself
        threads = options.threads or engine_torch.choose_threads(config, input_shape, classes, device)
        timings = [
            engine_torch.time_steps(config, input_shape, classes, spec, device=device, threads=threads)
            for spec in config.activations
        ]
    except ValueError as error:
        raise ExperimentError(_one_line(error)) from None
    for spec, timing in zip(config.activations, timings):
        epoch = steps * timing["step_seconds"] + n_val * timing["eval_seconds_per_sample"]
        run = config.epochs * epoch + n_test * timing["eval_seconds_per_sample"]
        # --tune lr: every rate of the grid on the tuning seeds first, each a full run without the test pass
        tuning_runs = len(config.tune_grid()) * len(config.tune_seeds()) if config.tune else 0
        cost = run * len(config.seeds) + config.epochs * epoch * tuning_runs
        total += cost
        runs = f"{len(config.seeds)} + {tuning_runs} tuning" if tuning_runs else str(len(config.seeds))
        rows.append(
            (
                spec.canonical,
                f"{timing['step_seconds']:.4f}",
                f"{epoch:.1f}",
                f"{run / 60:.1f}",
                runs,
                f"{cost / 60:.1f}",
            )
        )
    tuned = (
        f", --tune lr: {len(config.tune_grid())} rates x {len(config.tune_seeds())} seeds per activation first"
        if config.tune
        else ""
    )
    return {
        "title": f"estimated cost: {config.dataset}, {config.model.label}, {config.epochs} epochs, batch {config.batch_size}{tuned} (synthetic data)",
        "columns": ("activation", "s/step", "s/epoch", "min/run", "runs", "min total"),
        "rows": rows,
        "where": f"{device}" + (f", {threads} thread(s)" if threads else ""),
        "steps": steps,
        "total_hours": total / 3600,
    }


def _under_torchrun() -> bool:
    from spocu.experiments.run.distributed import from_environment

    try:
        return from_environment() is not None
    except ValueError as error:
        raise OptionError(str(error)) from None
