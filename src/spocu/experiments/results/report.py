"""report.md, curves.png and activations.png from an assembled ``results.json`` dict.

Figures use matplotlib's object API on the Agg canvas (no display, no global backend change)
and are written atomically like every other output.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

from spocu.experiments.activations import parse_activation
from spocu._atomic import atomic_write_bytes, atomic_write_text

__all__ = ["write_report", "render_report", "plot_curves", "plot_activations", "fmt_p"]


def _f(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.{digits}g}"


def fmt_p(value) -> str:
    """A p-value for a table: 3 significant digits, '<0.0001' below that."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.3g}"


def _seconds(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g} s"


def _signed(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if abs(value) < 1000 else f"{value:+.{digits}g}"


def render_report(results: dict) -> str:
    """The Markdown report (tables, notes, figures, protocol) for ``results``."""
    cfg, ds, summary = results["config"], results["dataset"], results["summary"]
    reference = results["reference"]
    activations = cfg["activations"]
    seeds = cfg["seeds"]
    model = cfg["model"]
    model_label = _model_label(model)
    lines = [
        f"# spocu compare: {ds['name']}, {model_label} -- {', '.join(activations)}",
        "",
        f"{len(seeds)} seeds per activation ({', '.join(map(str, seeds))}), paired: a seed gives every activation "
        "the same batch order and the same initial draws (scaled by each activation's init). "
        f"Test set: {ds['test']} samples ({ds.get('test_split', '')}), evaluated once per run after the last epoch "
        f"(epoch {cfg['epochs']}); no model selection on it.",
        "",
        "## Test accuracy and loss",
        "",
        "| activation | init | test accuracy (mean ± sd) | 95% CI of the mean | test loss (mean ± sd) | test loss (median) | s/epoch (median) | parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    grouped: dict[str, list[str]] = {}  # the same statistical caveat for several activations: one line
    for name in activations:
        s = summary[name]
        acc, loss = s["test_accuracy"], s["test_loss"]
        ci = f"[{_f(acc['ci_low'])}, {_f(acc['ci_high'])}]" if acc["ci_low"] is not None else "n/a"
        lines.append(
            f"| {name} | {s['init']} | {_f(acc['mean'])} ± {_f(acc['sd'])} | {ci} | {_f(loss['mean'])} ± {_f(loss['sd'])} "
            f"| {_f(loss['median'])} | {_seconds(s['seconds_per_epoch']['median'])} | {s['num_parameters']:,} |"
        )
        for label, stat in (("test accuracy", acc), ("test loss", loss)):
            if stat["note"]:
                grouped.setdefault(stat["note"], []).append(f"{name} {label}")
        if loss["sd"] is not None and loss["median"] is not None and loss["mean"] > 10 * max(loss["median"], 1e-12):
            notes.append(
                f"{name}: the mean test loss is dominated by a few seeds (mean {_f(loss['mean'])}, median {_f(loss['median'])}): "
                "some test samples get huge, confidently wrong logits; see results.json for the per-seed values."
            )
        if s["diverged"]:
            notes.append(f"{name}: training diverged (non-finite loss) for seed(s) {', '.join(map(str, s['diverged']))}; their test metrics are those of the diverged network.")
    if results["comparisons"]:
        lines += [
            "",
            f"## Each activation against {reference}, paired by seed",
            "",
            "Δ = activation − reference. p-values are Holm-corrected over the comparisons; "
            "McNemar counts the seeds whose two networks differ significantly (exact test, p < 0.05) on the shared test set.",
            "",
            "| activation | Δ test accuracy (95% CI) | p paired t | p Wilcoxon | Δ test loss (95% CI) | p paired t | McNemar p < 0.05 |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in results["comparisons"]:
            acc, loss = c["test_accuracy"], c["test_loss"]
            lines.append(
                f"| {c['activation']} | {_signed(acc['mean_difference'])} [{_signed(acc['ci_low'])}, {_signed(acc['ci_high'])}] "
                f"| {fmt_p(acc['p_ttest_holm'])} | {fmt_p(acc['p_wilcoxon_holm'])} "
                f"| {_signed(loss['mean_difference'])} [{_signed(loss['ci_low'])}, {_signed(loss['ci_high'])}] | {fmt_p(loss['p_ttest_holm'])} "
                f"| {c['mcnemar_significant']} of {len(c['mcnemar'])} seeds |"
            )
            for label, stat in (("accuracy", acc), ("loss", loss)):
                if stat["note"]:
                    grouped.setdefault(stat["note"], []).append(f"{c['activation']} vs {reference}, {label}")
    small = sorted({c["test_accuracy"]["n"] for c in results["comparisons"] if 2 <= c["test_accuracy"]["n"] < 6})
    if small:
        notes.append(
            f"With n = {small[0]} paired seeds the two-sided Wilcoxon test cannot give p below {2 / 2 ** small[0]:.3g}: "
            "read its p-values as a robustness check of the t-test, not as a verdict; more seeds (--seeds) sharpen both."
        )
    for bad in results.get("skipped_runs", []):
        notes.append(f"Left out of every statistic (--skip-bad-runs): {bad['path']}: {bad['reason']}.")
    notes = [f"{text} ({'; '.join(subjects)})." for text, subjects in grouped.items()] + notes
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    lines += [
        "",
        "## Learning curves",
        "",
        "Mean over seeds; the band spans the lowest to the highest seed. Training values are the mean over each epoch's minibatches; "
        "validation values are measured after the epoch on the held-out validation split.",
        "",
        "![learning curves](curves.png)",
        "",
        "## The compared functions",
        "",
        "![activations and derivatives](activations.png)",
        "",
        "## Protocol",
        "",
        f"- Data: {ds['name']} ({ds.get('origin', '')}); train {ds['train']:,}, validation {ds['val']:,}, test {ds['test']:,}; "
        f"validation split: {ds.get('val_split', '')}; split seed {ds.get('split_seed')}; {ds.get('preprocessing', '')}; "
        f"data fingerprint {ds['fingerprint']}"
        + (f", file content sha256 {ds['content_sha256']}" if ds.get("content_sha256") else "")
        + ".",
        *_data_lines(ds),
        f"- Model: {model_label}"
        + (f" (source sha256 {model['source_sha256']})" if model.get("source_sha256") else "")
        + f"; optimizer {cfg['optimizer']} (lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g}"
        + (f", momentum {cfg['momentum']:g}" if cfg["optimizer"] in ("sgd", "rmsprop") else "")
        + (f"; x0.1 at epochs {', '.join(map(str, cfg['lr_milestones']))}" if cfg.get("lr_milestones") else "")
        + f"), batch {cfg['batch_size']}, {cfg['epochs']} epochs, cross-entropy loss, framework {cfg['framework']}"
        + (f" ({cfg['keras_backend']} backend)" if cfg.get("keras_backend") else "")
        + (f"; preset {cfg['preset']}" if cfg.get("preset") else "")
        + ".",
        *(f"- Preset {cfg['preset']}: {what} -- from {source}." for what, source in results.get("preset_provenance", {}).items()),
        "- Initialization (all Linear/Conv weights; biases zero; a model factory's own init is its code's):",
    ]
    for name in activations:
        lines.append(f"  - {name}: {summary[name]['init']} ({summary[name]['init_reason']})")
    env = results["environment"]
    hw, versions = env["hardware"], env["versions"]
    runs = results["runs"]
    threads = sorted({r["threads"] for r in runs if r.get("threads") is not None})
    devices = sorted({r["device"] for r in runs})
    lines += [
        f"- Hardware: {hw.get('cpu')} ({hw.get('usable_cpus')} usable CPUs), device {', '.join(devices)}"
        + (f", {', '.join(map(str, threads))} thread(s)" if threads else "")
        + f"; {hw.get('platform')}.",
        *_scale_lines(env, runs),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "- Statistics: mean ± sample sd over seeds; 95% CI of the mean by bootstrap (scipy.stats.bootstrap, BCa, 9,999 resamples; "
        "with few seeds it is narrower than a t interval would be); "
        "paired t-test (scipy.stats.ttest_rel, with its t-based CI of the mean difference) and Wilcoxon signed-rank test (scipy.stats.wilcoxon) "
        "against the reference, Holm-corrected (statsmodels multipletests); McNemar's exact test per seed "
        "(statsmodels), which reflects test-set sampling only, not seed-to-seed variation.",
        "- Files: results.json (everything, including per-run predictions), epochs.csv (one row per run and epoch), runs/ (one JSON per run).",
        "",
    ]
    return "\n".join(lines)


def _model_label(model: dict) -> str:
    if model.get("source_sha256") is not None or ":" in model["name"]:  # a user's factory
        return model["name"] + (f" with every {model['swap']} swapped for the compared activation" if model.get("swap") else "")
    if model["name"] in ("seed-cnn", "resnet20"):
        return model["name"]
    return f"{model['name']} " + "-".join(map(str, model["hidden"]))


def _data_lines(ds: dict) -> list[str]:
    """The user's data: how labels were numbered, which columns were one-hot encoded."""
    lines = []
    if ds.get("class_mapping"):
        target = f" (column {ds['target']})" if ds.get("target") else ""
        mapping = ", ".join(f"{name} → {number}" for name, number in ds["class_mapping"].items())
        lines.append(f"- Classes{target}, numbered in sorted order: {mapping}.")
    if ds.get("one_hot"):
        encoded = "; ".join(f"{column}: {', '.join(categories)}" for column, categories in ds["one_hot"].items())
        lines.append(
            f"- One-hot encoded columns (scikit-learn OneHotEncoder, categories of the training split): {encoded}."
        )
    elif "one_hot" in ds:
        lines.append("- One-hot encoded columns: none (every feature column is numeric).")
    return lines


def _scale_lines(env: dict, runs: list[dict]) -> list[str]:
    """How the runs were spread over processes: torchrun data-parallel, or --jobs."""
    lines = []
    setups: dict[tuple, int] = {}
    for r in runs:
        d = (r.get("extra") or {}).get("distributed")
        if d:
            key = (d["world_size"], d["backend"], d["per_process_batch"], d["global_batch"])
            setups[key] = setups.get(key, 0) + 1
    for (world, backend, per_process, global_batch), count in sorted(setups.items()):
        lines.append(
            f"- Data-parallel: {count} of {len(runs)} runs trained by {world} processes (torchrun, DistributedDataParallel, {backend}), "
            f"batch {per_process} per process = global batch {global_batch}."
        )
    parallel = env.get("parallel")
    if parallel and parallel.get("executor") == "ray":
        threads = parallel.get("threads_per_job")
        at_once = f"at most {parallel['jobs']} at a time" if parallel.get("jobs") else "as many at a time as its resources allowed"
        lines.append(
            f"- Runs trained as Ray tasks, one per run, on a Ray cluster of {parallel.get('cluster', 'unknown size')}, {at_once}"
            + (f", {threads} thread(s) each." if threads else ".")
        )
    elif parallel:
        threads = parallel.get("threads_per_job")
        lines.append(
            f"- Runs trained {parallel['jobs']} at a time in separate processes" + (f", {threads} thread(s) each." if threads else ".")
        )
    return lines


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def plot_curves(results: dict) -> bytes:
    """PNG of train/validation accuracy and loss per epoch: mean over seeds, min-max band."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.5))
    axes = figure.subplots(2, 2, sharex=True)
    panels = [("train_accuracy", "training accuracy"), ("val_accuracy", "validation accuracy"), ("train_loss", "training loss"), ("val_loss", "validation loss")]
    colors = [f"C{i}" for i in range(10)]
    positive = set()  # the loss panels get a log scale only if they hold something to scale (all-diverged: nothing)
    for i, name in enumerate(results["config"]["activations"]):
        runs = [r for r in results["runs"] if r["activation"] == name]
        epochs = max((len(r["epochs"]) for r in runs), default=0)
        for ax, (key, title) in zip(axes.flat, panels):
            values = np.full((len(runs), epochs), np.nan)
            for row, run in enumerate(runs):
                for e in run["epochs"]:
                    values[row, e["epoch"] - 1] = np.nan if e[key] is None else e[key]
            x = np.arange(1, epochs + 1)
            with warnings.catch_warnings():  # an all-NaN column (a diverged epoch) is fine to plot as a gap
                warnings.simplefilter("ignore", RuntimeWarning)
                mean, low, high = np.nanmean(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
            color = colors[i % len(colors)]
            if np.any(np.isfinite(values) & (values > 0)):
                positive.add(key)
            ax.plot(x, mean, color=color, label=name, lw=1.6)
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
            ax.set_title(title)
    for ax, (key, _) in zip(axes[1], panels[2:]):
        ax.set_xlabel("epoch")
        if key in positive:
            ax.set_yscale("log")
    axes[0][0].legend(loc="lower right")
    figure.suptitle(f"{results['dataset']['name']}: mean over {len(results['config']['seeds'])} seeds, band = min..max")
    return _png(figure)


def plot_activations(activations: list[str], x_range: tuple[float, float] = (-4.0, 4.0)) -> bytes:
    """PNG of each activation and its derivative (PyTorch autograd) on ``x_range``."""
    import torch
    from matplotlib.figure import Figure

    x = torch.linspace(*x_range, 801, dtype=torch.float32, requires_grad=True)
    figure = Figure(figsize=(11, 4.2))
    ax_f, ax_d = figure.subplots(1, 2)
    for i, name in enumerate(activations):
        module = parse_activation(name).torch_module()
        y = module(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        ax_f.plot(x.detach(), y.detach(), color=f"C{i % 10}", label=name)
        ax_d.plot(x.detach(), dy, color=f"C{i % 10}", label=name)
    for ax, title in ((ax_f, "f(x)"), (ax_d, "f'(x)")):
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("x")
    ax_f.legend()
    return _png(figure)


def write_report(root: Path, results: dict) -> Path:
    """Write curves.png, activations.png and report.md into ``root``; return the report's path."""
    atomic_write_bytes(root / "curves.png", plot_curves(results))
    atomic_write_bytes(root / "activations.png", plot_activations(results["config"]["activations"]))
    path = root / "report.md"
    atomic_write_text(path, render_report(results))
    return path
