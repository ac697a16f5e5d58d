"""``spocu shape``: the facts about SPOCU's shape and where it overflows each dtype."""

from __future__ import annotations

import argparse
import json
import math
import sys

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA

HELP = "print SPOCU's shape in numbers (extrema, zeros, range, s'(0), overflow per dtype); --figure draws s and s'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"default {DEFAULT_ALPHA}")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA, help=f"default {DEFAULT_BETA}")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help=f"default {DEFAULT_GAMMA}")
    parser.add_argument("--c", type=float, default=DEFAULT_C, help="default inf (the overflow table needs c = inf)")
    parser.add_argument("--figure", metavar="PATH", help="write a figure of s and s' for c = inf and c = 1 (e.g. docs/spocu_shape.png)")
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")


def _num(v: float | None, digits: int = 7) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def run(args: argparse.Namespace) -> int:
    from spocu.core import SPOCUParams
    from spocu.science.fitting import _jsonable
    from spocu.science.shape import overflow_table, plot_shape, r_facts, spocu_facts

    try:
        params = SPOCUParams(args.alpha, args.beta, args.gamma, args.c)
    except ValueError as error:
        print(f"spocu shape: error: {error}", file=sys.stderr)
        return 2
    r = r_facts()
    s = spocu_facts(params)
    table = overflow_table(params) if math.isinf(params.c) else None
    if args.figure:
        try:
            plot_shape(args.figure, params)
        except OSError as error:
            print(f"spocu shape: error: cannot write {args.figure!r}: {error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(_jsonable({"r": r, "spocu": s, "overflow": table}), indent=2, allow_nan=False))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    out = lambda text: console.print(text, markup=False)  # noqa: E731
    out("r(u) = u^8 - 2u^7 + 2u^3 = u^3(u^5 - 2u^4 + 2)")
    out("  stationary points (u >= 0): " + ", ".join(
        f"u = {u:.7g} (r = {v:.7g})" for u, v in zip(r["stationary_points"], r["r_at_stationary_points"])))  # fmt: skip
    out(f"  positive zeros: {r['zeros'][0]:.7g}, {r['zeros'][1]:.7g}  ->  r < 0 on ({r['zeros'][0]:.5f}, {r['zeros'][1]:.5f})")
    p = s["parameters"]
    out(f"s(x) with alpha = {p['alpha']:g}, beta = {p['beta']:g}, gamma = {p['gamma']:g}, c = {_num(p['c'])}")
    out(f"  s(x) = {s['left_tail_value']:.7g} for x <= -gamma*beta = {s['lower_kink_x']:.7g}")
    if s["bounded"]:
        out(f"  s(x) = {s['right_tail_value']:.7g} for x >= gamma*(c - beta) = {s['upper_kink_x']:.7g}")
    out(f"  s'(0) = (alpha/gamma) r'(beta) = {s['slope_at_zero']:.7g}")
    for e in s["extrema"]:
        out(f"  {e['kind']}: s({e['x']:.7g}) = {e['s']:.7g}")
    if s["negative_for_positive_x"]:
        lo, hi = s["negative_for_positive_x"]
        out(f"  s < 0 for x in ({lo:.7g}, {_num(hi)}) although x > 0")
    lo, hi = s["range"]
    out(f"  range: [{lo:.7g}, {_num(hi)}]  ({'bounded' if s['bounded'] else 'unbounded above'}, "
        f"{'monotone' if s['monotone'] else 'not monotone'})")  # fmt: skip
    if table is None:
        out("overflow: none (finite c: SPOCU is bounded)")
        return 0
    t = Table(title="overflow with c = inf: thresholds on the input x", title_justify="left")
    for col in ("dtype", "max", "s > max", "s' > max", "inf output", "literal NaN"):
        t.add_column(col, justify="right")
    short = lambda v: _num(v, 6 if v is None or abs(v) < 1e6 else 4)  # noqa: E731
    for row in table:
        t.add_row(row["dtype"], f"{row['max']:.4g}", short(row["s_exceeds_max_above"]), short(row["grad_exceeds_max_above"]),
                  short(row["output_inf_from"]), short(row["naive_nan_from"]))  # fmt: skip
    console.print(t)
    out("  s > max, s' > max: the exact s(x), s'(x) exceed the dtype's largest value")
    out("    for x above this.")
    out("  inf output: the first input whose correctly rounded s(x) is inf; spocu's")
    out("    kernels compute half types in float32 and round, so they agree.")
    out("  literal NaN: alpha*r(x/gamma + beta) - alpha*r(beta), r = u^3(u^5 - 2u^4 + 2),")
    out("    computed step by step in the dtype, gives NaN (inf - inf) from here on.")
    f16, bf16, f32 = table
    out(f"guidance: with c = inf, float16 overflows from x ~ {f16['s_exceeds_max_above']:.4g} "
        f"(s' from x ~ {f16['grad_exceeds_max_above']:.4g});")  # fmt: skip
    out(f"  bfloat16 and float32 only from x ~ {min(bf16['s_exceeds_max_above'], f32['s_exceeds_max_above']):.2g}. "
        "Under mixed precision keep SPOCU's")  # fmt: skip
    out("  input and output in float32 (autocast: run the activation outside the float16")
    out("  region), or use a finite c (c = 1: bounded, monotone, cannot overflow).")
    if args.figure:
        out(f"figure written to {args.figure}")
    return 0
