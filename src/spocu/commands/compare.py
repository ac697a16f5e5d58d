"""``spocu compare``: train the same model once per (activation, seed) and compare, with statistics.

With no options: WDBC (embedded in scikit-learn), a 64-64 MLP, spocu vs relu vs selu, 5 seeds.
See :mod:`spocu.experiments` for the machinery and ``spocu compare --help`` for the options.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shlex
from pathlib import Path

HELP = "train the same model with each activation over several seeds and compare them with statistics"

_EPILOG = """\
presets:
  seed-cifar10  the seed's experiment: cifar10, seed-cnn, spocu vs relu, Adam 1e-3, batch 100, 50 epochs
                (Keras's Glorot-uniform init, as the seed used)
  paper-wdbc    the paper's WDBC comparison: spocu vs selu vs relu, mlp 64-64, 10 seeds
  paper-mnist   the paper's MNIST comparison: spocu vs selu vs relu, mlp 256-256, Adam 1e-3, batch 128, 20 epochs

defaults per dataset (where neither an option nor a preset sets them):
  wdbc    mlp 64-64,   40 epochs, batch 32,  lr 1e-3   (test 20%, validation 20% of the rest)
  digits  mlp 128-128, 30 epochs, batch 64,  lr 1e-3   (test 20%, validation 20% of the rest)
  mnist   mlp 256-256, 10 epochs, batch 128, lr 1e-3   (official test set, validation 5,000)
  cifar10 seed-cnn,    20 epochs, batch 100, lr 1e-3   (official test set, validation 5,000)

activations: spocu, spocu(c=1), spocu(alpha=..., beta=..., gamma=..., c=...), relu, selu,
  gelu, gelu(approximate=tanh), elu, elu(alpha=...), silu, mish, tanh, sigmoid.
  The first is the reference the others are tested against.

examples:
  spocu compare
  spocu compare --activations "spocu, spocu(c=1), relu" --seeds 10
  spocu compare --dataset digits --model seed-cnn --epochs 20
  spocu compare --preset seed-cifar10 --data-dir ~/.keras/datasets
  spocu compare --preset seed-cifar10 --estimate
  spocu compare --preset seed-cifar10 --framework keras            # the same in Keras 3 (TensorFlow, JAX or torch)
  spocu compare --preset seed-cifar10 --jobs 4      # 4 runs at a time, the cores shared among them
  torchrun --nproc-per-node 4 -m spocu compare --preset seed-cifar10 --device cuda   # each run on 4 GPUs
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.2) or a count (5000), got {text!r}") from None
    return int(value) if value >= 1 and value == int(value) else value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    what = parser.add_argument_group("what to compare")
    what.add_argument("--preset", help="a named experiment: seed-cifar10, paper-wdbc, paper-mnist (options below override it)")
    what.add_argument("--dataset", choices=("wdbc", "digits", "mnist", "cifar10"), help="default wdbc")
    what.add_argument("--activations", nargs="+", metavar="ACT", help='e.g. spocu relu selu, or "spocu(c=1), relu" (default spocu relu selu)')
    what.add_argument("--model", choices=("mlp", "deep-mlp", "seed-cnn"), help="default: per dataset")
    what.add_argument("--hidden", type=_int_list, help="mlp hidden widths, e.g. 64,64")
    what.add_argument("--depth", type=int, help="deep-mlp: number of hidden layers (default 16)")
    what.add_argument("--width", type=int, help="deep-mlp: width of each hidden layer (default 64)")
    what.add_argument("--seeds", type=int, help="number of seeds (default 5; 10 for paper-wdbc)")
    what.add_argument("--first-seed", type=int, help="seeds are first-seed, first-seed+1, ... (default 0)")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--optimizer", choices=("adam", "adamw", "sgd", "rmsprop"), help="default adam")
    train.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    train.add_argument("--weight-decay", type=float, help="default 0")
    train.add_argument("--momentum", type=float, help="sgd/rmsprop momentum (default 0)")
    train.add_argument(
        "--init",
        choices=("customary", "lecun-normal", "he-normal", "glorot-normal", "glorot-uniform", "torch-default"),
        help="weight init for every activation (default customary: each activation its own)",
    )
    train.add_argument("--val-size", type=_size, help="validation split: fraction of the training data or a count")
    train.add_argument("--test-size", type=_size, help="test split for wdbc/digits (default 0.2)")
    train.add_argument("--split-seed", type=int, help="seed of the data splits (default 0)")
    train.add_argument("--framework", choices=("torch", "keras"), help="default torch; keras: Keras 3 with its model.fit")
    train.add_argument(
        "--keras-backend", choices=("tensorflow", "jax", "torch"),
        help="with --framework keras: sets KERAS_BACKEND (default: KERAS_BACKEND, else Keras's configured backend)",
    )
    where = parser.add_argument_group("where and how")
    where.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    where.add_argument(
        "--threads", type=int,
        help="CPU threads per run (default: 1 for small models, else PyTorch's default, divided among --jobs)",
    )
    where.add_argument(
        "--jobs", type=int, default=1,
        help="train this many (activation, seed) runs at once, in separate processes (default 1); "
        "for data-parallel training of each run use torchrun (see README, 'Scaling up')",
    )
    where.add_argument("--data-dir", type=Path, help="your copies of MNIST/CIFAR-10 (torchvision root or ~/.keras/datasets)")
    where.add_argument("--no-download", action="store_true", help="never download; fail if the data is not on disk")
    where.add_argument("--out", type=Path, help="output directory (default ./spocu-runs/<dataset>-<timestamp>); reuse it to resume")
    where.add_argument("--estimate", action="store_true", help="time a few steps on synthetic data and estimate the cost; train nothing")
    where.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config_options(args: argparse.Namespace) -> dict:
    activations = None
    if args.activations:
        from spocu.experiments.activations import split_activation_list

        activations = tuple(a for item in args.activations for a in split_activation_list(item))
    return {
        "preset": args.preset,
        "dataset": args.dataset,
        "model": args.model,
        "hidden": args.hidden,
        "depth": args.depth,
        "width": args.width,
        "activations": activations,
        "seeds": args.seeds,
        "first_seed": args.first_seed,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "momentum": args.momentum,
        "init": args.init,
        "val_size": args.val_size,
        "test_size": args.test_size,
        "split_seed": args.split_seed,
        "framework": args.framework,
        "keras_backend": args.keras_backend,
    }


class _RichCallbacks:
    """Progress bar over all epochs of all runs, one line per finished run (runs may overlap with --jobs)."""

    def __init__(self, console, enabled: bool) -> None:
        self.console, self.enabled = console, enabled
        self.progress = None
        self.running: dict[tuple[str, int], str] = {}

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
            self.task = self.progress.add_task("training", total=None)
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def plan(self, total: int, finished: int, epochs: int) -> None:
        self.epochs = epochs
        if finished:
            self.console.print(f"{finished} of {total} runs already finished in this directory: skipping them")
        if self.progress is not None:
            self.progress.update(self.task, total=(total - finished) * epochs, completed=0)

    def _describe(self) -> str:
        if len(self.running) == 1:
            return next(iter(self.running.values()))
        if len(self.running) <= 3:
            return " | ".join(f"{a} s{s}" for a, s in self.running)
        return f"{len(self.running)} runs in parallel"

    def run_started(self, activation: str, seed: int) -> None:
        self.running[(activation, seed)] = f"{activation} seed {seed}"
        if self.progress is not None:
            self.progress.update(self.task, description=self._describe())

    def epoch_done(self, activation: str, seed: int, record) -> None:
        val = "n/a" if record.val_accuracy is None else f"{record.val_accuracy:.3f}"
        self.running[(activation, seed)] = f"{activation} seed {seed} epoch {record.epoch} val acc {val}"
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=self._describe())

    def run_finished(self, result) -> None:
        self.running.pop((result.activation, result.seed), None)
        if self.progress is not None and self.running:
            self.progress.update(self.task, description=self._describe())
        if self.progress is not None and len(result.epochs) < self.epochs:  # diverged early: keep the bar honest
            self.progress.update(self.task, advance=self.epochs - len(result.epochs))
        diverged = f" (diverged at epoch {result.diverged_at})" if result.diverged_at else ""
        self.console.print(
            f"  {result.activation:<14} seed {result.seed}: test accuracy {result.test_accuracy:.4f}, "
            f"{result.seconds:.1f} s{diverged}"
        )


def _results_table(results: dict):
    from rich import box
    from rich.table import Table

    from spocu.experiments.report import fmt_p

    reference = results["reference"]
    table = Table(box=box.SIMPLE_HEAD, title=f"{results['dataset']['name']}: test accuracy, {len(results['config']['seeds'])} seeds, reference {reference}")
    for column in ("activation", "test acc", "sd", "95% CI", "Δ", "p Holm", "McNemar", "s/epoch"):
        table.add_column(column, justify="left" if column == "activation" else "right", no_wrap=column in ("activation", "95% CI"))
    comparisons = {c["activation"]: c for c in results["comparisons"]}
    for name in results["config"]["activations"]:
        s = results["summary"][name]
        acc = s["test_accuracy"]
        ci = "n/a" if acc["ci_low"] is None else f"{acc['ci_low']:.4f}–{acc['ci_high']:.4f}"
        sd = "n/a" if acc["sd"] is None else f"{acc['sd']:.4f}"
        c = comparisons.get(name)
        delta = "—" if c is None or c["test_accuracy"]["mean_difference"] is None else f"{c['test_accuracy']['mean_difference']:+.4f}"
        p = "—" if c is None else fmt_p(c["test_accuracy"]["p_ttest_holm"])
        mcnemar = "—" if c is None else f"{c['mcnemar_significant']}/{len(c['mcnemar'])}"
        median = s["seconds_per_epoch"]["median"]
        table.add_row(name, f"{acc['mean']:.4f}", sd, ci, delta, p, mcnemar, "n/a" if median is None else f"{median:.3g}")
    table.caption = "Δ and p (paired t-test, Holm): against the reference; McNemar: seeds with p < 0.05 on the shared test set"
    return table


def _estimate(config, args, console) -> int:
    from rich.table import Table

    from spocu.experiments import engine_torch
    from spocu.experiments.datasets import DEFAULT_TEST_SIZE, DEFAULT_VAL_SIZE

    shapes = {"wdbc": ((30,), 2, 569, None), "digits": ((1, 8, 8), 10, 1797, None), "mnist": ((1, 28, 28), 10, 60000, 10000), "cifar10": ((3, 32, 32), 10, 50000, 10000)}
    input_shape, classes, n_train_full, n_test = shapes[config.dataset]
    if n_test is None:
        test = config.test_size or DEFAULT_TEST_SIZE
        n_test = int(test if test >= 1 else round(n_train_full * test))
        n_train_full -= n_test
    val = config.val_size or DEFAULT_VAL_SIZE[config.dataset]
    n_val = int(val if val >= 1 else round(n_train_full * val))
    n_train = n_train_full - n_val
    device = engine_torch.resolve_device(args.device)
    steps = -(-n_train // config.batch_size)
    table = Table(title=f"estimated cost: {config.dataset}, {config.model.label}, {config.epochs} epochs, batch {config.batch_size} (synthetic data)")
    for column in ("activation", "s/step", "s/epoch", "min/run", "runs", "min total"):
        table.add_column(column, justify="left" if column == "activation" else "right")
    threads = args.threads or engine_torch.choose_threads(config, input_shape, classes, device)
    total = 0.0
    for spec in config.activation_specs():
        timing = engine_torch.time_steps(config, input_shape, classes, spec, device=device, threads=threads)
        epoch = steps * timing["step_seconds"] + n_val * timing["eval_seconds_per_sample"]
        run = config.epochs * epoch + n_test * timing["eval_seconds_per_sample"]
        total += run * len(config.seeds)
        table.add_row(spec.canonical, f"{timing['step_seconds']:.4f}", f"{epoch:.1f}", f"{run / 60:.1f}", str(len(config.seeds)), f"{run * len(config.seeds) / 60:.1f}")
    console.print(table)
    where = f"{device}" + (f", {threads} thread(s)" if threads else "")
    console.print(f"on {where}; an extrapolation from {steps:,} steps/epoch, not a measurement of a full run. Total ≈ {total / 3600:.2f} h")
    return 0


def _select_keras_backend(requested: str | None) -> None:
    """Set KERAS_BACKEND before Keras is imported; refuse if Keras already runs on another backend."""
    import os
    import sys

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines would bury the progress bar
    if requested is None:
        return
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != requested:
            raise ValueError(
                f"--keras-backend {requested}: Keras is already imported in this process with the {current} backend; "
                f"run spocu compare in a fresh process (or set KERAS_BACKEND={requested} before Python starts)"
            )
    os.environ["KERAS_BACKEND"] = requested


def _load_dataset(config, args, progress: bool, download: bool):
    from spocu.experiments.datasets import load_dataset

    return load_dataset(
        config.dataset, data_dir=args.data_dir, download=download, progress=progress,
        split_seed=config.split_seed, val_size=config.val_size, test_size=config.test_size,
    )


def _load_dataset_distributed(config, args, dist, console):
    """Every process loads the data, local rank 0 of each node first (it alone downloads); None if any failed.

    The processes then compare data fingerprints, so nodes holding different files are caught.
    """
    import sys

    from spocu.experiments.datasets import DatasetError

    dataset, problem = None, None
    for turn in ("first", "others"):
        if (dist.local_rank == 0) == (turn == "first"):
            try:
                dataset = _load_dataset(config, args, progress=dist.is_main and not args.no_progress, download=turn == "first" and not args.no_download)
            except (DatasetError, ValueError) as error:
                problem = str(error)
                print(f"spocu compare (rank {dist.rank}): {problem}", file=sys.stderr)
        if not dist.all_agree(problem is None):
            return None
    fingerprints = dist.all_gather_ints([int(dataset.fingerprint()[:15], 16)])
    if len(set(fingerprints)) > 1:
        console.print(
            "[red]spocu compare:[/red] the processes loaded different data (data fingerprints differ between ranks): "
            "give every node the same dataset files (--data-dir)"
        )
        return None
    return dataset


def run(args: argparse.Namespace) -> int:
    import contextlib
    import signal
    import threading

    from rich.console import Console
    from rich.markup import escape

    from spocu.experiments.config import resolve_config
    from spocu.experiments.distributed import from_environment

    try:
        config = resolve_config(_config_options(args))
        dist = from_environment()
    except ValueError as error:
        raise SystemExit(f"spocu compare: {error}") from None
    main = dist is None or dist.is_main
    console = Console(highlight=False, quiet=not main)  # under torchrun, rank 0 speaks for all
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and truncate the table
        console.width = max(console.width, 120)
    if args.threads is not None and args.threads < 1:
        raise SystemExit(f"spocu compare: --threads must be >= 1, got {args.threads}")
    if args.jobs < 1:
        raise SystemExit(f"spocu compare: --jobs must be >= 1, got {args.jobs}")
    if dist is not None:
        if config.framework != "torch":
            raise SystemExit(f"spocu compare: torchrun data-parallel training is for --framework torch, not {config.framework}")
        if args.jobs != 1:
            raise SystemExit("spocu compare: --jobs and torchrun do not combine: under torchrun all processes train each run together")
        if args.estimate:
            raise SystemExit("spocu compare: run --estimate without torchrun")
    if args.estimate:
        if config.framework != "torch":
            raise SystemExit("spocu compare: --estimate times the PyTorch engine; run it without --framework keras")
        return _estimate(config, args, console)

    from spocu.experiments import runner
    from spocu.experiments.datasets import DatasetError
    from spocu.experiments.engines import get_engine
    from spocu.experiments.environment import environment
    from spocu.experiments.report import write_report

    try:
        if config.framework == "keras":
            _select_keras_backend(args.keras_backend)  # before Keras is imported
        engine = get_engine(config.framework)
    except ImportError as error:
        raise SystemExit(
            f"spocu compare: --framework {config.framework} cannot import {error.name or error}; "
            'Keras 3 with TensorFlow: pip install "spocu[tensorflow]" (or "spocu[keras]" with jax or torch)'
        ) from None
    except ValueError as error:
        raise SystemExit(f"spocu compare: {error}") from None
    if config.framework == "keras":
        import dataclasses
        import os

        config = dataclasses.replace(config, keras_backend=engine.backend())
        os.environ["KERAS_BACKEND"] = config.keras_backend  # --jobs workers start Keras on the same backend
    try:
        getattr(engine, "check_config", lambda config: None)(config)
    except ValueError as error:
        raise SystemExit(f"spocu compare: {error}") from None
    try:
        if dist is not None:
            from spocu.experiments.distributed import initialize, per_process_batch

            per_process_batch(config.batch_size, dist.world_size)  # every process checks before joining the group
            dist = initialize(dist, args.device)
            device = engine.resolve_device(dist.device)
        else:
            device = engine.resolve_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise SystemExit(f"spocu compare: {error}") from None
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = runner.OutputDir(args.out or Path("spocu-runs") / f"{config.dataset}-{stamp}")
    progress = not args.no_progress

    def terminate(signum, frame):  # kill (SIGTERM) ends like Ctrl-C: finished runs are on disk, downloads cleaned up
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    success = False
    try:
        if dist is None:
            try:
                dataset = _load_dataset(config, args, progress=progress, download=not args.no_download)
            except DatasetError as error:
                console.print(f"[red]spocu compare:[/red] {escape(str(error))}")
                return 2
            except ValueError as error:
                raise SystemExit(f"spocu compare: {error}") from None
        else:
            dataset = _load_dataset_distributed(config, args, dist, console)
            if dataset is None:
                return 2
        threads = args.threads if args.threads else engine.choose_threads(config, dataset.input_shape, dataset.num_classes, device)
        jobs = args.jobs
        if jobs > 1 and not args.threads and str(device) == "cpu":
            from spocu.experiments.parallel import threads_per_worker, usable_cpus

            threads = threads_per_worker(jobs, usable_cpus(), threads)
        size = dataset.describe()
        scale = ""
        if jobs > 1:
            scale = f" | {jobs} runs at a time" + (f", {threads} thread(s) each" if threads else "")
        elif dist is not None:
            scale = f" | torchrun: {dist.world_size} processes ({dist.backend}), batch {config.batch_size // dist.world_size} per process"
        elif threads:
            scale = f", {threads} thread(s)"
        console.print(
            f"{config.dataset}: train {size['train']:,}, val {size['val']:,}, test {size['test']:,} | {config.model.label} | "
            f"{', '.join(config.activations)} x {len(config.seeds)} seeds | {config.epochs} epochs, batch {config.batch_size}, "
            f"{config.optimizer} lr {config.lr:g} | {device}{scale}"
        )
        console.print(f"output: {out.root}", soft_wrap=True)
        with contextlib.ExitStack() as stack:
            busy = None
            if main:
                try:
                    stack.enter_context(out.lock())
                except runner.OutputBusy as error:
                    busy = str(error)
            if dist is not None:
                busy = dist.broadcast(busy)
            if busy is not None:
                raise runner.OutputBusy(busy)
            callbacks = stack.enter_context(_RichCallbacks(console, progress and main))
            runs = runner.run_experiment(
                config, out, dataset, engine, device=str(device), threads=threads, callbacks=callbacks, jobs=jobs, dist=dist,
            )
        if main:
            info = environment(runs[0].device if runs else str(device), extra_packages=("keras",) if config.framework == "keras" else ())
            if config.framework == "keras":  # the backend's import version (its distribution may be tensorflow-cpu, jax[cuda], ...)
                info["versions"][engine.backend()] = engine.backend_version()
            if dist is not None:
                info["distributed"] = {**dist.describe(), "per_process_batch": config.batch_size // dist.world_size}
            if jobs > 1:
                info["parallel"] = {"jobs": jobs, "threads_per_job": threads}
            results = runner.assemble_results(config, dataset, runs, info)
            runner.write_results(out, results, runs)
            report = write_report(out.root, results)
        success = True
    except KeyboardInterrupt:
        saved = f"the finished runs are saved in {out.root}" if out.runs.exists() else "nothing was trained"
        console.print(
            f"\ninterrupted: {saved}.\nResume with the same command and --out {shlex.quote(str(out.root))}: finished runs are skipped.",
            soft_wrap=True,
        )
        return 130
    except (runner.ConfigMismatch, runner.OutputBusy) as error:
        console.print(f"[red]spocu compare:[/red] {escape(str(error))}")
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if dist is not None:
            dist.finish(success)
    if not main:
        return 0
    console.print(_results_table(results))
    console.print(f"report: {report}\nresults: {out.root / 'results.json'}, {out.root / 'epochs.csv'}", soft_wrap=True)
    return 0
