"""``spocu bench``: how much SPOCU costs next to ReLU, measured side by side.

Sections (``--sections``, default all; the harness is :mod:`spocu.bench`):

* ``elementwise`` -- forward and forward+backward of SPOCU (default path, plain
  ops, the textbook composition of torch ops), ReLU, GELU and the old ``spocu``
  0.0.1 module at 1e4, 1e6 and 1.6e7 elements in float32 and bfloat16;
  milliseconds per call, the ratio to ReLU and the bytes kept for backward.
* ``cnn`` -- the seed's CIFAR-10 CNN (batch 100): ms per training step with SPOCU
  and with ReLU, PyTorch eager and ``torch.compile``.
* ``keras`` -- the same CNN in Keras 3 (a subprocess per backend, default
  TensorFlow), with ``spocu.keras``, ReLU and the old 0.0.1 Keras layer.
* ``latency`` -- the first SPOCU call in fresh processes, with an empty (cold) and
  a populated (warm) compiler cache.

Example (a quick run of one section)::

    spocu bench --quick --sections elementwise
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from spocu.bench.config import DEFAULT_SIZES, DTYPES, KERAS_BACKENDS, SECTIONS, STEP_ROUNDS_FACTOR, finite_int
from spocu.bench.old import OLD_VERSION
from spocu.errors import CommandError

HELP = "benchmark SPOCU against ReLU/GELU: elementwise, the seed's CNN (PyTorch, Keras), first-call latency"


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except (ValueError, OverflowError) as exc:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r} ({exc})") from None

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spocu bench`` options: sections, sizes, dtypes, rounds, device, threads, Keras backends,
    old wheel, outputs and seed.
    """
    parser.add_argument("--quick", action="store_true", help="fewer rounds and no optional variants (about a minute)")
    parser.add_argument(
        "--sections", type=_csv(str), default=list(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--sizes", type=_csv(finite_int), default=None,
                        help=f"elementwise sizes (default {','.join(f'{n:g}' for n in DEFAULT_SIZES)})")  # fmt: skip
    parser.add_argument(
        "--dtypes", type=_csv(str), default=["float32", "bfloat16"], help=f"elementwise dtypes, from {','.join(DTYPES)}"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"timed rounds per measurement (default 9; quick 5); the training-step sections (cnn, keras) take {STEP_ROUNDS_FACTOR} times as many",
    )
    parser.add_argument(
        "--device", default="cpu", help="torch device for the PyTorch sections: cpu or cuda[:N] (default cpu)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads, >= 1 (default: torch's choice)"
    )
    parser.add_argument(
        "--keras-backends",
        type=_csv(str),
        default=["tensorflow"],
        help=f"Keras backends to run, from {','.join(KERAS_BACKENDS)}",
    )
    parser.add_argument(
        "--old-wheel", default=None, help=f"path to a spocu-{OLD_VERSION} wheel (default: pip download)"
    )
    parser.add_argument("--no-old", action="store_true", help=f"skip the old spocu {OLD_VERSION} rows")
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("--markdown", action="store_true", help="print the tables as Markdown (for the README)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for inputs and round order")


def config_from(args: argparse.Namespace):
    """The :class:`spocu.bench.BenchConfig` of the parsed options, checked (``CommandError`` if not)."""
    from spocu.bench import BenchConfig
    from spocu.bench.config import check_json_path

    config = BenchConfig(
        sections=tuple(args.sections),
        sizes=tuple(args.sizes) if args.sizes is not None else DEFAULT_SIZES,
        dtypes=tuple(args.dtypes),
        rounds=args.rounds if args.rounds is not None else (5 if args.quick else 9),
        device=args.device,
        threads=args.threads,
        keras_backends=tuple(args.keras_backends),
        old_wheel=args.old_wheel,
        no_old=args.no_old,
        quick=args.quick,
        seed=args.seed,
    )
    try:
        config.check()
        if args.json is not None:
            check_json_path(args.json)
    except ValueError as error:
        raise CommandError(str(error)) from None
    return config


def run(args: argparse.Namespace) -> int:
    """``spocu bench``: check the options (before torch loads) and the device, run the sections,
    print the tables and write the files asked for; returns the exit status.
    """
    config = config_from(args)  # before torch is imported: bad options fail fast

    import torch
    from rich.console import Console
    from rich.table import Table

    from spocu.bench import machine_info, run_sections
    from spocu.bench.config import check_device
    from spocu.bench.report import markdown, tables, write_json

    try:
        check_device(config.device)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    info = machine_info() | {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": config.device,
    }
    if config.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(config.device))
    console.print(f"[bold]spocu bench[/bold] on {info['cpu']} ({info['cores']} cores, torch {info['torch']}, "
                  f"{info['torch_threads']} threads, device {config.device}); load average {info.get('load_average_at_start')}")  # fmt: skip
    with console.status("running ..."):
        rows, notes = run_sections(config, on_section=lambda name, s: console.print(f"  {name}: {s:.0f} s"))
    import os

    if hasattr(os, "getloadavg"):
        info["load_average_at_end"] = round(os.getloadavg()[0], 2)
    for title, header, body in tables(rows):
        if args.markdown:
            console.print(markdown(title, header, body), markup=False, highlight=False, soft_wrap=True)
            console.print()
        else:
            table = Table(title=title)
            for column in header:
                table.add_column(column, overflow="fold")
            for line in body:
                table.add_row(*line)
            console.print(table)
    for note in notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(f"machine: {json.dumps(info)}", markup=False, highlight=False, soft_wrap=True)
    if args.json:
        try:
            write_json(args.json, {"machine": info, "rows": rows, "notes": notes, "argv": sys.argv[1:]})
        except OSError as error:
            raise CommandError(f"cannot write --json {args.json!r}: {error.strerror or error}") from None
    return 0
