"""``spocu analyze``: does a deep network stay normalized? Figures and a Markdown summary.

Compares SPOCU (copied defaults and fitted parameters, c = ∞ and c = 1), SELU and ReLU
(He init) in a deep random network (:func:`spocu.science.propagation.simulate`) and under
the analytic mean/second-moment map iterated from several starting second moments.

Writes into ``out``: ``network_moments.png``, ``final_distribution.png``,
``variance_map.png``, ``summary.md`` and ``results.json`` (every file atomically).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from spocu._atomic import atomic_savefig, atomic_write_text
from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA
from spocu.science.fitting import _jsonable, fit
from spocu.science.propagation import (
    RELU_HE,
    SELU_LECUN,
    Contender,
    analytic_runs,
    fixed_points,
    simulate,
    spocu_contender,
)

__all__ = ["contenders", "analyze"]

DEFAULT_STARTS = (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def contenders() -> list[Contender]:
    """SPOCU default/fitted × c = ∞/1, SELU, ReLU (He init)."""
    defaults = {"alpha": DEFAULT_ALPHA, "beta": DEFAULT_BETA, "gamma": DEFAULT_GAMMA}
    out = [
        spocu_contender("SPOCU default, c=∞", dict(defaults, c=math.inf)),
        spocu_contender("SPOCU default, c=1", dict(defaults, c=1.0)),
    ]
    for c, label in ((math.inf, "∞"), (1.0, "1")):
        result = fit(fixed={"c": c}, starts=1)
        if result.solved and result.parameters is not None:  # never plot a non-solution as "fitted"
            out.append(spocu_contender(f"SPOCU fitted, c={label}", result.parameters))
    return [*out, SELU_LECUN, RELU_HE]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _params_text(c: Contender) -> str:
    if not c.params:
        return "-"
    return ", ".join(f"{k} = {_num(v, 5)}" for k, v in c.params.items())


def _num(v: float | None, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.{digits}g}"


def analyze(
    out: str | os.PathLike[str] = "spocu-analysis",
    depth: int = 50,
    width: int = 256,
    batch: int = 512,
    seed: int = 0,
    starts: Sequence[float] = DEFAULT_STARTS,
) -> dict[str, Any]:
    """Run the comparison, write the figures, ``summary.md`` and ``results.json`` into ``out``.

    Returns the results dict (the content of ``results.json``).
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory")
    starts = [float(v) for v in starts]
    if not starts or not all(v > 0 and math.isfinite(v) for v in starts):
        raise ValueError(f"starting second moments must be positive numbers, got {starts}")
    players = contenders()
    runs = simulate(players, depth=depth, width=width, batch=batch, seed=seed)
    analytic = {c.name: analytic_runs(c, sorted(set(starts) | {1.0}), depth) for c in players}
    fixed = {c.name: fixed_points(c) for c in players}
    os.makedirs(out, exist_ok=True)

    plt = _plt()
    layers = np.arange(depth + 1)
    colors = {c.name: f"C{i}" for i, c in enumerate(players)}

    # 1. per-layer mean and variance, network (solid) vs analytic map from the inputs' (0, 1) (dashed)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for c in players:
        run = runs[c.name]
        label = c.name + (f" (diverged at layer {run.diverged_at})" if run.diverged_at else "")
        axes[0].plot(layers, run.means, color=colors[c.name], lw=1.8, label=label)
        axes[1].plot(layers, run.variances, color=colors[c.name], lw=1.8, label=label)
        means, seconds = analytic[c.name][1.0]
        axes[0].plot(layers, means, color=colors[c.name], lw=1, ls="--")
        axes[1].plot(layers, seconds - means**2, color=colors[c.name], lw=1, ls="--")
        if run.diverged_at:  # mark where the run left the plotted range for good
            axes[0].plot([run.diverged_at], [1.15], marker="x", ms=9, mew=2, color=colors[c.name], clip_on=False)
            axes[1].plot([run.diverged_at], [9.0], marker="x", ms=9, mew=2, color=colors[c.name], clip_on=False)
    axes[0].set_title("mean of the activations per layer")
    axes[1].set_title("variance of the activations per layer (×: diverged)")
    axes[0].set_ylim(-0.4, 1.2)
    axes[1].set_yscale("log")
    axes[1].set_ylim(0.2, 10.0)
    for ax in axes:
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle(
        f"random network, width {width}, batch {batch}, LeCun init (ReLU: He); dashed: analytic map", fontsize=10
    )
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.24, top=0.88, wspace=0.18)
    atomic_savefig(fig, os.path.join(out, "network_moments.png"), dpi=110)
    plt.close(fig)

    # 2. the distribution after the last (finite) layer
    cols = 3
    rows = math.ceil(len(players) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, c in zip(axes.ravel(), players):
        run = runs[c.name]
        values = run.final_values
        lo, hi = np.quantile(values, [0.001, 0.999])
        density, edges = np.histogram(values, bins=120, range=(lo, hi), density=True)
        ax.stairs(density, edges, fill=True, color=colors[c.name], alpha=0.8)
        last = depth if run.diverged_at is None else run.diverged_at - 1
        note = "" if run.diverged_at is None else f" (diverged at {run.diverged_at})"
        ax.set_title(f"{c.name}\nafter layer {last}{note}; max |x| = {np.max(np.abs(values)):.3g}", fontsize=9)
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(players) :]:
        ax.axis("off")
    fig.suptitle("activations after the last layer (central 99.8%; log density)", fontsize=10)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.86, hspace=0.55, wspace=0.3)
    atomic_savefig(fig, os.path.join(out, "final_distribution.png"), dpi=110)
    plt.close(fig)

    # 3. the analytic second-moment map iterated from several starts
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, c in zip(axes.ravel(), players):
        for nu0 in starts:
            _, seconds = analytic[c.name][nu0]
            ax.plot(layers, np.where(np.isfinite(seconds), seconds, np.nan), lw=1.2, label=f"ν₀ = {nu0:g}")
        points = fixed[c.name]
        title = c.name
        if points is None:
            title += "\nidentity map: every ν is kept"
        else:
            for p in points:
                ax.axhline(p["second_moment"], color="k", ls=":" if p["slope"] < 1 else "--", lw=0.9)
            title += "\nfixed points " + ", ".join(
                f"{p['second_moment']:.4g} ({'stable' if p['slope'] < 1 else 'unstable'})" for p in points
            )
        ax.set_title(title, fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(0.05, 1e3)
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
    axes.ravel()[0].set_ylabel("second moment E[x²]")
    axes.ravel()[0].legend(fontsize=7)
    for ax in axes.ravel()[len(players) :]:
        ax.axis("off")
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.9, hspace=0.45, wspace=0.22)
    atomic_savefig(fig, os.path.join(out, "variance_map.png"), dpi=110)
    plt.close(fig)

    results: dict[str, Any] = {
        "setup": {"depth": depth, "width": width, "batch": batch, "seed": seed, "starting_second_moments": starts},
        "activations": {},
    }
    for c in players:
        run = runs[c.name]
        last = depth if run.diverged_at is None else run.diverged_at - 1
        results["activations"][c.name] = {
            "parameters": c.params,
            "init_gain": c.gain,
            "network": {
                "mean": run.means.tolist(),
                "variance": run.variances.tolist(),
                "second_moment": run.second_moments.tolist(),
                "diverged_at": run.diverged_at,
                "last_finite_layer": last,
            },
            "analytic": {
                f"{k:g}": {"mean": v[0].tolist(), "second_moment": v[1].tolist()} for k, v in analytic[c.name].items()
            },
            "fixed_points": fixed[c.name],
        }
    atomic_write_text(os.path.join(out, "results.json"), json.dumps(_jsonable(results), indent=1, allow_nan=False))
    atomic_write_text(os.path.join(out, "summary.md"), _summary(players, runs, analytic, fixed, results["setup"]))
    return results


def _summary(players, runs, analytic, fixed, setup) -> str:
    depth = setup["depth"]
    lines = [
        "# SPOCU moment propagation",
        "",
        f"Random fully-connected network: depth {depth}, width {setup['width']}, batch {setup['batch']}, seed {setup['seed']};",
        "standardized Gaussian inputs; weights N(0, 1/width) (LeCun), ReLU N(0, 2/width) (He); no biases.",
        "Analytic map: second moment ν ↦ E[s(z)²], z ~ N(0, g·ν) (g = init gain), the mean-field limit of that network.",
        "",
        "| activation | parameters | network: variance at layer 1 / last | network: mean at last | diverged at layer "
        "| analytic fixed points ν* (slope) | analytic ν from ν₀ = 1 at last layer |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in players:
        run = runs[c.name]
        last = depth if run.diverged_at is None else run.diverged_at - 1
        points = fixed[c.name]
        fp = (
            "identity (all ν)"
            if points is None
            else "; ".join(f"{p['second_moment']:.4f} ({p['slope']:.3f})" for p in points) or "none in [0.02, 6]"
        )
        seconds = analytic[c.name][1.0][1]
        lines.append(
            f"| {c.name} | {_params_text(c)} | {_num(run.variances[1])} / {_num(run.variances[last])} | "
            f"{_num(run.means[last], 3)} | {run.diverged_at or '-'} | {fp} | {_num(seconds[-1])} |"
        )
    lines += ["", "## Reading", ""]
    for c in players:
        points = fixed[c.name]
        run = runs[c.name]
        if points is None:
            lines.append(f"- **{c.name}**: the map keeps every second moment (slope 1): nothing pulls the scale back, "
                         "so finite-width fluctuations accumulate with depth.")  # fmt: skip
            continue
        stable = [p for p in points if p["slope"] < 1]
        unstable = [p for p in points if p["slope"] > 1]
        text = f"- **{c.name}**: "
        if stable:
            p = stable[0]
            mean = round(p["mean"], 4) + 0.0  # no "-0.0000"
            text += f"attracted to ν* = {p['second_moment']:.4f} (mean {mean:.4f}, variance {p['variance']:.4f}; slope {p['slope']:.3f})"
        if unstable:
            text += (f"; a repelling fixed point at ν = {unstable[0]['second_moment']:.4f}: layers whose second moment "
                     "exceeds it blow up (x⁸ growth)")  # fmt: skip
        if run.diverged_at:
            text += f". In the finite network it diverged at layer {run.diverged_at}"
        lines.append(text + ".")
    lines += [
        "",
        "Figures: `network_moments.png` (per-layer mean and variance; dashed = analytic), "
        "`final_distribution.png` (activations after the last layer), `variance_map.png` "
        "(analytic map from several starting second moments). Numbers: `results.json`.",
        "",
    ]
    return "\n".join(lines)
