"""``spocu compare``: train the same model once per (activation, seed) and compare, with statistics.

With no options: WDBC (embedded in scikit-learn), a 64-64 MLP, spocu (the reference) vs spocu(c=1) vs relu vs selu, 5 seeds.
See :mod:`spocu.experiments` for the machinery and ``spocu compare --help`` for the options.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from spocu.commands._config_file import add_config_option, options_toml
from spocu.errors import CommandError

HELP = "train the same model with each activation over several seeds and compare them with statistics"

_EPILOG = """\
presets:
  seed-cifar10  the seed's experiment: cifar10, seed-cnn, spocu vs relu, Adam 1e-3, batch 100, 50 epochs
                (Keras's Glorot-uniform init, as the seed used)
  paper-wdbc    the paper's datasets and contenders: spocu (0.0.1 package values) vs the correction's spocu
                (c = gamma = 1, alpha, beta fitted) vs selu vs relu; mlp 64-64, 10 seeds (model and training: ours)
  paper-mnist   the same on mnist: mlp 256-256, Adam 1e-3, batch 128, 20 epochs
  resnet20-cifar10  He et al. 2016's CIFAR ResNet-20 recipe: SGD momentum 0.9, weight decay 1e-4, batch 128,
                lr 0.1 x0.1 at epochs 91 and 136, 182 epochs; spocu(c=1) vs relu vs selu (no augmentation)

defaults per dataset (where neither an option nor a preset sets them):
  wdbc    mlp 64-64,   40 epochs, batch 32,  lr 1e-3   (test 20%, validation 20% of the rest)
  digits  mlp 128-128, 30 epochs, batch 64,  lr 1e-3   (test 20%, validation 20% of the rest)
  mnist   mlp 256-256, 10 epochs, batch 128, lr 1e-3   (official test set, validation 5,000)
  cifar10 seed-cnn,    20 epochs, batch 100, lr 1e-3   (official test set, validation 5,000)
  PATH    your .csv/.parquet table, .npz arrays or image folder: mlp 64-64 (folders: seed-cnn),
          20 epochs, batch 64, lr 1e-3   (test 20% unless the data has its own, validation 20% of the rest)

activations: spocu, spocu(c=1), spocu(alpha=..., beta=..., gamma=..., c=...), spocu(learnable=True),
  relu, prelu, prelu(init=...), selu, gelu, gelu(approximate=tanh), elu, elu(alpha=...), silu, mish, tanh, sigmoid.
  Your own: MODULE:NAME or path/to/file.py:NAME (a function of a tensor, a torch.nn.Module class, a Keras callable).
  The first is the reference the others are tested against.

examples:
  spocu compare
  spocu compare --activations "spocu, spocu(c=1), relu" --seeds 10
  spocu compare --tune lr                           # each activation at its own learning rate, chosen on validation
  spocu compare --dataset digits --model seed-cnn --epochs 20
  spocu compare --preset seed-cifar10 --data-dir ~/.keras/datasets
  spocu compare --preset seed-cifar10 --estimate
  spocu compare --config experiment.toml --seeds 10          # options from a file; the command line wins
  spocu compare --config spocu-runs/wdbc-20261203-101500/config.toml   # start a recorded experiment again
  spocu compare --preset seed-cifar10 --framework keras            # the same in Keras 3 (TensorFlow, JAX or torch)
  spocu compare --preset seed-cifar10 --jobs 4      # 4 runs at a time, the cores shared among them
  spocu compare --dataset iris.csv --target species --model mynet.py:build   # your data, your model
  spocu compare --dataset pets/ --image-size 64 64 --model torchvision.models:resnet18 --swap relu
  spocu compare --preset resnet20-cifar10 --estimate
  spocu compare --preset seed-cifar10 --seeds 10 --executor ray --ray-address head:6379   # over a Ray cluster
  torchrun --nproc-per-node 4 -m spocu compare --preset seed-cifar10 --device cuda   # each run on 4 GPUs
"""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"widths must be >= 1, got {text!r}")
    return values


def _milestones(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs, got {text!r}") from None
    if not values or any(b <= a for a, b in zip((0, *values), values)):
        raise argparse.ArgumentTypeError(f"expected increasing epochs >= 1, e.g. 91,136, got {text!r}")
    return values


def _size(text: str) -> float:
    from spocu.experiments.config import check_split_size

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction (0.2) or a count (5000), got {text!r}") from None
    try:
        check_split_size(value, "the size")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).replace("the size must be", "expected")) from None
    return int(value) if value >= 1 else value


def _whole(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number >= ``minimum`` (and < ``maximum``)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value >= maximum):
            bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum})"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "whole number"
    return parse


def _real(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True):
    """An argparse type: a finite number in the interval from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        inside = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not math.isfinite(value) or not inside:
            interval = (
                ("(" if low_open else "[")
                + f"{low:g}, "
                + ("∞)" if high == math.inf else f"{high:g}" + (")" if high_open else "]"))
            )
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``spocu compare``'s options to ``parser``: what to compare, training, where and how, and ``--config``.

    The experiment's options carry the names :func:`~spocu.experiments.config.resolve_config` takes
    (:data:`~spocu.experiments.config.OPTIONS`); the others, those of
    :class:`~spocu.experiments.compare.CompareOptions`' fields.
    """
    from spocu.experiments.activations import INIT_SCHEMES
    from spocu.experiments.config import FRAMEWORKS, KERAS_BACKENDS, MODELS, MOMENTUM_OPTIMIZERS, OPTIMIZERS, PRESETS
    from spocu.experiments.data.datasets import DATASETS
    from spocu.experiments.run.executors import DEFAULT_EXECUTOR, EXECUTORS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    what = parser.add_argument_group("what to compare")
    what.add_argument(
        "--preset", choices=tuple(PRESETS), help=f"a named experiment: {', '.join(PRESETS)} (options below override it)"
    )
    what.add_argument(
        "--dataset",
        metavar="NAME|PATH",
        help=f"{', '.join(DATASETS)} (default wdbc), or your data: a .csv/.parquet table, an .npz file or a folder of images",
    )
    what.add_argument("--target", metavar="COLUMN", help="with a table: the label column (default: the last column)")
    what.add_argument(
        "--allow-leak",
        action="store_true",
        help="keep a feature column that equals the label or maps one-to-one onto it (refused by default as a leaked label)",
    )
    what.add_argument(
        "--image-size",
        nargs=2,
        type=_whole(1),
        metavar=("H", "W"),
        help="with an image folder: resize every image to H x W",
    )
    what.add_argument(
        "--activations",
        nargs="+",
        metavar="ACT",
        help='e.g. spocu relu selu, or "spocu(c=1), relu"; the first is the reference (default spocu spocu(c=1) relu selu)',
    )
    what.add_argument(
        "--model",
        metavar="NAME|FACTORY",
        help=f"{', '.join(MODELS)} (default: per dataset), or your factory MODULE:FUNCTION or path/to/file.py:FUNCTION, "
        "called as FUNCTION(activation, input_shape, num_classes)",
    )
    what.add_argument(
        "--swap",
        metavar="ACT",
        nargs="+",
        help="with a factory that hard-wires its activation (e.g. relu, or relu relu6, or a dotted class path): call "
        "FUNCTION(num_classes=N) (the torchvision signature; classes=N for keras.applications) and replace every "
        "activation of those kinds, modules and functional calls, by the compared one; refused if one forward shows any left",
    )
    what.add_argument(
        "--allow-partial-swap",
        action="store_true",
        help="with --swap: train even if ops of the swapped kind still run after the swap (their count is recorded in the report)",
    )
    what.add_argument("--hidden", type=_int_list, help="mlp hidden widths, e.g. 64,64")
    what.add_argument("--depth", type=_whole(1), help="deep-mlp: number of hidden layers (default 16)")
    what.add_argument("--width", type=_whole(1), help="deep-mlp: width of each hidden layer (default 64)")
    what.add_argument("--seeds", type=_whole(1), help="number of seeds (default 5; 10 for paper-wdbc)")
    what.add_argument("--first-seed", type=_whole(0), help="seeds are first-seed, first-seed+1, ... (default 0)")
    what.add_argument(
        "--rope",
        type=_real(0, 100),
        metavar="POINTS",
        help="verdict: differences within ± POINTS accuracy points count as practically equivalent (default 0.5)",
    )
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=_whole(1))
    train.add_argument("--batch-size", type=_whole(1))
    train.add_argument("--optimizer", choices=OPTIMIZERS, help="default adam")
    train.add_argument(
        "--lr", type=_real(0, low_open=True), help="learning rate (default 1e-3); with --tune lr the middle of the grid"
    )
    train.add_argument(
        "--tune",
        choices=("lr",),
        help="lr: choose each activation's learning rate on the validation split first (5 rates from lr/10 to lr x 10, "
        "each on the first 2 seeds; the test set takes no part), then train every seed at its activation's rate",
    )
    train.add_argument(
        "--lr-milestones",
        type=_milestones,
        metavar="E1,E2",
        help="multiply the learning rate by 0.1 at these epochs (default: constant)",
    )
    train.add_argument("--weight-decay", type=_real(0), help="default 0")
    train.add_argument(
        "--momentum", type=_real(0, 1), help=f"{'/'.join(MOMENTUM_OPTIMIZERS)} momentum, in [0, 1) (default 0)"
    )
    train.add_argument(
        "--init",
        choices=("customary", *INIT_SCHEMES),
        help="weight init for every activation (default customary: each activation its own; a model factory keeps its own init)",
    )
    train.add_argument("--val-size", type=_size, help="validation split: fraction of the training data or a count")
    train.add_argument(
        "--test-size",
        type=_size,
        help="test split for wdbc, digits and your data without its own test set (default 0.2)",
    )
    train.add_argument("--split-seed", type=_whole(0, 2**32), help="seed of the data splits (default 0)")
    train.add_argument(
        "--split",
        choices=("per-seed", "fixed"),
        help="per-seed (default): each seed draws its own stratified train/val/test split, shared by its activations "
        "(data without an official test set); fixed: one split for every seed",
    )
    train.add_argument("--framework", choices=FRAMEWORKS, help="default torch; keras: Keras 3 with its model.fit")
    train.add_argument(
        "--keras-backend",
        choices=KERAS_BACKENDS,
        help="with --framework keras: sets KERAS_BACKEND (default: KERAS_BACKEND, else Keras's configured backend)",
    )
    where = parser.add_argument_group("where and how")
    where.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    where.add_argument(
        "--threads",
        type=_whole(1),
        help="CPU threads per run (default: 1 for small models, else PyTorch's default, divided among --jobs)",
    )
    where.add_argument(
        "--jobs",
        type=_whole(1),
        help="train this many (activation, seed) runs at once (default: 1; with --executor ray, as many as the cluster's "
        "free resources allow); for data-parallel training of each run use torchrun (see docs/scaling.md)",
    )
    where.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        default=DEFAULT_EXECUTOR,
        help=f"where the runs train (default {DEFAULT_EXECUTOR}: this machine, --jobs worker processes; "
        "ray: one Ray task per run, on a local Ray or the cluster at --ray-address)",
    )
    where.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with --executor ray: the Ray cluster to join, e.g. head.example.org:6379 or auto "
        "(default: RAY_ADDRESS, else a local Ray started and shut down by the command)",
    )
    where.add_argument(
        "--ray-autoscaling",
        action="store_true",
        help="with --executor ray: the cluster's autoscaler adds nodes on demand (e.g. GPU workers with min_workers 0), "
        "so runs no live node can take wait for one instead of being refused",
    )
    where.add_argument(
        "--data-dir", type=Path, help="your copies of MNIST/CIFAR-10 (torchvision root or ~/.keras/datasets)"
    )
    where.add_argument("--no-download", action="store_true", help="never download; fail if the data is not on disk")
    where.add_argument(
        "--out",
        help="output directory: new, empty, or an earlier spocu compare output to resume (default ./spocu-runs/<dataset>-<timestamp>-<pid>)",
    )
    where.add_argument(
        "--skip-bad-runs",
        action="store_true",
        help="leave run files that fail validation out of the report (listed in it) instead of stopping",
    )
    where.add_argument(
        "--track",
        action="extend",
        nargs="+",
        choices=("mlflow", "tensorboard"),
        help="also log the finished comparison to MLflow (one run per activation and seed inside a parent run; store: "
        "MLFLOW_TRACKING_URI, else sqlite beside --out) and/or TensorBoard (event files in OUT/tensorboard)",
    )
    where.add_argument(
        "--estimate",
        action="store_true",
        help="time a few steps on synthetic data and estimate the cost; train nothing",
    )
    where.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_option(parser)


#: CompareOptions fields not given by an option of the same name (``config`` is the experiment's options;
#: ``--config`` names the TOML file they were read from)
_DERIVED = frozenset({"config", "download", "progress", "options_toml", "track"})


def _options(args: argparse.Namespace):
    """The parsed command line as :class:`~spocu.experiments.compare.CompareOptions`, by name: the experiment's
    options (:data:`~spocu.experiments.config.OPTIONS`) for the spec, built and checked once by
    :func:`~spocu.experiments.config.resolve_config`; the others, the fields of the same names."""
    import dataclasses

    from spocu.experiments.compare import CompareOptions
    from spocu.experiments.config import OPTIONS

    how = {f.name: getattr(args, f.name) for f in dataclasses.fields(CompareOptions) if f.name not in _DERIVED}
    return CompareOptions(
        config={key: getattr(args, key) for key in OPTIONS},
        **how,
        download=not args.no_download,
        progress=not args.no_progress,
        options_toml=_recorded_options(args),
        track=tuple(dict.fromkeys(args.track or ())),
    )


#: options that say where this invocation writes or what it shows, not what the experiment is
_NOT_RECORDED = frozenset({"out", "estimate", "no_progress"})


def _recorded_options(args: argparse.Namespace) -> str:
    """The invocation's options as ``OUT/config.toml`` records them (``--config`` reads them back)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return options_toml(parser, args, leave_out=_NOT_RECORDED)


class _RichCallbacks:
    """Progress bar over all epochs of all runs, one line per finished run (runs may overlap with --jobs)."""

    def __init__(self, console, enabled: bool) -> None:
        self.console, self.enabled = console, enabled
        self.progress = None
        self.running: dict[tuple[str, int], str] = {}
        self.epochs_shown: dict[tuple[str, int], int] = {}

    def __enter__(self):
        return self

    def _start(self) -> None:
        """The bar appears when the runner plans (not before: a refused run shows no bar)."""
        if self.enabled and self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

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

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def plan(self, total: int, finished: int, epochs: int) -> None:
        self._start()
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
        self.epochs_shown[(activation, seed)] = record.epoch
        if self.progress is not None:
            self.progress.update(self.task, advance=1, description=self._describe())

    def run_finished(self, result) -> None:
        self.running.pop((result.activation, result.seed), None)
        if self.progress is not None and self.running:
            self.progress.update(self.task, description=self._describe())
        if self.progress is not None and len(result.epochs) < self.epochs:  # diverged early: keep the bar honest
            self.progress.update(self.task, advance=self.epochs - len(result.epochs))
        diverged = f" (diverged at epoch {result.diverged_at})" if result.diverged_at else ""
        if result.extra.get("tuning_lr") is not None:  # a --tune run: no test set, its validation accuracy
            val = result.epochs[-1].val_accuracy if result.epochs else None
            score = "n/a" if val is None else f"{val:.4f}"
            self.console.print(
                f"  {result.activation:<14} seed {result.seed}: validation accuracy {score}, {result.seconds:.1f} s{diverged}"
            )
            return
        self.console.print(
            f"  {result.activation:<14} seed {result.seed}: test accuracy {result.test_accuracy:.4f}, "
            f"{result.seconds:.1f} s{diverged}"
        )

    def run_failed(self, failure) -> None:
        """A run that failed for good (--executor ray); the others go on."""
        from rich.markup import escape

        key = (failure.activation, failure.seed)
        self.running.pop(key, None)
        done = self.epochs_shown.pop(key, 0)
        if self.progress is not None:  # its remaining epochs will not come: keep the bar honest
            self.progress.update(
                self.task,
                advance=max(0, self.epochs - done),
                description=self._describe() if self.running else "training",
            )
        self.console.print(
            f"  {failure.activation:<14} seed {failure.seed}: [red]failed[/red]: {escape(failure.reason)}",
            soft_wrap=True,
        )


def _results_table(results: dict):
    from rich import box
    from rich.table import Table

    from spocu.experiments.results.summary import TABLE_COLUMNS, table_rows

    reference = results["reference"]
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"{results['dataset']['name']}: test accuracy, {len(results['config']['seeds'])} seeds, reference {reference}",
    )
    for column in TABLE_COLUMNS:
        table.add_column(
            column, justify="left" if column == "activation" else "right", no_wrap=column in ("activation", "95% CI")
        )
    for row in table_rows(results):
        table.add_row(*row)
    table.caption = (
        "n: runs (diverged ones are left out of every statistic); 95% CI: t interval of the mean; Δ, p (paired t-test, Holm), "
        "pooled p (Cochran–Mantel–Haenszel over seeds x test samples, Holm) and verdict (ROPE, P >= 0.95): against the reference"
    )
    return table


def _estimate(options, console) -> int:
    from rich.table import Table

    from spocu.experiments.compare import estimate

    cost = estimate(options)
    table = Table(title=cost["title"])
    for column in cost["columns"]:
        table.add_column(column, justify="left" if column == "activation" else "right")
    for row in cost["rows"]:
        table.add_row(*row)
    console.print(table)
    console.print(
        f"on {cost['where']}; an extrapolation from {cost['steps']:,} steps/epoch, not a measurement of a full run. "
        f"Total ≈ {cost['total_hours']:.2f} h"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``spocu compare`` for the parsed ``args``: 0 when done, 130 on Ctrl-C or SIGTERM.

    Builds the options once (:func:`_options`), then estimates (``--estimate``) or compares with a
    progress bar and prints the results table. Anything the user can fix leaves as a
    :class:`~spocu.errors.CommandError` (one line, exit 2).
    """
    import signal
    import threading

    from rich.console import Console
    from rich.markup import escape

    from spocu.experiments.compare import Interrupted, compare
    from spocu.experiments.errors import ExperimentError

    console = Console(highlight=False)
    if not console.is_terminal:  # piped or logged: rich would assume 80 columns and truncate the table
        console.width = max(console.width, 120)

    def terminate(signum, frame):  # kill (SIGTERM) ends like Ctrl-C: finished runs are on disk, downloads cleaned up
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, terminate) if main_thread else None
    try:
        options = _options(args)
        if args.estimate:
            return _estimate(options, console)
        with _RichCallbacks(console, options.progress) as callbacks:
            outcome = compare(
                options, callbacks=callbacks, say=lambda text: console.print(escape(text), soft_wrap=True)
            )
    except Interrupted as interrupt:
        console.print(f"\n{escape(str(interrupt))}", soft_wrap=True)
        return 130
    except ExperimentError as error:
        raise CommandError(" ".join(str(error).split("\n"))) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    if outcome is None:  # another torchrun rank: rank 0 reports
        return 0
    for bad in outcome.skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(bad['path'])}: {escape(bad['reason'])}", soft_wrap=True)
    console.print(_results_table(outcome.results))
    console.print(
        f"report: {outcome.report}\nresults: {outcome.out / 'results.json'}, {outcome.out / 'epochs.csv'}",
        soft_wrap=True,
    )
    return 0
