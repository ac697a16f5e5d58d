"""``spocu analyze``: moments of SPOCU, SELU and ReLU through a deep random network."""

from __future__ import annotations

import argparse
import sys

HELP = "push standardized inputs through a deep random network: per-layer mean/variance plots and a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, default=50, help="number of layers (default 50)")
    parser.add_argument("--width", type=int, default=256, help="units per layer (default 256)")
    parser.add_argument("--batch", type=int, default=512, help="input samples (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--starts", default="0.25,0.5,1,1.5,2,2.5,3",
        help="starting second moments of the analytic map, comma-separated (default 0.25,...,3)",
    )  # fmt: skip
    parser.add_argument("--out", default="spocu-analysis", help="output directory (default ./spocu-analysis)")


def run(args: argparse.Namespace) -> int:
    from spocu.science.analysis import analyze

    try:
        starts = [float(v) for v in args.starts.split(",") if v.strip()]
    except ValueError:
        print(f"spocu analyze: error: --starts {args.starts!r} must be comma-separated numbers", file=sys.stderr)
        return 2
    try:
        results = analyze(args.out, depth=args.depth, width=args.width, batch=args.batch, seed=args.seed, starts=starts)
    except ValueError as error:
        print(f"spocu analyze: error: {error}", file=sys.stderr)
        return 2
    for name, item in results["activations"].items():
        net = item["network"]
        last = net["last_finite_layer"]
        status = f"diverged at layer {net['diverged_at']}" if net["diverged_at"] else f"layer {last}"
        print(f"{name:22s} {status:>22s}: mean {net['mean'][last]: .4f}, variance {net['variance'][last]:.4f}")
    print(f"wrote network_moments.png, final_distribution.png, variance_map.png, summary.md, results.json to {args.out}")
    return 0
