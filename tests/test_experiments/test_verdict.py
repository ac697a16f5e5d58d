"""Intervals, pooled test and verdict: coverage by simulation, and every number against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spocu.experiments.results.stats import (
    bonferroni_confidence,
    mean_interval,
    paired_test,
    pooled_test,
    summarize,
    verdict,
    wilcoxon_floor,
)

DRAWS = 20_000  # Monte-Carlo sd of a coverage near 0.95: 0.0015


def _coverage(samples: np.ndarray, true_mean: float, **options) -> float:
    low, high = mean_interval(samples, **options)
    return float(np.mean((low <= true_mean) & (true_mean <= high)))


@pytest.mark.parametrize(
    "name, draw, true_mean",
    [
        ("normal", lambda rng, shape: rng.normal(0.95, 0.01, shape), 0.95),
        # right-skewed, skewness 0.63 (gamma, shape 10)
        ("gamma(10)", lambda rng, shape: rng.gamma(10.0, 1.0, shape), 10.0),
        # right-skewed, skewness 0.78 (lognormal, sigma 0.25)
        ("lognormal(0.25)", lambda rng, shape: rng.lognormal(0.0, 0.25, shape), math.exp(0.25**2 / 2)),
    ],
)
def test_t_interval_of_a_mean_covers_at_n5(name, draw, true_mean):
    rng = np.random.default_rng(2026)
    coverage = _coverage(draw(rng, (DRAWS, 5)), true_mean)
    assert coverage >= 0.94, f"{name}: {coverage:.4f}"
    # and it is not a trivially wide interval either: well below 100%
    assert coverage <= 0.97, f"{name}: {coverage:.4f}"


def test_the_interval_summarize_reports_is_the_t_interval():
    values = [0.91, 0.93, 0.92, 0.95, 0.90, 0.94]
    s = summarize(values)
    low, high = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high), rel=1e-12)
    assert s.ci_method == "t" and s.sd == pytest.approx(np.std(values, ddof=1))
    # Nadeau-Bengio: the variance of the mean is sd^2 (1/n + r), not sd^2 / n
    r = 114 / 364
    corrected = summarize(values, test_train_ratio=r)
    half = sps.t.ppf(0.975, 5) * np.std(values, ddof=1) * math.sqrt(1 / 6 + r)
    assert (corrected.ci_low, corrected.ci_high) == pytest.approx(
        (np.mean(values) - half, np.mean(values) + half), rel=1e-12
    )
    # accuracies: the interval is cut to [0, 1] (the true mean lies there, so coverage is kept)
    near_one = summarize([0.99, 1.0, 0.97], bounds=(0.0, 1.0))
    assert near_one.ci_high == 1.0 and near_one.ci_low == pytest.approx(
        sps.t.interval(0.95, 2, loc=np.mean([0.99, 1.0, 0.97]), scale=sps.sem([0.99, 1.0, 0.97]))[0]
    )


def test_bonferroni_difference_intervals_hold_together():
    """Three activations against one reference: all three difference intervals cover at once in >= 95% of experiments."""
    rng = np.random.default_rng(7)
    m, n = 3, 5
    seed_effect = rng.normal(0, 0.01, (DRAWS, 1, n))  # shared by all activations of a seed: the pairing
    reference = 0.95 + seed_effect + rng.normal(0, 0.01, (DRAWS, 1, n))
    true_shift = np.array([0.0, 0.01, -0.005])[None, :, None]
    others = 0.95 + true_shift + seed_effect + rng.normal(0, 0.01, (DRAWS, m, n))
    low, high = mean_interval(others - reference, confidence=bonferroni_confidence(m))
    covered = np.all((low <= true_shift[..., 0]) & (true_shift[..., 0] <= high), axis=1)
    assert np.mean(covered) >= 0.94
    # unadjusted 95% intervals do not hold together (each covers 95%, all three about 86%)
    low, high = mean_interval(others - reference)
    assert np.mean(np.all((low <= true_shift[..., 0]) & (true_shift[..., 0] <= high), axis=1)) < 0.9


def test_paired_test_against_scipy_and_statsmodels():
    from statsmodels.stats.weightstats import DescrStatsW

    ref = {0: 0.90, 1: 0.91, 2: 0.89, 3: 0.92, 4: 0.90}
    other = {0: 0.92, 1: 0.92, 2: 0.93, 3: 0.93, 4: 0.91}
    a, b = np.array([other[s] for s in range(5)]), np.array([ref[s] for s in range(5)])
    result = paired_test(ref, other, confidence=bonferroni_confidence(2))
    scipy_t = sps.ttest_rel(a, b)
    assert result.t_statistic == pytest.approx(scipy_t.statistic) and result.p_ttest == pytest.approx(scipy_t.pvalue)
    assert (result.ci_low, result.ci_high) == pytest.approx(DescrStatsW(a - b).tconfint_mean(alpha=0.05 / 2))
    assert result.ci_adjustment.startswith("Bonferroni") and result.test_method == "paired t-test"
    # corrected resampled t-test (Nadeau & Bengio 2003, eq. for repeated hold-out): t = mean / sqrt((1/n + n2/n1) s^2)
    r = 0.25
    corrected = paired_test(ref, other, test_train_ratio=r)
    d = a - b
    t = d.mean() / math.sqrt((1 / 5 + r) * d.var(ddof=1))
    assert corrected.t_statistic == pytest.approx(t) and corrected.p_ttest == pytest.approx(2 * sps.t.sf(abs(t), 4))
    assert corrected.p_ttest > result.p_ttest  # the correction only widens
    assert "Nadeau-Bengio" in corrected.test_method


def test_wilcoxon_floor_is_scipys_smallest_p():
    for k in range(1, 8):
        diffs = np.arange(1, k + 1, dtype=float)  # all positive: the most extreme ranking
        with_zeros = np.concatenate([diffs, np.zeros(3)])  # zero differences are dropped first
        p = sps.wilcoxon(with_zeros).pvalue
        assert wilcoxon_floor(k) == pytest.approx(p)
    assert paired_test({0: 0.9, 1: 0.9, 2: 0.8}, {0: 0.9, 1: 0.95, 2: 0.85}).nonzero_differences == 2


def test_pooled_test_is_mcnemar_on_the_pooled_discordant_pairs():
    rng = np.random.default_rng(3)
    per_seed, b, c = [], 0, 0
    for _seed, size in enumerate((114, 114, 113, 114, 115)):  # per-seed splits: different test samples
        y = rng.integers(0, 2, size)
        ref = np.where(rng.random(size) < 0.93, y, 1 - y)
        other = np.where(rng.random(size) < 0.96, y, 1 - y)
        per_seed.append((y, ref, other))
        b += int(np.sum((ref == y) & (other != y)))
        c += int(np.sum((ref != y) & (other == y)))
    result = pooled_test(per_seed)
    assert (result["only_reference_right"], result["only_other_right"]) == (b, c)
    # Edwards' continuity-corrected McNemar statistic, by hand
    assert result["p_value"] == pytest.approx(sps.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1), rel=1e-9)
    assert "Mantel-Haenszel" in result["method"]
    assert pooled_test([(np.array([0, 1]), np.array([0, 1]), np.array([0, 1]))])["p_value"] == 1.0


def _posterior(ref, other, rope, r):
    d = 100 * (np.asarray(other) - np.asarray(ref))
    n = len(d)
    post = sps.t(n - 1, loc=d.mean(), scale=math.sqrt((1 / n + r) * d.var(ddof=1)))
    return post.sf(rope), post.cdf(rope) - post.cdf(-rope), post.cdf(-rope)


def test_verdict_probabilities_match_baycomp():
    baycomp = pytest.importorskip("baycomp")
    rng = np.random.default_rng(11)
    ref = 0.93 + rng.normal(0, 0.01, 10)
    other = ref + 0.004 + rng.normal(0, 0.008, 10)
    # baycomp's correction is for k-fold CV: 1/(k - 1) with k = len / runs; k = 5 (2 runs of 5 folds) gives r = 1/4
    left, rope_p, right = baycomp.two_on_single(100 * ref, 100 * other, rope=0.5, runs=2)
    v = verdict(ref, other, rope=0.5, test_train_ratio=0.25)
    # baycomp's differences are y - x: "right" is the second (the contender) better
    assert (v.p_better, v.p_equivalent, v.p_worse) == pytest.approx((right, rope_p, left), abs=1e-9)
    assert v.p_better + v.p_equivalent + v.p_worse == pytest.approx(1.0, abs=1e-12)


def test_verdict_labels_by_the_documented_rule():
    ref = [0.90, 0.91, 0.89, 0.92, 0.90]
    assert verdict(ref, [0.95, 0.96, 0.95, 0.97, 0.96]).label == "better"
    assert verdict([0.95, 0.96, 0.95, 0.97, 0.96], ref).label == "worse"
    tiny = [v + d for v, d in zip(ref, (0.0005, -0.0004, 0.0003, 0.0, 0.0002))]
    v = verdict(ref, tiny, rope=0.5)
    assert v.label == "equivalent" and v.p_equivalent >= 0.95
    assert (v.p_better, v.p_equivalent, v.p_worse) == pytest.approx(_posterior(ref, tiny, 0.5, 0.0), abs=1e-12)
    noisy = [0.91, 0.89, 0.92, 0.90, 0.91]
    v = verdict(ref, noisy, rope=0.5)
    assert v.label == "inconclusive" and max(v.p_better, v.p_equivalent, v.p_worse) < 0.95
    assert verdict([0.9], [0.95]).label == "inconclusive"


def _power(delta, sd, n, r, alpha, two_sided):
    """Power of the t-test of a mean difference, by the noncentral t directly (not statsmodels)."""
    nc = delta / (sd * math.sqrt(1 / n + r))
    if two_sided:
        crit = sps.t.ppf(1 - alpha / 2, n - 1)
        return sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    return sps.nct.sf(sps.t.ppf(1 - alpha, n - 1), n - 1, nc)


@pytest.mark.parametrize("r", [0.0, 0.25])
def test_min_detectable_difference_has_80_percent_power(r):
    ref = [0.90, 0.91, 0.89, 0.92, 0.90, 0.93]
    other = [0.91, 0.89, 0.92, 0.90, 0.91, 0.95]
    v = verdict(ref, other, test_train_ratio=r)
    sd = float(np.std(100 * (np.array(other) - np.array(ref)), ddof=1))
    assert _power(v.min_detectable_difference, sd, 6, r, 0.05, True) == pytest.approx(0.8, abs=1e-6)


def test_seeds_needed_is_the_first_count_with_80_percent_power():
    ref = [0.90, 0.91, 0.89, 0.92, 0.90]
    other = [0.92, 0.91, 0.92, 0.93, 0.89]  # mean +1.0 point, beyond the 0.5 ROPE but not surely
    v = verdict(ref, other, rope=0.5)
    assert v.label == "inconclusive" and v.seeds_needed is not None
    d = 100 * (np.array(other) - np.array(ref))
    margin, sd = abs(d.mean()) - 0.5, d.std(ddof=1)
    assert (
        _power(margin, sd, v.seeds_needed, 0.0, 0.05, False)
        >= 0.8
        > _power(margin, sd, v.seeds_needed - 1, 0.0, 0.05, False)
    )
    # with per-seed splits the test-set part r of the variance does not shrink with seeds: a limit appears
    assert verdict(ref, other, rope=0.5, test_train_ratio=2.0).seeds_needed is None


# ----------------------------------------------------------------------------- divergence and robust loss


def _run(activation, seed, accuracy, *, diverged=False, loss=0.3):
    from spocu.experiments.run.engine import RunResult

    return RunResult(
        activation=activation,
        seed=seed,
        init="he-normal",
        framework="torch",
        framework_version="x",
        device="cpu",
        threads=1,
        num_parameters=10,
        epochs=[],
        test_loss=float("nan") if diverged else loss,
        test_accuracy=accuracy,
        test_predictions=[],
        diverged_at=1 if diverged else None,
        seconds=1.0,
        started_at="",
        finished_at="",
    )


class _Data:
    """The little of a Dataset that assemble_results reads."""

    def __init__(self):
        self.y_test = np.zeros(0, dtype=int)
        self.y_train = np.zeros(10, dtype=int)
        self.info = {"split": "fixed"}

    def describe(self):
        return {"name": "toy"}


def test_diverged_runs_are_counted_and_left_out_of_every_statistic():
    from spocu.experiments.config import resolve_config
    from spocu.experiments.results.summary import assemble_results

    config = resolve_config({"activations": ("relu", "selu"), "seeds": 5})
    relu = [0.90, 0.91, 0.89, 0.92, 0.90]
    selu = [0.90, 0.91, 0.90, 0.91, 0.90]
    runs = [_run("relu", s, a) for s, a in enumerate(relu)]
    # selu diverges on seed 4: its accuracy there (argmax of NaN = class 0) must not count
    runs += [_run("selu", s, a, diverged=s == 4) for s, a in enumerate(selu[:4] + [0.10])]
    results = assemble_results(config, _Data(), runs, {})
    summary = results["summary"]["selu"]
    assert summary["runs"] == 5 and summary["diverged"] == [4] and summary["diverged_count"] == 1
    assert summary["test_accuracy"]["n"] == 4 and summary["test_accuracy"]["mean"] == pytest.approx(np.mean(selu[:4]))
    comparison = results["comparisons"][0]
    assert comparison["test_accuracy"]["n"] == 4
    assert comparison["test_accuracy"]["mean_difference"] == pytest.approx(np.mean(np.array(selu[:4]) - relu[:4]))
    v = comparison["verdict"]
    assert v["n"] == 4
    # the posterior over the 4 seeds both finished, by hand
    assert (v["p_better"], v["p_equivalent"], v["p_worse"]) == pytest.approx(
        _posterior(relu[:4], selu[:4], 0.5, 0.0), abs=1e-12
    )


def test_a_contender_that_diverges_more_is_never_called_equivalent():
    from spocu.experiments.config import resolve_config
    from spocu.experiments.results.summary import assemble_results

    config = resolve_config({"activations": ("relu", "selu"), "seeds": 6})
    relu = [0.90, 0.91, 0.89, 0.92, 0.90, 0.91]
    runs = [_run("relu", s, a) for s, a in enumerate(relu)]
    runs += [_run("selu", s, a + (0.0002 if s % 2 else -0.0002), diverged=s == 5) for s, a in enumerate(relu)]
    results = assemble_results(config, _Data(), runs, {})
    v = results["comparisons"][0]["verdict"]
    assert v["p_equivalent"] >= 0.95  # equivalent on the 5 seeds both trained ...
    assert v["label"] == "inconclusive" and "diverged on more seeds" in v["note"]  # ... but selu diverged once


def test_robust_test_loss_of_the_torch_engine_against_numpy():
    import torch
    from scipy.special import log_softmax

    from spocu.experiments.run import torch_engine

    x = np.array([[0.1, 0.2], [1.0, -1.0], [3e6, 0.0], [0.5, 0.5], [-2.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 0, 1])
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        model.bias.zero_()
    split = torch_engine._Split(x, y, None, torch.device("cpu"))
    loss, accuracy, predictions, robust = torch_engine._evaluate(model, split, keep_predictions=True)
    logits = x.astype(np.float64)
    per_sample = -log_softmax(logits, axis=1)[np.arange(5), y]
    assert robust["test_loss_median"] == pytest.approx(np.median(per_sample), rel=1e-6)
    assert robust["test_huge_logit_share"] == pytest.approx(1 / 5)  # the sample with logit 3e6
    assert loss == pytest.approx(per_sample.mean(), rel=1e-5) and loss > 1e5  # the mean: dominated by that one sample
    assert predictions == np.argmax(logits, axis=1).tolist()


def test_with_several_contenders_a_label_needs_the_bonferroni_probability():
    """Three contenders: each label needs P >= 1 - 0.05/3, so all three verdicts hold together at 95%."""
    from spocu.experiments.config import resolve_config
    from spocu.experiments.results.summary import assemble_results

    relu = [0.90, 0.91, 0.89, 0.92, 0.90, 0.91]
    shift = [0.012, 0.020, 0.002, 0.018, 0.006, 0.016]  # +1.23 points: P(better) = 0.974, between 0.95 and 0.9833
    contender = list(np.add(relu, shift))
    p_better = _posterior(relu, contender, 0.5, 0.0)[0]
    assert 0.95 <= p_better < 1 - 0.05 / 3
    assert verdict(relu, contender, rope=0.5).label == "better"  # one contender: 0.95 suffices
    names = ("relu", "selu", "gelu", "elu")
    config = resolve_config({"activations": names, "seeds": 6})
    runs = [_run("relu", s, a) for s, a in enumerate(relu)]
    runs += [_run(name, s, a) for name in names[1:] for s, a in enumerate(contender)]
    results = assemble_results(config, _Data(), runs, {})
    assert results["analysis"]["decision_probability"] == pytest.approx(1 - 0.05 / 3)
    for comparison in results["comparisons"]:
        v = comparison["verdict"]
        assert v["p_better"] == pytest.approx(p_better, abs=1e-12)
        assert v["label"] == "inconclusive"
