"""``spocu shape``: the facts about SPOCU's shape and where it overflows each dtype."""

from __future__ import annotations

import argparse
import json
import math
import os

from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA

HELP = "print SPOCU's shape in numbers (extrema, zeros, range, s'(0), overflow per dtype); --figure draws s and s'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spocu shape`` options: the parameters, ``--figure PATH`` and ``--json``."""
    parser.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help=f"default {DEFAULT_ALPHA}")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA, help=f"default {DEFAULT_BETA}")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA, help=f"default {DEFAULT_GAMMA}")
    parser.add_argument("--c", type=float, default=DEFAULT_C, help="default inf (the overflow table needs c = inf)")
    parser.add_argument(
        "--figure", metavar="PATH", help="write a figure of s and s' for c = inf and c = 1 (e.g. docs/spocu_shape.png)"
    )
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON object")


def _num(v: float | None, digits: int = 7) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def run(args: argparse.Namespace) -> int:
    """``spocu shape``: print SPOCU's shape facts for the given parameters (a table, or ``--json``)
    and write the figure if asked; returns the exit status.
    """
    from spocu.core import SPOCUParams
    from spocu.errors import CommandError
    from spocu.science.fitting import _jsonable
    from spocu.science.shape import figure_formats, overflow_table, plot_shape, r_facts, spocu_facts

    try:
        params = SPOCUParams(args.alpha, args.beta, args.gamma, args.c)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if args.figure:
        suffix = os.path.splitext(args.figure)[1].lstrip(".").lower() or "png"
        if suffix not in figure_formats():
            raise CommandError(f"--figure {args.figure!r}: cannot write {suffix!r} figures; use a suffix among "
                               f"{', '.join(sorted(figure_formats()))}")  # fmt: skip
    r = r_facts()
    s = spocu_facts(params)
    try:
        table = overflow_table(params)
    except ValueError:  # finite c whose range fits every dtype: nothing overflows
        table = None
    if args.figure:
        try:
            plot_shape(args.figure, params)
        except OSError as error:
            raise CommandError(f"cannot write --figure {args.figure!r}: {error.strerror or error}") from None
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
    out(
        f"  positive zeros: {r['zeros'][0]:.7g}, {r['zeros'][1]:.7g}  ->  r < 0 on ({r['zeros'][0]:.5f}, {r['zeros'][1]:.5f})"
    )
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
    if s["upper_value_exceeds_float64"]:
        bound = (f"bounded in exact arithmetic by s(x >= {_num(s['upper_kink_x'])}) = alpha*(r(c) - r(beta)), "
                 "but that bound exceeds float64's range")  # fmt: skip
        out(f"  range: [{lo:.7g}, > 1.8e308]  ({bound}; {'monotone' if s['monotone'] else 'not monotone'})")
    else:
        out(f"  range: [{lo:.7g}, {_num(hi)}]  ({'bounded' if s['bounded'] else 'unbounded above'}, "
            f"{'monotone' if s['monotone'] else 'not monotone'})")  # fmt: skip
    if table is None:
        out(f"overflow: none (c = {_num(params.c)}: s and s' stay within every dtype's range)")
        if args.figure:
            out(f"figure written to {args.figure}")
        return 0
    t = Table(title=f"overflow with c = {_num(params.c)}: thresholds on the input x", title_justify="left")
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
    out("  -: no such input of that dtype (s stays in range, or the threshold lies beyond")
    out("    the dtype's own range); the literal formula is shown for c = inf only.")
    for row in table:
        if row["note"]:
            out(f"  note ({row['dtype']}): {row['note']}")
    f16, bf16, f32 = table
    if None not in (f16["s_exceeds_max_above"], f16["grad_exceeds_max_above"], bf16["s_exceeds_max_above"],
                    f32["s_exceeds_max_above"]):  # fmt: skip
        out(f"guidance: with c = {_num(params.c)}, float16 overflows from x ~ {f16['s_exceeds_max_above']:.4g} "
            f"(s' from x ~ {f16['grad_exceeds_max_above']:.4g});")  # fmt: skip
        out(f"  bfloat16 and float32 only from x ~ {min(bf16['s_exceeds_max_above'], f32['s_exceeds_max_above']):.2g}. "
            "Under mixed precision keep SPOCU's")  # fmt: skip
        out("  input and output in float32 (autocast: run the activation outside the float16")
        out("  region), or use a finite c (c = 1: bounded, monotone, cannot overflow).")
    if args.figure:
        out(f"figure written to {args.figure}")
    return 0
