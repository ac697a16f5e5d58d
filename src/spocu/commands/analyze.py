"""``spocu analyze``: moments of SPOCU, SELU and ReLU through a deep random network."""

from __future__ import annotations

import argparse
import os
import sys

from spocu.errors import CommandError

HELP = "push standardized inputs through a deep random network: per-layer mean/variance plots and a summary"

#: refuse a run whose arrays would need more than this share of the machine's memory
MEMORY_SHARE = 0.5
#: warn (on stderr, before starting) above this many floating-point operations (~1 min on 2 cores)
WARN_FLOPS = 5e11
#: contenders in the comparison (spocu.science.analysis.contenders: 4 SPOCU, SELU, ReLU)
CONTENDERS = 6


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spocu analyze`` options: network depth, width, batch, seed, starting moments, output directory."""
    parser.add_argument("--depth", type=int, default=50, help="number of layers (default 50)")
    parser.add_argument("--width", type=int, default=256, help="units per layer (default 256)")
    parser.add_argument("--batch", type=int, default=512, help="input samples (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--starts", default="0.25,0.5,1,1.5,2,2.5,3",
        help="starting second moments of the analytic map, comma-separated (default 0.25,...,3)",
    )  # fmt: skip
    parser.add_argument("--out", default="spocu-analysis", help="output directory (default ./spocu-analysis)")


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def work_estimate(depth: int, width: int, batch: int) -> tuple[float, float]:
    """(bytes, floating-point operations) of the network simulation.

    Memory: the float64 input and two activations (batch × width each), one weight matrix
    (width²) and its product; operations: one matrix product per layer and contender.

    >>> work_estimate(50, 256, 512)
    (4718592.0, 20132659200.0)
    """
    memory = 8.0 * (4 * batch * width + width * width)
    flops = 2.0 * depth * batch * width * width * CONTENDERS
    return memory, flops


def check_out_dir(out: str) -> None:
    """Refuse an --out that cannot become a directory of ours, before any work is done."""
    if not out.strip():
        raise CommandError("--out must name a directory, got an empty string")
    if os.path.exists(out) and not os.path.isdir(out):
        raise CommandError(f"--out {out!r} exists and is not a directory")
    parent = os.path.abspath(out)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise CommandError(f"--out {out!r}: {parent!r} is a file, so no directory can be made below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"--out {out!r}: {parent!r} is not writable")
    if not os.path.isdir(out):  # probe: make the directory now (and remove it) rather than fail after the work
        try:
            os.makedirs(out)
        except OSError as error:
            raise CommandError(f"--out {out!r}: cannot create the directory: {error.strerror or error}") from None
        os.rmdir(out)


def run(args: argparse.Namespace) -> int:
    """``spocu analyze``: check the options and the memory estimate, then propagate moments
    through a deep random network per activation, print each one's last layer and write the figures,
    ``summary.md`` and ``results.json`` to ``--out``; returns the exit status.
    """
    for name in ("depth", "width"):
        if getattr(args, name) < 1:
            raise CommandError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.batch < 2:
        raise CommandError(f"--batch must be >= 2 (the inputs are standardized per column), got {args.batch}")
    if not 0 <= args.seed < 2**63:
        raise CommandError(f"--seed must be in [0, 2**63), got {args.seed}")
    try:
        starts = [float(v) for v in args.starts.split(",") if v.strip()]
    except ValueError:
        raise CommandError(f"--starts {args.starts!r} must be comma-separated numbers") from None
    memory, flops = work_estimate(args.depth, args.width, args.batch)
    ram = physical_memory()
    if ram is not None and memory > MEMORY_SHARE * ram:
        raise CommandError(
            f"--width {args.width} --batch {args.batch} needs about {memory / 2**30:.3g} GiB of arrays "
            f"(this machine has {ram / 2**30:.3g} GiB) and {flops:.2g} floating-point operations; use a smaller "
            "--width or --batch"
        )
    if flops > WARN_FLOPS:
        print(f"spocu analyze: warning: about {flops:.2g} floating-point operations and {memory / 2**30:.3g} GiB "
              "of arrays: this may take a long time", file=sys.stderr)  # fmt: skip
    check_out_dir(args.out)

    from spocu.science.analysis import analyze

    try:
        results = analyze(args.out, depth=args.depth, width=args.width, batch=args.batch, seed=args.seed, starts=starts)
    except ValueError as error:
        raise CommandError(str(error)) from None
    except OSError as error:
        raise CommandError(f"cannot write to --out {args.out!r}: {error.strerror or error}") from None
    for name, item in results["activations"].items():
        net = item["network"]
        last = net["last_finite_layer"]
        status = f"diverged at layer {net['diverged_at']}" if net["diverged_at"] else f"layer {last}"
        print(f"{name:22s} {status:>22s}: mean {net['mean'][last]: .4f}, variance {net['variance'][last]:.4f}")
    print(
        f"wrote network_moments.png, final_distribution.png, variance_map.png, summary.md, results.json to {args.out}"
    )
    return 0
