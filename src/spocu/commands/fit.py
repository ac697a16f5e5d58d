"""``spocu fit``: solve SPOCU's parameters for the self-normalizing conditions.

With no arguments it holds γ = 4.437 and c = ∞, solves α and β for E[s(z)] = 0 and
E[s(z)²] = 1 under z ~ N(0, 1), and prints the fit, the achieved moments, the Jacobian
of the mean/second-moment map with its norms, and whether the solution is unique in
the searched region. ``--json`` prints the same as one JSON object.

Exit status: 0 solved, 1 no exact solution (reported with the best residual), 2 bad request.
"""

from __future__ import annotations

import argparse
import math

HELP = "fit SPOCU's parameters so that E[s(z)] = 0, E[s(z)^2] = 1 (or your conditions) for your inputs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spocu fit`` options: input distribution, family, free and fixed parameters, conditions, solver, output."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  spocu fit                                  # alpha, beta for N(0,1), gamma=4.437, c=inf\n"
        "  spocu fit --fix c=1                        # the bounded variant\n"
        "  spocu fit --normal 0 2 --json              # inputs N(0, 2), machine-readable\n"
        "  spocu fit --pareto 3 --recipe pareto       # the correction's c = gamma = 1, s'(0) = 1 recipe\n"
        "  spocu fit --samples z.npy --fix c=1        # your own pre-activations (.npy or one value per line)\n"
        "  spocu fit --free gamma --condition mean=0 --condition second-moment=1 --condition slope=1\n"
        "  spocu fit --family selu                    # check: recovers SELU's lambda, alpha\n"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--normal", nargs=2, type=float, metavar=("MEAN", "VARIANCE"), help="inputs N(MEAN, VARIANCE) (default N(0, 1))"
    )
    source.add_argument(
        "--pareto", type=float, metavar="A", help="inputs with the correction's density a(x+1)^(-a-1), x > 0"
    )
    source.add_argument(
        "--samples", metavar="FILE", help="inputs: samples from FILE (.npy, or text with one value per line)"
    )
    parser.add_argument(
        "--family", default="spocu", choices=("spocu", "selu"), help="activation family (default spocu)"
    )
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="hold a parameter (repeatable); SPOCU holds gamma=4.437, c=inf unless told",
    )
    parser.add_argument(
        "--free", action="append", default=[], metavar="NAME", help="release a parameter held by default (repeatable)"
    )
    parser.add_argument(
        "--condition", action="append", default=[], metavar="KIND=TARGET",
        help="mean, second-moment, variance or slope (s'(0)); repeatable; default mean=0 and second-moment=1",
    )  # fmt: skip
    parser.add_argument(
        "--recipe", choices=("pareto",), help="pareto: fix c = gamma = 1 and ask s'(0) = 1, E[s^2] = 1 (needs --pareto)"
    )
    parser.add_argument(
        "--search",
        action="append",
        default=[],
        metavar="NAME=LOW:HIGH",
        help="search interval of a free parameter (repeatable)",
    )
    parser.add_argument(
        "--starts",
        type=int,
        default=16,
        help="about how many grid starting points (default 16; 1 = the defaults only; at most 4096)",
    )
    parser.add_argument("--omega", type=float, default=0.0, help="weight sum of the Jacobian's layer (default 0)")
    parser.add_argument(
        "--tau", type=float, default=1.0, help="sum of squared weights of the Jacobian's layer (default 1)"
    )
    parser.add_argument("--tolerance", type=float, default=1e-8, help="max |residual| of a solution (default 1e-8)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"{what} {item!r} must look like NAME=VALUE")
        out[name.strip()] = value.strip()
    return out


def _request(args: argparse.Namespace) -> dict:
    from spocu.science import PARETO_RECIPE, Normal, Pareto, Samples

    if args.pareto is not None:
        distribution = Pareto(args.pareto)
    elif args.samples is not None:
        distribution = Samples.from_file(args.samples)
    elif args.normal is not None:
        distribution = Normal(*args.normal)
    else:
        distribution = Normal()
    fixed: dict[str, float] = {}
    conditions: list[str] = []
    if args.recipe == "pareto":
        if args.pareto is None:
            raise ValueError("--recipe pareto needs the Pareto input: add --pareto A (A > 1)")
        if args.family != "spocu":
            raise ValueError("--recipe pareto is a SPOCU recipe; drop --family")
        fixed.update(PARETO_RECIPE["fixed"])
        conditions = list(PARETO_RECIPE["conditions"])
    for name, value in _pairs(args.fix, "--fix").items():
        try:
            fixed[name] = float(value)
        except ValueError:
            raise ValueError(f"--fix {name}={value}: {value!r} is not a number") from None
    if args.condition:
        conditions = list(args.condition)
    search: dict[str, tuple[float, float]] = {}
    for name, value in _pairs(args.search, "--search").items():
        low, sep, high = value.partition(":")
        try:
            search[name] = (float(low), float(high))
        except ValueError:
            raise ValueError(f"--search {name}={value}: expected LOW:HIGH, two numbers") from None
        if not sep:
            raise ValueError(f"--search {name}={value}: expected LOW:HIGH")
    return {
        "distribution": distribution,
        "family": args.family,
        "fixed": fixed,
        "free": args.free,
        "conditions": conditions or None,
        "search": search,
        "starts": args.starts,
        "omega": args.omega,
        "tau": args.tau,
        "tolerance": args.tolerance,
    }


def _fmt(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}"


def _why_not_fixed(result) -> str:
    """Why the fitted point is not a fixed point of the layer map (one sentence)."""
    if not result.solved:
        return "no exact solution, so no fixed point"
    if result.next_input is None:
        return "the output moments are infinite"
    mean, variance = (v + 0.0 for v in result.next_input)  # + 0.0: no "-0"
    m = result.moments
    text = (f"not a fixed point: the next layer's input has mean ω·E[s] = {result.omega:g}·{m.mean + 0.0:.6g} = "
            f"{mean:.6g} and variance τ·E[s²] = {result.tau:g}·{m.second_moment:.6g} = {variance:.6g}, the fitted input {result.distribution.label} has mean {result.distribution.mean:.6g} "
            f"and variance {result.distribution.variance:.6g}")  # fmt: skip
    second = result.moments.second_moment
    if abs(mean - result.distribution.mean) <= 1e-6 * max(1.0, abs(mean)) and second > 0:
        text += f" (--tau {result.distribution.variance / second:.6g} would make it one)"
    return text


def _print_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    status = (
        "[green]solved[/]" if result.solved else "[bold red]NO EXACT SOLUTION[/] (best point found shown, not a fit)"
    )
    console.print(f"spocu fit: {result.family}, inputs {result.distribution.label} -- {status}")

    params = Table(title="parameters", title_justify="left")
    params.add_column("parameter")
    params.add_column("value", justify="right")
    params.add_column("")
    for name, value in result.best_parameters.items():
        role = "fixed" if name in result.fixed else ("fitted" if result.solved else "best found")
        params.add_row(name, _fmt(value, 7), role)
    console.print(params)

    conds = Table(title="conditions", title_justify="left")
    for col in ("condition", "target", "achieved", "residual"):
        conds.add_column(col, justify="left" if col == "condition" else "right")
    for condition, residual in zip(result.conditions, result.residuals):
        conds.add_row(
            condition.kind.replace("_", " "),
            _fmt(condition.target),
            _fmt(result.achieved[condition.kind], 10),
            f"{residual:.2e}",
        )
    console.print(conds)

    m = result.moments
    plain = {"markup": False}
    console.print(
        f"moments: E[s] = {_fmt(m.mean, 8)}, E[s²] = {_fmt(m.second_moment, 8)}, "
        f"Var[s] = {_fmt(m.variance, 8)}, s'(0) = {_fmt(result.slope_at_zero, 8)}",
        **plain,
    )
    if result.jacobian is not None:
        j = result.jacobian
        console.print(
            f"Jacobian J of (mean, second moment) -> (mean, second moment), ω = {result.omega:g}, τ = {result.tau:g}:",
            **plain,
        )
        console.print(f"  [[{j[0, 0]:.6f}, {j[0, 1]:.6f}], [{j[1, 0]:.6f}, {j[1, 1]:.6f}]]", **plain)
        norms = result.norms
        console.print(
            f"  ‖J‖₂ = {norms['norm_2']:.6f}, ‖J‖₁ = {norms['norm_1']:.6f}, spectral radius = {norms['spectral_radius']:.6f}",
            **plain,
        )
        if result.fixed_point:
            console.print(
                "  [green]‖J‖₂ < 1: stable fixed point[/]"
                if result.stable
                else "  [red]‖J‖₂ ≥ 1: fixed point, not contracting[/]"
            )
        else:
            console.print(f"  J is the local sensitivity of the layer map here: {_why_not_fixed(result)}", **plain)
    region = ", ".join(f"{n} in [{lo:g}, {hi:g}]" for n, (lo, hi) in result.search_region.items())
    if result.solved:
        uniq = "unique" if result.unique else f"[yellow]not unique: {len(result.solutions)} distinct solutions[/]"
        console.print(
            f"solution {uniq} in the searched region {region} ({result.n_converged} of {result.n_starts} starts converged)"
        )
    else:
        console.print(
            f"searched region {region} from {result.n_starts} starts; best max |residual| = {result.max_residual:.3g}"
        )
    for note in result.notes:
        console.print(f"note: {note}", **plain)


def run(args: argparse.Namespace) -> int:
    """``spocu fit``: check the options (named as on the command line), call
    :func:`spocu.science.fit` and print the fit (a table, or ``--json``); returns the exit status.
    """
    from spocu.errors import CommandError
    from spocu.science import fit

    # the option names, not fit()'s argument names, in the messages about them
    if not math.isfinite(args.omega):
        raise CommandError(f"--omega must be a finite number, got {args.omega!r}")
    if not (math.isfinite(args.tau) and args.tau > 0):
        raise CommandError(f"--tau must be a finite number > 0 (a sum of squared weights), got {args.tau!r}")
    if not (math.isfinite(args.tolerance) and args.tolerance > 0):
        raise CommandError(f"--tolerance must be a finite number > 0, got {args.tolerance!r}")
    if args.starts < 1:
        raise CommandError(f"--starts must be >= 1, got {args.starts}")
    if args.normal is not None and not all(math.isfinite(v) for v in args.normal):
        raise CommandError(f"--normal MEAN VARIANCE must be finite numbers, got {args.normal[0]!r} {args.normal[1]!r}")
    try:
        result = fit(**_request(args))
    except ValueError as error:
        raise CommandError(str(error).replace("starts=", "--starts ")) from None
    except OSError as error:  # --samples FILE unreadable
        raise CommandError(f"cannot read --samples {args.samples!r}: {error.strerror or error}") from None
    if args.json:
        print(result.to_json(indent=2))
    else:
        _print_table(result)
    return 0 if result.solved else 1
