"""report.md, curves.png and activations.png from an assembled ``results.json`` dict.

Figures use matplotlib's object API on the Agg canvas (no display, no global backend change)
and are written atomically like every other output.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path

from spocu._atomic import atomic_write_bytes, atomic_write_text
from spocu.experiments.activations import ActivationSpec, parse_activation

__all__ = ["write_report", "render_report", "plot_curves", "plot_activations", "fmt_p", "verdict_sentences", "glossary"]


def _f(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.{digits}g}"


def fmt_p(value: float | None) -> str:
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


def _runs(summary: dict) -> str:
    k = len(summary.get("diverged", []))
    n = summary.get("runs")
    return "n/a" if n is None else f"{n} ({k} of {n} diverged)" if k else f"{n} (0 diverged)"


def _g(value) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _share(robust: dict) -> str:
    share = robust.get("huge_logit_share")
    if share is None:
        return "n/a"
    runs = robust.get("runs_with_huge_logits") or 0
    return f"{100 * share:.2g}%" + (f" ({runs} of {robust.get('runs_recorded')} runs)" if runs else "")


def _points(value) -> str:
    return "n/a" if value is None else f"{value:.2g}" if abs(value) < 10 else f"{value:.1f}"


def _needed(verdict: dict) -> str:
    if verdict["label"] != "inconclusive":
        return "—"
    if verdict.get("seeds_needed") is not None:
        return f"about {verdict['seeds_needed']}"
    return "more seeds alone would not settle it" if verdict.get("p_better") is not None else "n/a"


def verdict_sentences(results: dict) -> list[str]:
    """One plain sentence per contender: its verdict against the reference, with the probability behind it.

    Example:
        >>> v = {"label": "equivalent", "rope": 0.5, "p_better": 0.02, "p_equivalent": 0.96, "p_worse": 0.02,
        ...      "mean_difference": 0.1, "min_detectable_difference": 0.8, "seeds_needed": None, "n": 5}
        >>> verdict_sentences({"reference": "spocu", "comparisons": [{"activation": "relu", "verdict": v}], "summary": {}})
        ['relu vs spocu: practically equivalent (P = 0.96 that the difference is within ±0.5 points)']
    """
    sentences = []
    reference = results["reference"]
    for c in results["comparisons"]:
        v, name = c["verdict"], c["activation"]
        rope = _points(v["rope"])
        label = v["label"]
        if label == "equivalent":
            text = f"practically equivalent (P = {v['p_equivalent']:.2f} that the difference is within ±{rope} points)"
        elif label == "better":
            text = f"{name} is better (P = {v['p_better']:.2f} that it is more than {rope} points more accurate; mean Δ {v['mean_difference']:+.2f} points)"
        elif label == "worse":
            text = f"{name} is worse (P = {v['p_worse']:.2f} that it is more than {rope} points less accurate; mean Δ {v['mean_difference']:+.2f} points)"
        elif v.get("p_better") is None:
            text = f"inconclusive ({v.get('note') or 'no posterior'})"
        else:
            needed = v.get("seeds_needed")
            more = (
                f"about {needed} seeds would likely settle it"
                if needed is not None
                else "more seeds alone would likely not settle it at this test-set size"
            )
            text = (
                f"inconclusive (P = {v['p_better']:.2f} better, {v['p_equivalent']:.2f} within ±{rope} points, {v['p_worse']:.2f} worse; "
                f"mean Δ {v['mean_difference']:+.2f} points, smallest detectable difference {_points(v['min_detectable_difference'])} points; {more})"
            )
        diverged = [
            f"{who} diverged on {len(results['summary'][who]['diverged'])} of {results['summary'][who].get('runs', '?')} seeds"
            for who in (name, reference)
            if results["summary"].get(who, {}).get("diverged")
        ]
        if diverged:
            text += f"; {' and '.join(diverged)} (left out)"
        sentences.append(f"{name} vs {reference}: {text}")
    return sentences


def glossary(results: dict) -> list[str]:
    """'How to read this report': one line per statistic, and one worked example that reads the first verdict."""
    analysis = results.get("analysis", {})
    rope = _points(analysis.get("rope"))
    per_seed = results["dataset"].get("split") == "per-seed"
    lines = [
        "## How to read this report",
        "",
        "- **mean ± sd**: the average over seeds, and how much one seed's result varies around it (sample sd).",
        "- **95% CI of the mean**: a Student-t interval that holds the true mean over seeds"
        + (" (and over splits)" if per_seed else "")
        + " in 95% of experiments like this one.",
        "- **runs (diverged)**: n runs, and how many ended with a non-finite loss; diverged runs are left out of every statistic and the verdict.",
        "- **test loss (median)**: the median over seeds of each run's mean test loss, which one exploding seed cannot move (the mean can).",
        "- **per-sample loss (median)**: the median over seeds of each run's median per-sample test loss, which a few exploding samples cannot move.",
        "- **samples with |logit| > 1e6**: the share of test samples (mean over runs) whose largest logit exceeds 10^6 in magnitude, "
        "or is not finite: they alone can make a mean loss astronomical.",
        "- **Δ**: activation minus reference, paired by seed (same data, batch order and initial draws).",
        "- **Δ interval**: a t interval at the Bonferroni level, so that the intervals of all comparisons hold together at 95%; "
        "one that excludes 0 implies a Holm p below 0.05.",
        "- **p t-test**: the probability of a mean Δ this far from 0 if the activations were equally good"
        + (", with the variance inflated for overlapping training sets (Nadeau–Bengio)" if per_seed else "")
        + "; Holm-corrected for the number of comparisons.",
        "- **p Wilcoxon**: a rank test of the same question that does not assume normal differences; with few seeds it cannot get small.",
        "- **pooled p**: whether the two networks err on different test samples more than chance allows, over all seeds × test samples "
        "(Cochran–Mantel–Haenszel); it treats test samples as independent, so it speaks about these test sets, not about new data.",
        f"- **P(better), P(equivalent), P(worse)**: the posterior probability that the true mean Δ is above +{rope}, within ±{rope}, "
        f"or below −{rope} accuracy points (the region of practical equivalence, --rope), from the Bayesian correlated t-test.",
        f"- **verdict**: better, worse or equivalent when its probability is at least {analysis.get('decision_probability', 0.95):.4g}, "
        "else inconclusive (1 − 0.05/m for m contenders, Bonferroni: all the report's verdicts hold together at 95%).",
        "- **smallest detectable Δ**: the true difference this many seeds would detect 80% of the time (two-sided, α = 0.05), given the seed-to-seed sd.",
        "- **seeds likely needed**: for an inconclusive verdict, the seeds at which the deciding test would have 80% power "
        "if the observed mean and sd were the truth.",
    ]
    example = next(iter(results["comparisons"]), None)
    if example is not None and example["verdict"].get("p_better") is not None:
        v, name, reference = example["verdict"], example["activation"], results["reference"]
        reading = {
            "better": f"so at least {analysis.get('decision_probability', 0.95):.4g} of the posterior lies above +{rope}: {name} is practically better.",
            "worse": f"so at least {analysis.get('decision_probability', 0.95):.4g} of the posterior lies below −{rope}: {name} is practically worse.",
            "equivalent": f"so at least {analysis.get('decision_probability', 0.95):.4g} of the posterior lies within ±{rope}: the two are practically equivalent.",
            "inconclusive": f"so none reaches {analysis.get('decision_probability', 0.95):.4g} and the run cannot tell yet"
            + (
                f"; about {v['seeds_needed']} seeds would likely settle it."
                if v.get("seeds_needed")
                else "; more seeds alone would likely not settle it."
            ),
        }[v["label"]]
        lines += [
            "",
            f"Worked example, {name} vs {reference}: over {v['n']} paired seeds {name} scored {v['mean_difference']:+.2f} points on average "
            f"against {reference}. Given the spread between seeds, the true mean difference is above +{rope} points with probability "
            f"{v['p_better']:.2f}, within ±{rope} with {v['p_equivalent']:.2f} and below −{rope} with {v['p_worse']:.2f}, {reading} "
            f"With this spread a difference of {_points(v['min_detectable_difference'])} points would be detected 80% of the time.",
        ]
    return lines


def render_report(results: dict) -> str:
    """The Markdown report (tables, notes, figures, protocol) for ``results``."""
    cfg, ds, summary = results["config"], results["dataset"], results["summary"]
    reference = results["reference"]
    activations = cfg["activations"]
    seeds = cfg["seeds"]
    model = cfg["model"]
    model_label = _model_label(model)
    per_seed = ds.get("split") == "per-seed"
    lines = [
        f"# spocu compare: {ds['name']}, {model_label} -- {', '.join(activations)}",
        "",
        *[f"- **{sentence}**" for sentence in verdict_sentences(results)],
        "",
        f"{len(seeds)} seeds per activation ({', '.join(map(str, seeds))}), paired: a seed gives every activation "
        "the same batch order and the same initial draws (scaled by each activation's init). "
        + (
            "Each seed draws its own stratified train/validation/test split (--split per-seed), the same for every activation of that seed. "
            if per_seed
            else ""
        )
        + f"Test set: {ds['test']} samples ({ds.get('test_split', '')}), evaluated once per run after the last epoch "
        f"(epoch {cfg['epochs']}); no model selection on it.",
        "",
        "## Test accuracy and loss",
        "",
        "| activation | runs (diverged) | init | test accuracy (mean ± sd) | 95% CI of the mean | test loss (mean ± sd) | test loss (median) "
        "| per-sample loss (median) | samples with \\|logit\\| > 1e6 | s/epoch (median) | parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    grouped: dict[str, list[str]] = {}  # the same statistical caveat for several activations: one line
    for name in activations:
        s = summary[name]
        acc, loss = s["test_accuracy"], s["test_loss"]
        robust = s.get("test_loss_robust") or {}
        ci = f"[{_f(acc['ci_low'])}, {_f(acc['ci_high'])}]" if acc["ci_low"] is not None else "n/a"
        lines.append(
            f"| {name} | {_runs(s)} | {s['init']} | {_f(acc['mean'])} ± {_f(acc['sd'])} | {ci} | {_f(loss['mean'])} ± {_f(loss['sd'])} "
            f"| {_f(loss['median'])} | {_g(robust.get('median'))} | {_share(robust)} | {_seconds(s['seconds_per_epoch']['median'])} | {s['num_parameters']:,} |"
        )
        for label, stat in (("test accuracy", acc), ("test loss", loss)):
            if stat["note"]:
                grouped.setdefault(stat["note"], []).append(f"{name} {label}")
        if robust.get("runs_with_huge_logits"):
            notes.append(
                f"{name}: {100 * robust['huge_logit_share']:.2g}% of the test samples (in {robust['runs_with_huge_logits']} of "
                f"{robust['runs_recorded']} runs) get logits beyond 10^6 in magnitude; a misclassified one costs a loss of that size, "
                f"which is why the mean test loss is {_f(loss['mean'])} while the median per-sample loss is {_g(robust.get('median'))}."
            )
        elif loss["sd"] is not None and loss["median"] is not None and loss["mean"] > 10 * max(loss["median"], 1e-12):
            notes.append(
                f"{name}: the mean test loss is dominated by a few seeds (mean {_f(loss['mean'])}, median {_f(loss['median'])}): "
                "some test samples get huge, confidently wrong logits; see results.json for the per-seed values."
            )
        if s["diverged"]:
            notes.append(
                f"{name}: {len(s['diverged'])} of {s.get('runs', '?')} runs diverged (a non-finite training or test loss) "
                f"for seed(s) {', '.join(map(str, s['diverged']))}: counted, and left out of every accuracy and loss statistic and of the verdict "
                "(a diverged network's predictions are argmax of NaN, not a measurement)."
            )
    if results["comparisons"]:
        analysis = results.get("analysis", {})
        level = results["comparisons"][0]["test_accuracy"].get("ci_confidence", 0.95)
        lines += [
            "",
            f"## Each activation against {reference}, paired by seed",
            "",
            f"Δ = activation − reference. Intervals of Δ are {100 * level:.4g}% t intervals (Bonferroni over the {len(results['comparisons'])} comparison(s), "
            "so that all hold together at 95%); p-values are Holm-corrected over the comparisons. "
            + (
                "With per-seed splits the t statistics and intervals carry the Nadeau–Bengio correction for overlapping training sets. "
                if per_seed
                else ""
            )
            + "Pooled p: one Cochran–Mantel–Haenszel test over all seeds × test samples (McNemar's test on the pooled discordant samples).",
            "",
            "| activation | n | Δ test accuracy (interval) | p t-test | p Wilcoxon | pooled p | Δ test loss (interval) | p t-test |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in results["comparisons"]:
            acc, loss = c["test_accuracy"], c["test_loss"]
            pooled = c.get("pooled_test", {})
            lines.append(
                f"| {c['activation']} | {acc['n']} | {_signed(acc['mean_difference'])} [{_signed(acc['ci_low'])}, {_signed(acc['ci_high'])}] "
                f"| {fmt_p(acc['p_ttest_holm'])} | {fmt_p(acc['p_wilcoxon_holm'])} | {fmt_p(pooled.get('p_value_holm'))} "
                f"| {_signed(loss['mean_difference'])} [{_signed(loss['ci_low'])}, {_signed(loss['ci_high'])}] | {fmt_p(loss['p_ttest_holm'])} |"
            )
            for label, stat in (("accuracy", acc), ("loss", loss)):
                if stat["note"]:
                    grouped.setdefault(stat["note"], []).append(f"{c['activation']} vs {reference}, {label}")
        lines += [
            "",
            f"## Verdict: practical equivalence within ±{_points(analysis.get('rope'))} accuracy points",
            "",
            "| activation | P(better) | P(equivalent) | P(worse) | verdict | smallest detectable Δ | seeds likely needed |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in results["comparisons"]:
            v = c["verdict"]
            lines.append(
                f"| {c['activation']} | {_f(v['p_better'], 3)} | {_f(v['p_equivalent'], 3)} | {_f(v['p_worse'], 3)} | {v['label']} "
                f"| {_points(v['min_detectable_difference'])} points | {_needed(v)} |"
            )
            if v.get("note"):
                notes.append(f"{c['activation']} vs {reference}, verdict: {v['note']}.")
    floors = sorted(
        {
            (c["test_accuracy"].get("nonzero_differences"), c["activation"])
            for c in results["comparisons"]
            if c["test_accuracy"].get("wilcoxon_smallest_p") is not None
            and c["test_accuracy"]["wilcoxon_smallest_p"] >= 0.05
        }
    )
    if floors:
        listed = "; ".join(
            f"{name}: {k} nonzero, p >= {2 / 2**k:.3g}" if k else f"{name}: none nonzero" for k, name in floors
        )
        notes.append(
            "The Wilcoxon signed-rank test drops zero differences first, so with k nonzero paired differences its two-sided p "
            f"cannot go below 2/2^k ({listed}): read it as a robustness check of the t-test, not as a verdict."
        )
    for bad in results.get("skipped_runs", []):
        notes.append(f"Left out of every statistic (--skip-bad-runs): {bad['path']}: {bad['reason']}.")
    notes = [f"{text} ({'; '.join(subjects)})." for text, subjects in grouped.items()] + notes
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in dict.fromkeys(notes)]
    lines += ["", *glossary(results)]
    lines += _tuning_lines(results.get("tuning"))
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
        f"validation split: {ds.get('val_split', '')}; "
        + (
            f"split per seed (--split per-seed: seed k's split drawn with random state split_seed_for({ds.get('split_seed')}, k); "
            "each run's split_fingerprint in results.json names its test samples); "
            if per_seed
            else f"split seed {ds.get('split_seed')}; "
        )
        + f"{ds.get('preprocessing', '')}; "
        f"data fingerprint {ds['fingerprint']}"
        + (f", file content sha256 {ds['content_sha256']}" if ds.get("content_sha256") else "")
        + ".",
        *_data_lines(ds),
        f"- Model: {model_label}"
        + (f" (source sha256 {model['source_sha256']})" if model.get("source_sha256") else "")
        + f"; optimizer {cfg['optimizer']} ("
        + (
            "lr tuned per activation: " + ", ".join(f"{a} {lr:.3g}" for a, lr in cfg["learning_rates"].items())
            if cfg.get("learning_rates")
            else f"lr {cfg['lr']:g}"
        )
        + f", weight decay {cfg['weight_decay']:g}"
        + (f", momentum {cfg['momentum']:g}" if cfg["optimizer"] in ("sgd", "rmsprop") else "")
        + (f"; x0.1 at epochs {', '.join(map(str, cfg['lr_milestones']))}" if cfg.get("lr_milestones") else "")
        + f"), batch {cfg['batch_size']}, {cfg['epochs']} epochs, cross-entropy loss, framework {cfg['framework']}"
        + (f" ({cfg['keras_backend']} backend)" if cfg.get("keras_backend") else "")
        + (f"; preset {cfg['preset']}" if cfg.get("preset") else "")
        + ".",
        *(
            f"- Preset {cfg['preset']}: {what} -- from {source}."
            for what, source in results.get("preset_provenance", {}).items()
        ),
        *(
            f"- Your activation {name}: source sha256 {info['source_sha256']}."
            for name, info in results.get("activation_sources", {}).items()
        ),
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
        *_kernel_lines(runs),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ".",
        "- Statistics: mean ± sample sd over seeds, with a Student-t 95% CI of the mean"
        + (" (Nadeau–Bengio corrected: variance × (1/n + n_test/n_train))" if per_seed else "")
        + "; paired differences against the reference with Bonferroni-level t intervals and the "
        + ("corrected resampled t-test (Nadeau & Bengio 2003)" if per_seed else "paired t-test")
        + ", Wilcoxon signed-rank test (scipy.stats.wilcoxon) and a pooled Cochran–Mantel–Haenszel test over seeds × test samples "
        "(statsmodels StratifiedTable), Holm-corrected (statsmodels multipletests); verdict from the Bayesian correlated t-test "
        "(Corani & Benavoli 2015; posterior by scipy.stats.t), power from statsmodels TTestPower. "
        "The per-seed McNemar tests stay in results.json.",
        "- Files: results.json (everything, including per-run predictions), epochs.csv (one row per run and epoch), runs/ (one JSON per run).",
        "",
    ]
    return "\n".join(lines)


def _model_label(model: dict) -> str:
    if model.get("source_sha256") is not None or ":" in model["name"]:  # a user's factory
        if not model.get("swap"):
            return model["name"]
        kinds = model["swap"].replace(",", " and ")
        if model.get("swap_report"):  # measured by one forward before training
            left = f"; {model['swap_left']} still run (--allow-partial-swap)" if model.get("swap_left") else ""
            return f"{model['name']} with {model['swap_report']} swapped for the compared activation{left}"
        return model["name"] + f" with every {kinds} swapped for the compared activation"
    if model["name"] in ("seed-cnn", "resnet20"):
        return model["name"]
    return f"{model['name']} " + "-".join(map(str, model["hidden"]))


def _inline(name: object) -> str:
    r"""A user's class, column or category name on one Markdown line: line breaks and other control characters escaped.

    Example:
        >>> print(_inline("two\nlines"), _inline("plain"))
        two\nlines plain
    """
    text = str(name)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _data_lines(ds: dict) -> list[str]:
    """The user's data: how labels were numbered, which columns were one-hot encoded."""
    lines = []
    if ds.get("class_mapping"):
        target = f" (column {_inline(ds['target'])})" if ds.get("target") else ""
        mapping = ", ".join(f"{_inline(name)} → {number}" for name, number in ds["class_mapping"].items())
        lines.append(f"- Classes{target}, numbered in sorted order: {mapping}.")
    if ds.get("one_hot"):
        encoded = "; ".join(
            f"{_inline(column)}: {', '.join(map(_inline, categories))}" for column, categories in ds["one_hot"].items()
        )
        lines.append(
            f"- One-hot encoded columns (scikit-learn OneHotEncoder, categories of the training split): {encoded}."
        )
    elif "one_hot" in ds:
        lines.append("- One-hot encoded columns: none (every feature column is numeric).")
    return lines


def _tuning_lines(tuning: dict | None) -> list[str]:
    """``--tune lr``: the grid, every activation's validation score per rate, and its choice."""
    if not tuning:
        return []
    grid = tuning["grid"]
    lines = [
        "",
        "## Learning rates chosen on the validation split (--tune lr)",
        "",
        f"Each activation trained at every rate below on seeds {', '.join(map(str, tuning['seeds']))}, with the test set removed; "
        f"score: {tuning['score']}; ties: the lower mean validation loss, then the rate nearer the default. "
        "Every seed then trained at its activation's chosen rate (**bold**). Cells: mean validation accuracy at the last epoch.",
        "",
        "| activation | " + " | ".join(f"lr {lr:.3g}" for lr in grid) + " | chosen |",
        "|---|" + "---|" * (len(grid) + 1),
    ]
    for name, entry in tuning["activations"].items():
        cells = []
        for row in entry["scores"]:
            text = "diverged" if row["diverged"] else _f(row["val_accuracy"])
            if row["diverged"] and row["diverged"] < row["seeds"]:
                text = f"{row['diverged']} of {row['seeds']} diverged"
            cells.append(f"**{text}**" if row["chosen"] else text)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {entry['chosen']:.3g} |")
    edge = [name for name, entry in tuning["activations"].items() if entry["chosen"] in (grid[0], grid[-1])]
    if edge:
        lines += [
            "",
            f"At the edge of the grid for {', '.join(edge)}: a rate beyond it might score higher (move the grid with --lr).",
        ]
    return lines


def _kernel_lines(runs: list[dict]) -> list[str]:
    """Which kernels computed SPOCU, per run (fixed before its first step, never switched)."""
    paths: dict[str, int] = {}
    for r in runs:
        if r.get("kernel_path"):
            paths[r["kernel_path"]] = paths.get(r["kernel_path"], 0) + 1
    if not paths:
        return []
    listed = ", ".join(f"{path} ({count} of {len(runs)} runs)" for path, count in sorted(paths.items()))
    return [
        f"- SPOCU kernels: {listed}; each run's path is fixed before its first step and never switches (runs/*.json: kernel_path)."
    ]


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
        at_once = (
            f"at most {parallel['jobs']} at a time"
            if parallel.get("jobs")
            else "as many at a time as its resources allowed"
        )
        lines.append(
            f"- Runs trained as Ray tasks, one per run, on a Ray cluster of {parallel.get('cluster', 'unknown size')}, {at_once}"
            + (f", {threads} thread(s) each." if threads else ".")
        )
    elif parallel:
        threads = parallel.get("threads_per_job")
        lines.append(
            f"- Runs trained {parallel['jobs']} at a time in separate processes"
            + (f", {threads} thread(s) each." if threads else ".")
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
    panels = [
        ("train_accuracy", "training accuracy"),
        ("val_accuracy", "validation accuracy"),
        ("train_loss", "training loss"),
        ("val_loss", "validation loss"),
    ]
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


def plot_activations(activations: Sequence[ActivationSpec | str], x_range: tuple[float, float] = (-4.0, 4.0)) -> bytes:
    """PNG of each activation and its derivative (PyTorch autograd) on ``x_range``.

    ``activations``: the experiment's specs, or their names as results.json lists them (parsed here).
    """
    import torch
    from matplotlib.figure import Figure

    x = torch.linspace(*x_range, 801, dtype=torch.float32, requires_grad=True)
    figure = Figure(figsize=(11, 4.2))
    ax_f, ax_d = figure.subplots(1, 2)
    for i, spec in enumerate(parse_activation(a) if isinstance(a, str) else a for a in activations):
        name = spec.canonical
        try:  # the user's activation may be Keras-only, or not differentiable here: left out of the figure, not fatal
            module = spec.torch_module()
            y = module(x)
            (dy,) = torch.autograd.grad(y.sum(), x)
        except Exception:
            if not spec.is_user:
                raise
            continue
        ax_f.plot(x.detach(), y.detach(), color=f"C{i % 10}", label=name)
        ax_d.plot(x.detach(), dy, color=f"C{i % 10}", label=name)
    for ax, title in ((ax_f, "f(x)"), (ax_d, "f'(x)")):
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("x")
    ax_f.legend()
    return _png(figure)


def write_report(root: Path, results: dict, activations: Sequence[ActivationSpec] | None = None) -> Path:
    """Write curves.png, activations.png and report.md into ``root``; return the report's path.

    ``activations``: the experiment's specs (default: parsed from ``results["config"]["activations"]``).
    """
    atomic_write_bytes(root / "curves.png", plot_curves(results))
    shown = results["config"]["activations"] if activations is None else activations
    atomic_write_bytes(root / "activations.png", plot_activations(shown))
    path = root / "report.md"
    atomic_write_text(path, render_report(results))
    return path
