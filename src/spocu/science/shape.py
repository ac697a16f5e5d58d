r"""The shape of SPOCU in numbers: stationary points and zeros of r, the range of s,
s'(0), and the inputs above which SPOCU overflows each floating-point type (c = ∞).

Facts about :math:`r(u) = u^8 - 2u^7 + 2u^3` (roots found by bracketing with
:func:`scipy.optimize.brentq` on the core's ``r`` and ``r_prime``):

- stationary points at :math:`u = 0` (inflection, :math:`r = r' = r'' = 0`), :math:`u = 1`
  (local maximum, :math:`r = 1`) and :math:`u_2 \approx 1.6484` (global minimum on
  :math:`u \ge 0`, :math:`r(u_2) \approx -2.6694`);
- positive zeros :math:`\approx 1.3002` and :math:`\approx 1.8162`, so :math:`r < 0` between them.

With :math:`u = x/\gamma + \beta` these become the kinks, local extrema and negative
dip of :math:`s` (c = ∞: a local maximum at :math:`x = \gamma(1 - \beta)`, a local minimum at
:math:`x = \gamma(u_2 - \beta)`, then growth like :math:`(\alpha/\gamma^8)x^8`).

Examples:
    >>> facts = r_facts()
    >>> [round(u, 4) for u in facts["stationary_points"]], [round(u, 4) for u in facts["zeros"]]
    ([0.0, 1.0, 1.6484], [1.3002, 1.8162])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from spocu.core import SPOCUParams, r, r_prime

__all__ = [
    "r_facts", "spocu_facts", "spocu_range", "DTYPES", "DTypeSpec", "overflow_table", "rising_crossing", "naive_spocu",
    "plot_shape", "figure_formats",
]  # fmt: skip


def _bracketed_roots(f, lo: float, hi: float, n: int = 4000) -> list[float]:
    """Sign changes of f on a grid over [lo, hi], refined by brentq."""
    from scipy.optimize import brentq

    grid = np.linspace(lo, hi, n + 1)
    values = np.asarray(f(grid), dtype=np.float64)
    roots = []
    for a, b, fa, fb in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if fa == 0.0:
            roots.append(float(a))
        elif fa * fb < 0:
            roots.append(float(brentq(f, a, b, xtol=1e-15, rtol=4 * np.finfo(float).eps)))
    return roots


def r_facts() -> dict[str, Any]:
    """Stationary points (u >= 0) and positive zeros of r, with r at the stationary points."""
    # r' = 2u^2 (u - 1)(...): u = 0 is a double root without a sign change, so it is listed directly
    stationary = [0.0] + [u for u in _bracketed_roots(r_prime, 1e-3, 3.0) if u > 1e-3]
    zeros = [u for u in _bracketed_roots(r, 1e-3, 3.0) if u > 1e-3]
    return {
        "stationary_points": stationary,
        "r_at_stationary_points": [float(r(u)) for u in stationary],
        "zeros": zeros,
        "negative_on": (zeros[0], zeros[1]),
    }


def spocu_range(params: SPOCUParams) -> tuple[float, float]:
    r"""The range of s: :math:`[\alpha(\min_{[0,c]} r - r(\beta)),\ \alpha(\max_{[0,c]} r - r(\beta))]`
    (``inf`` above for c = ∞).

    Examples:
        >>> lo, hi = spocu_range(SPOCUParams(c=1.0))
        >>> round(lo, 6), round(hi, 6)
        (-1.583829, 1.509871)
    """
    u2 = r_facts()["stationary_points"][2]
    rb = float(r(params.beta))
    candidates = [u for u in (0.0, 1.0, u2, params.c) if u <= params.c and math.isfinite(u)]
    values = [float(r(u)) for u in candidates]
    top = math.inf if math.isinf(params.c) else max(values)
    return params.alpha * (min(values) - rb), params.alpha * (top - rb)


def spocu_facts(params: SPOCUParams | None = None) -> dict[str, Any]:
    """The shape of s for given parameters: kinks, extrema, the negative dip, range, s'(0)."""
    p = params or SPOCUParams()
    facts = r_facts()
    u1, u2 = facts["stationary_points"][1], facts["stationary_points"][2]
    rb = float(r(p.beta))
    out: dict[str, Any] = {
        "parameters": p.as_dict(),
        "lower_kink_x": p.lower_bound,
        "left_tail_value": p.lower_value,
        "upper_kink_x": p.upper_bound,
        "right_tail_value": p.upper_value,
        "slope_at_zero": p.alpha / p.gamma * float(r_prime(p.beta)),
        "range": spocu_range(p),
        # bounded in exact arithmetic for finite c, but say so only when the bound is a number
        "bounded": math.isfinite(p.c) and math.isfinite(spocu_range(p)[1]),
        "upper_value_exceeds_float64": math.isfinite(p.c) and not math.isfinite(spocu_range(p)[1]),
        "monotone": p.c <= 1.0,
    }
    x_of = lambda u: p.gamma * (u - p.beta)  # noqa: E731
    extrema = []
    if p.c > u1:
        extrema.append({"kind": "local max", "x": x_of(u1), "s": p.alpha * (1.0 - rb)})
    if p.c > u2:
        extrema.append({"kind": "local min", "x": x_of(u2), "s": p.alpha * (facts["r_at_stationary_points"][2] - rb)})
    out["extrema"] = extrema
    # s < 0 for x > 0 where h(u) < r(beta), u > beta; r rises to 1 on [beta, 1] so look beyond u = 1
    top = min(p.c, 3.0)
    crossings = _bracketed_roots(lambda u: r(u) - rb, 1.0 + 1e-9, top) if top > 1.0 else []
    if crossings:
        end = x_of(crossings[1]) if len(crossings) > 1 else math.inf  # flat negative tail past c
        out["negative_for_positive_x"] = (x_of(crossings[0]), end)
    else:
        out["negative_for_positive_x"] = None
    return out


@dataclass(frozen=True)
class DTypeSpec:
    """A floating-point type: its largest finite value and significand bits (with the implicit one)."""

    name: str
    max: float
    precision: int

    @property
    def rounds_to_inf_at(self) -> float:
        """Values ≥ this round to inf (round-to-nearest-even): max + ulp(max)/2."""
        return self.max + 0.5 * math.ulp(self.max) * 2.0 ** (53 - self.precision)

    def numpy_dtype(self):
        """The NumPy dtype (bfloat16 from ml_dtypes, when installed; else None)."""
        if self.name == "bfloat16":
            try:
                import ml_dtypes
            except ImportError:
                return None
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(self.name)


DTYPES = (
    DTypeSpec("float16", 65504.0, 11),
    DTypeSpec("bfloat16", float.fromhex("0x1.fe00000000000p+127"), 8),
    DTypeSpec("float32", float.fromhex("0x1.fffffe0000000p+127"), 24),
)


def naive_spocu(x: np.ndarray, params: SPOCUParams, dtype) -> np.ndarray:
    """The literal α·r(x/γ + β) − α·r(β), r(u) = u³(u⁵ − 2u⁴ + 2), every step in ``dtype``
    (how the paper writes it and the original ``spocu`` 0.0.1 package computes it; c = ∞)."""
    t = lambda v: np.asarray(v, dtype=dtype)  # noqa: E731
    # divide: a gamma that rounds to 0 in the dtype makes the literal formula divide by 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        u = np.maximum(t(x) / t(params.gamma) + t(params.beta), t(0.0))
        ub = t(params.beta)
        ru = u**3 * (u**5 - t(2.0) * u**4 + t(2.0))
        rb = ub**3 * (ub**5 - t(2.0) * ub**4 + t(2.0))
        return t(params.alpha) * ru - t(params.alpha) * rb


def _uint(dtype):
    return {2: np.uint16, 4: np.uint32}[np.dtype(dtype).itemsize]


def _next_up(value: float, dtype) -> float:
    """The smallest (positive) value of ``dtype`` that is >= ``value``."""
    with np.errstate(over="ignore"):
        v = np.asarray(value, dtype=np.float64).astype(dtype)
    if float(v) < value:  # positive values order like their bit patterns
        v = (v.view(_uint(dtype)) + 1).astype(_uint(dtype)).view(dtype)
    return float(v)


def _first_representable(predicate, dtype, lo: float, hi: float) -> float | None:
    """The smallest ``dtype`` value x in [lo, hi] with predicate(x) true (monotone predicate),
    found by bisection over the type's bit patterns (positive values order like their bits);
    ``None`` when the predicate is false at ``hi`` (nothing in the interval qualifies).
    At most one step per bit of the type: the loop always ends."""
    uint = _uint(dtype)
    a = int(np.asarray(lo, dtype=dtype).view(uint))
    b = int(np.asarray(hi, dtype=dtype).view(uint))
    as_value = lambda bits: np.asarray(bits, dtype=uint).view(dtype)  # noqa: E731
    if not predicate(as_value(b)):
        return None
    while b - a > 1:
        mid = (a + b) // 2
        if predicate(as_value(mid)):
            b = mid
        else:
            a = mid
    return float(as_value(b))


#: doublings of the search interval before giving up: 2**1100 exceeds float64's range
_MAX_DOUBLINGS = 1100


def rising_crossing(g, target: float, u_lo: float, u_hi: float = math.inf) -> float | None:
    r"""The smallest u in [u_lo, u_hi] with g(u) >= ``target``, for g increasing there
    (r or r' on :math:`u \ge u_2`); ``None`` when g stays below ``target`` (or ``target``
    is not finite). The search interval doubles a bounded number of times, so this
    always ends, whatever the parameters.

    Examples:
        >>> round(rising_crossing(r, 1000.0, 1.6484), 6)
        2.768388
    """
    if math.isnan(target) or target == math.inf:
        return None
    g_at = lambda u: float(g(u))  # noqa: E731
    if g_at(u_lo) >= target:
        return float(u_lo)
    hi = max(u_lo, 1.0)
    for _ in range(_MAX_DOUBLINGS):
        hi = min(2.0 * hi, u_hi)
        value = g_at(hi)
        if value >= target or hi >= u_hi or not math.isfinite(hi):
            break
    if not (math.isfinite(hi) and g_at(hi) >= target):
        return None
    from scipy.optimize import brentq

    # g can overflow to inf at hi: clip so that brentq sees finite values of the right sign
    clipped = lambda u: min(g_at(u), 1e300) - min(target, 1e300)  # noqa: E731
    return float(brentq(clipped, u_lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500))


def _off_branch_maxima(p: SPOCUParams, u2: float) -> tuple[float, float]:
    """max |s| and max |s'| for u in [0, min(c, u2)], left of the rising branch."""
    top = min(p.c, u2)
    u = np.linspace(0.0, top, 4001)
    rb = float(r(p.beta))
    with np.errstate(over="ignore", invalid="ignore"):
        s_max = p.alpha * float(np.max(np.abs(r(u) - rb)))
        ds_max = p.alpha / p.gamma * float(np.max(np.abs(r_prime(u))))
    return s_max, ds_max


def overflow_table(params: SPOCUParams | None = None) -> list[dict[str, Any]]:
    r"""Per dtype (float16, bfloat16, float32): the x above which the exact s(x)
    (and s'(x)) exceeds the type's largest value, the smallest input whose correctly rounded
    output is inf (what ``spocu``'s kernels return: half types are computed in float32 and
    rounded), and where the literal formula evaluated in the type first gives inf and NaN.

    The thresholds are searched on the rising branch :math:`u = x/\gamma + \beta \ge u_2`
    (up to c), where s and s' increase, in u (well conditioned for every γ). A value is
    ``None`` where it does not exist: s stays below the type's largest value for every
    float64 input (huge γ, tiny α, or a finite c), or the threshold lies beyond the type's
    own range. ``note`` says when |s| or |s'| already exceeds the type's range left of the
    rising branch (huge α), where a single threshold cannot describe the overflow.

    Raises:
        ValueError: for a finite c whose s and s' stay within every type's range
            (SPOCU is bounded then: nothing overflows).
    """
    p = params or SPOCUParams()
    u2 = r_facts()["stationary_points"][2]
    rb = float(r(p.beta))
    off_s, off_ds = _off_branch_maxima(p, u2)
    if math.isfinite(p.c):
        lo, hi = spocu_range(p)
        top_ds = p.alpha / p.gamma * float(r_prime(p.c)) if p.c > u2 else 0.0
        smallest = min(spec.max for spec in DTYPES)
        if max(abs(lo), abs(hi), off_s, off_ds, top_ds) <= smallest:
            raise ValueError(f"SPOCU with c={p.c:g} is bounded (range {spocu_range(p)}); it cannot overflow")
    start = p.gamma * (u2 - p.beta)  # s and s' increase from here on

    def x_at(u: float | None) -> float | None:
        if u is None:
            return None
        with np.errstate(over="ignore"):
            x = p.gamma * (u - p.beta)
        return x if math.isfinite(x) else None

    def s_crossing(level: float) -> float | None:
        with np.errstate(over="ignore"):
            target = level / p.alpha + rb
        return x_at(rising_crossing(r, target, u2, p.c))

    def ds_crossing(level: float) -> float | None:
        with np.errstate(over="ignore"):
            target = level * p.gamma / p.alpha
        return x_at(rising_crossing(r_prime, target, u2, p.c))

    rows = []
    for spec in DTYPES:
        notes = []
        if off_s > spec.max or off_ds > spec.max:
            which = " and ".join(n for n, v in (("|s|", off_s), ("|s'|", off_ds)) if v > spec.max)
            notes.append(f"{which} already exceed(s) {spec.name}'s range left of x = {start:.4g} (flat tail or local "
                         "extrema): the thresholds describe only the rising branch above it")  # fmt: skip
        row: dict[str, Any] = {
            "dtype": spec.name,
            "max": spec.max,
            "s_exceeds_max_above": s_crossing(spec.max),
            "grad_exceeds_max_above": ds_crossing(spec.max),
        }
        dtype = spec.numpy_dtype()
        if dtype is None:
            row.update(output_inf_from=None, naive_inf_from=None, naive_nan_from=None)
            notes.append("ml_dtypes is not installed: no bfloat16 evaluation")
        else:
            inf_at = s_crossing(spec.rounds_to_inf_at)
            row["output_inf_from"] = _next_up(inf_at, dtype) if inf_at is not None and inf_at <= spec.max else None
            top = spec.max
            if math.isfinite(p.c):
                row.update(naive_inf_from=None, naive_nan_from=None)  # the literal formula has no c
            elif start < top:
                row["naive_inf_from"] = _first_representable(
                    lambda v: not np.isfinite(naive_spocu(v, p, dtype)), dtype, start, top
                )
                row["naive_nan_from"] = _first_representable(
                    lambda v: bool(np.isnan(naive_spocu(v, p, dtype))), dtype, start, top
                )
            else:
                row.update(naive_inf_from=None, naive_nan_from=None)
        if row["s_exceeds_max_above"] is None:
            notes.append(f"s stays below {spec.name}'s largest value for every float64 input on the rising branch")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return rows


def figure_formats() -> dict[str, str]:
    """The figure formats matplotlib can write here: suffix -> description.

    Examples:
        >>> "png" in figure_formats() and "svg" in figure_formats()
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backend_bases import FigureCanvasBase

    return dict(FigureCanvasBase.get_supported_filetypes())


def plot_shape(path: str, params: SPOCUParams | None = None) -> None:
    """Write a figure of s and s' for c = ∞ and c = 1 (the other parameters from ``params``).

    Raises:
        ValueError: when the suffix of ``path`` is not a format matplotlib writes
            (checked before anything is drawn or written).
    """
    import os

    suffix = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    formats = figure_formats()
    if suffix not in formats:
        raise ValueError(f"cannot write a figure as {suffix!r}; use one of {', '.join(sorted(formats))}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spocu._atomic import atomic_savefig
    from spocu.core import reference_spocu, reference_spocu_grad

    base = params or SPOCUParams()
    x = np.linspace(-6.0, 9.0, 3001)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    styles = ((math.inf, "c = ∞", "C0", "-"), (1.0, "c = 1", "C1", "--"))
    for c, label, color, ls in styles:
        p = SPOCUParams(base.alpha, base.beta, base.gamma, c)
        axes[0].plot(x, reference_spocu(x, **p.as_dict()), color=color, ls=ls, lw=2, label=label)
        axes[1].plot(x, reference_spocu_grad(x, **p.as_dict()), color=color, ls=ls, lw=2, label=label)
    p = SPOCUParams(base.alpha, base.beta, base.gamma, math.inf)
    facts = spocu_facts(p)
    for ax in axes:
        ax.axhline(0, color="0.6", lw=0.8)
        ax.axvline(0, color="0.6", lw=0.8)
        ax.axvline(p.lower_bound, color="0.4", lw=0.8, ls=":")
        ax.axvline(base.gamma * (1 - base.beta), color="0.4", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        ax.set_xlabel("x")
    for e in facts["extrema"]:
        axes[0].plot([e["x"]], [e["s"]], "o", color="C0")
        axes[0].annotate(f"{e['kind']}\n({e['x']:.3f}, {e['s']:.3f})", (e["x"], e["s"]), textcoords="offset points",
                         xytext=(8, -4 if e["kind"] == "local max" else 6), fontsize=8)  # fmt: skip
    axes[0].annotate(f"x = −γβ = {p.lower_bound:.3f}\ns = {p.lower_value:.4f}", (p.lower_bound, p.lower_value),
                     textcoords="offset points", xytext=(-70, 20), fontsize=8)  # fmt: skip
    axes[0].set_ylim(-11, 9)
    grad_min = float(np.min(reference_spocu_grad(x, **p.as_dict())))
    axes[1].set_ylim(1.15 * grad_min, 8)
    axes[0].set_title(f"SPOCU s(x)   (α = {base.alpha:g}, β = {base.beta:g}, γ = {base.gamma:g})")
    axes[1].set_title(f"derivative s'(x);  s'(0) = {facts['slope_at_zero']:.4f}")
    atomic_savefig(fig, path, dpi=130)
    plt.close(fig)
