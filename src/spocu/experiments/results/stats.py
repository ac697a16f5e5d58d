"""Statistics of a multi-seed comparison, from scipy and statsmodels.

Every interval and test here is built for 3-10 seeds (see docs/compare.md, "Statistics"):

- per activation: mean, median and sample sd (ddof=1) of a metric over seeds, and a 95% Student-t
  confidence interval of the mean, ``mean ± t(0.975, n-1) · sd · sqrt(1/n + r)``. ``r`` is the
  Nadeau–Bengio correction ``n_test / n_train`` when every seed draws its own split (the seeds'
  training sets overlap, so their scores are correlated); 0 with one fixed split. (A bootstrap
  interval is not used: at n = 5 a BCa interval covered a mean 87.8% of the time, a t interval 95%.)
- each activation against the reference (the first), paired by seed: the mean difference, its
  t interval at the Bonferroni level ``1 - 0.05/m`` for m comparisons, and the (corrected
  resampled) paired t-test ``t = mean / (sd · sqrt(1/n + r))`` with n - 1 degrees of freedom, plus a
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``); p-values Holm-corrected over the
  comparisons (``statsmodels.stats.multitest.multipletests``). A Bonferroni interval that
  excludes 0 implies a Holm p below 0.05 (Holm's p is never larger than Bonferroni's); the
  converse need not hold.
- one pooled test over seeds x test samples (:func:`pooled_test`): Cochran–Mantel–Haenszel with
  one stratum per matched pair (seed, test sample) (``statsmodels`` ``StratifiedTable``), which is
  McNemar's test on the discordant samples pooled over the seeds.
- a verdict with a region of practical equivalence (:func:`verdict`): the Bayesian correlated
  t-test (Corani & Benavoli 2015), whose posterior of the mean difference is Student t with n - 1
  degrees of freedom, location the mean difference and scale ``sd · sqrt(1/n + r)`` -- the same
  posterior as ``baycomp``'s ``CorrelatedTTest`` -- gives P(better), P(equivalent), P(worse);
  ``statsmodels`` ``TTestPower`` gives the smallest detectable difference and the seeds needed.

Degenerate cases do not raise; they return NaN with a ``note`` saying why (n < 2, zero variance,
all differences zero).

Examples:
    >>> s = summarize([0.95, 0.96, 0.97, 0.96, 0.95])
    >>> round(s.mean, 3), round(s.sd, 4), round(s.ci_low, 4), round(s.ci_high, 4)
    (0.958, 0.0084, 0.9476, 0.9684)
    >>> v = verdict([0.90, 0.91, 0.89, 0.92, 0.90], [0.95, 0.96, 0.95, 0.97, 0.96], rope=0.5)
    >>> v.label, round(v.p_better, 3)
    ('better', 1.0)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "Summary",
    "PairedTest",
    "McNemarResult",
    "Verdict",
    "summarize",
    "mean_interval",
    "paired_test",
    "holm",
    "mcnemar_test",
    "pooled_test",
    "verdict",
    "bonferroni_confidence",
    "wilcoxon_floor",
    "CONFIDENCE",
    "DEFAULT_ROPE",
    "DECISION_PROBABILITY",
]

CONFIDENCE = 0.95
#: half-width of the region of practical equivalence, in accuracy points (percentage points): see docs/compare.md
DEFAULT_ROPE = 0.5
#: a verdict label needs a posterior probability at least this large
DECISION_PROBABILITY = 0.95
#: power and two-sided level of the smallest detectable difference
POWER, ALPHA = 0.8, 0.05
#: the most seeds :func:`verdict` looks at when it estimates how many would settle an inconclusive answer
MAX_SEEDS_NEEDED = 1000


@dataclass
class Summary:
    """Mean, sd and confidence interval of one metric over seeds (see :func:`summarize`); ``note``
    says why the sd or the interval is missing (NaN), ``ci_method`` how the interval was computed.
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    ci_method: str
    note: str = ""
    median: float = math.nan

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))


@dataclass
class PairedTest:
    """``activation`` minus ``reference``, paired by seed.

    ``ci_low``/``ci_high``: the t interval at level ``ci_confidence`` (Bonferroni-adjusted for
    the number of comparisons by the caller); ``p_ttest``: the paired t-test, Nadeau–Bengio corrected
    where ``test_train_ratio`` > 0 (``test_method`` says which).
    """

    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    t_statistic: float
    p_ttest: float
    p_wilcoxon: float
    p_ttest_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan
    note: str = ""
    sd_difference: float = math.nan
    ci_confidence: float = CONFIDENCE
    ci_adjustment: str = "none"
    test_method: str = "paired t-test"
    test_train_ratio: float = 0.0
    nonzero_differences: int = 0
    wilcoxon_smallest_p: float = math.nan

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))


@dataclass
class McNemarResult:
    """2x2 table [[both right, only reference right], [only other right, both wrong]] and exact p."""

    table: list[list[int]]
    p_value: float

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))


@dataclass
class Verdict:
    """Contender minus reference, in accuracy points; see :func:`verdict`."""

    rope: float
    p_better: float
    p_equivalent: float
    p_worse: float
    label: str
    min_detectable_difference: float
    seeds_needed: int | None
    n: int = 0
    mean_difference: float = math.nan
    method: str = ""
    rule: str = ""
    note: str = ""
    unit: str = "accuracy points"

    def as_dict(self) -> dict:
        """The fields as a JSON-ready dict (NaN and infinities become None)."""
        return _json_safe(asdict(self))


def _json_safe(data):
    if isinstance(data, dict):
        return {k: _json_safe(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_json_safe(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _scale_factor(n: int, test_train_ratio: float) -> float:
    """sqrt(1/n + r): the standard error of a mean over n (correlated) resamples, per unit sd."""
    return math.sqrt(1.0 / n + test_train_ratio)


def _check_ratio(test_train_ratio: float) -> None:
    if not (math.isfinite(test_train_ratio) and test_train_ratio >= 0):
        raise ValueError(f"test_train_ratio must be a finite number >= 0, got {test_train_ratio}")


def mean_interval(
    samples: np.ndarray, *, confidence: float = CONFIDENCE, test_train_ratio: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of the mean along the last axis: ``mean ± t((1+confidence)/2, n-1) · sd · sqrt(1/n + r)``.

    Vectorized: ``samples`` of shape (..., n) gives bounds of shape (...). :func:`summarize` and
    :func:`paired_test` use it for every interval they report.

    Example:
        >>> low, high = mean_interval(np.array([1.0, 2.0, 3.0]))
        >>> round(float(low), 4), round(float(high), 4)
        (-0.4841, 4.4841)
    """
    from scipy import stats

    x = np.asarray(samples, dtype=float)
    n = x.shape[-1]
    mean = x.mean(axis=-1)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * x.std(axis=-1, ddof=1) * _scale_factor(n, test_train_ratio)
    return mean - half, mean + half


def summarize(
    values: Sequence[float | None],
    *,
    test_train_ratio: float = 0.0,
    confidence: float = CONFIDENCE,
    bounds: tuple[float, float] | None = None,
) -> Summary:
    """Mean, sd and t confidence interval of the mean of ``values`` (None and NaN dropped).

    ``mean ± t((1+confidence)/2, n-1) · sd · sqrt(1/n + r)`` with ``r = test_train_ratio``
    (Nadeau & Bengio 2003; 0 for one fixed split). ``bounds``: the values' range (accuracy: (0, 1));
    the interval is cut to it, which keeps its coverage (the true mean lies inside the range).
    """
    _check_ratio(test_train_ratio)
    x = np.asarray([v for v in values if _finite(v)], dtype=float)
    n = len(x)
    method = "t" if test_train_ratio == 0 else f"t, Nadeau-Bengio corrected (n_test/n_train = {test_train_ratio:.3g})"
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, "none", "no finite values")
    mean, median = float(x.mean()), float(np.median(x))
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan, "none", "n < 2: no sd or CI", median)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return Summary(n, mean, 0.0, mean, mean, "none", "all values equal: zero-width CI", median)
    low, high = (float(v) for v in mean_interval(x, confidence=confidence, test_train_ratio=test_train_ratio))
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Summary(n, mean, sd, float(low), float(high), method, "", median)


def bonferroni_confidence(comparisons: int, confidence: float = CONFIDENCE) -> float:
    """The level of each of ``comparisons`` intervals so that all hold together with ``confidence``.

    Example:
        >>> bonferroni_confidence(2)
        0.975
    """
    return 1 - (1 - confidence) / max(comparisons, 1)


def decision_probability(contenders: int) -> float:
    """The posterior probability a verdict label needs when ``contenders`` are judged against one reference.

    ``1 - (1 - 0.95) / contenders`` (Bonferroni): each label is a one-sided decision at level
    0.05 / m, so the m verdicts of a report are right together with probability >= 95%, and a
    "better" never stands beside a difference that the report's own (equally adjusted) tests
    leave in doubt.

    Example:
        >>> decision_probability(1), round(decision_probability(3), 4)
        (0.95, 0.9833)
    """
    return bonferroni_confidence(contenders, DECISION_PROBABILITY)


def wilcoxon_floor(nonzero: int) -> float:
    """The smallest two-sided exact Wilcoxon signed-rank p with ``nonzero`` nonzero differences: 2 / 2**k.

    Zero differences are dropped before ranking (scipy's default ``zero_method="wilcox"``).

    Example:
        >>> wilcoxon_floor(5), wilcoxon_floor(2)
        (0.0625, 0.5)
    """
    return min(1.0, 2.0 / 2.0**nonzero) if nonzero > 0 else 1.0


def paired_test(
    reference: dict[int, float | None],
    other: dict[int, float | None],
    *,
    test_train_ratio: float = 0.0,
    confidence: float = CONFIDENCE,
) -> PairedTest:
    """Paired t-test (Nadeau–Bengio corrected for ``test_train_ratio`` > 0) and Wilcoxon of ``other - reference``.

    Over the seeds both have with finite values. The interval is ``mean ± t · sd · sqrt(1/n + r)`` at
    ``confidence`` (pass :func:`bonferroni_confidence` for several comparisons).
    """
    from scipy import stats

    _check_ratio(test_train_ratio)
    method = "paired t-test" if test_train_ratio == 0 else "corrected resampled t-test (Nadeau-Bengio)"
    adjustment = "none" if confidence == CONFIDENCE else f"Bonferroni ({confidence:.4g} per comparison)"
    common: dict[str, Any] = dict(
        ci_confidence=confidence, ci_adjustment=adjustment, test_method=method, test_train_ratio=test_train_ratio
    )
    seeds = sorted(s for s in set(reference) & set(other) if _finite(reference[s]) and _finite(other[s]))
    a = np.array([other[s] for s in seeds], dtype=float)
    b = np.array([reference[s] for s in seeds], dtype=float)
    n = len(seeds)
    if n == 0:
        return PairedTest(
            0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, note="no paired seeds", **common
        )
    diff = a - b
    mean = float(diff.mean())
    nonzero = int(np.count_nonzero(diff))
    common.update(nonzero_differences=nonzero, wilcoxon_smallest_p=wilcoxon_floor(nonzero))
    if n < 2:
        return PairedTest(
            n, mean, math.nan, math.nan, math.nan, math.nan, math.nan, note="n < 2 paired seeds: no test", **common
        )
    sd = float(diff.std(ddof=1))
    if np.all(diff == diff[0]):
        if diff[0] == 0:
            return PairedTest(
                n, 0.0, 0.0, 0.0, math.nan, 1.0, 1.0, note="identical on every seed: p = 1", sd_difference=0.0, **common
            )
        return PairedTest(
            n,
            mean,
            mean,
            mean,
            math.nan,
            math.nan,
            math.nan,
            note="the same nonzero difference on every seed: no variance, tests undefined",
            sd_difference=0.0,
            **common,
        )
    se = sd * _scale_factor(n, test_train_ratio)
    t = mean / se
    p_t = float(2 * stats.t.sf(abs(t), n - 1))
    low, high = mean_interval(diff, confidence=confidence, test_train_ratio=test_train_ratio)
    note = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_w = float(stats.wilcoxon(a, b).pvalue)
    except ValueError as error:  # e.g. all differences zero after dropping ties
        p_w, note = math.nan, f"Wilcoxon undefined: {error}"
    return PairedTest(n, mean, float(low), float(high), float(t), p_t, p_w, note=note, sd_difference=sd, **common)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (NaN entries stay NaN and are not counted as tests)."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method="holm")[1]
    return out.tolist()


def mcnemar_test(y_true: Sequence[int], pred_reference: Sequence[int], pred_other: Sequence[int]) -> McNemarResult:
    """Exact McNemar test of two classifiers' correctness on the same test samples."""
    from statsmodels.stats.contingency_tables import mcnemar

    y = np.asarray(y_true)
    ref_ok = np.asarray(pred_reference) == y
    other_ok = np.asarray(pred_other) == y
    table = [
        [int(np.sum(ref_ok & other_ok)), int(np.sum(ref_ok & ~other_ok))],
        [int(np.sum(~ref_ok & other_ok)), int(np.sum(~ref_ok & ~other_ok))],
    ]
    p = float(mcnemar(np.array(table), exact=True).pvalue)
    return McNemarResult(table, p)


POOLED_METHOD = "Cochran-Mantel-Haenszel, one stratum per (seed, test sample), continuity-corrected"


def pooled_test(per_seed: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]]) -> dict:
    """One test over seeds x test samples: do the two networks err on different samples more than chance allows?

    ``per_seed``: one ``(y_true, pred_reference, pred_other)`` per seed (the test samples may differ
    between seeds). Each (seed, sample) is a matched pair, a 2x2 stratum [[reference right, wrong],
    [other right, wrong]] holding one sample per row; ``StratifiedTable(...).test_null_odds(correction=True)``
    pools them. Concordant samples carry no information (zero variance) and are left out first;
    the statistic is then ``(|b - c| - 1)^2 / (b + c)`` over the b (only the reference right) and c
    (only the other right) discordant samples of all seeds: McNemar's test, pooled.

    Returns ``{"method", "p_value", "only_reference_right", "only_other_right", "seeds", "note"}``.
    """
    from statsmodels.stats.contingency_tables import StratifiedTable

    b = c = 0
    for y, ref, other in per_seed:
        y_true = np.asarray(y)
        ref_ok, other_ok = np.asarray(ref) == y_true, np.asarray(other) == y_true
        b += int(np.sum(ref_ok & ~other_ok))
        c += int(np.sum(~ref_ok & other_ok))
    result: dict[str, Any] = {
        "method": POOLED_METHOD,
        "p_value": None,
        "only_reference_right": b,
        "only_other_right": c,
        "seeds": len(per_seed),
        "note": "",
    }
    if b + c == 0:
        result.update(p_value=1.0, note="no test sample on which only one of the two networks is right: p = 1")
        return result
    strata = np.zeros((2, 2, b + c))
    strata[0, 0, :b] = strata[1, 1, :b] = 1  # reference right, other wrong
    strata[0, 1, b:] = strata[1, 0, b:] = 1  # reference wrong, other right
    p = float(StratifiedTable(strata).test_null_odds(correction=True).pvalue)
    result["p_value"] = p if math.isfinite(p) else None
    return result


def verdict(
    reference: Sequence[float],
    other: Sequence[float],
    *,
    rope: float = DEFAULT_ROPE,
    test_train_ratio: float = 0.0,
    probability: float = DECISION_PROBABILITY,
) -> Verdict:
    """Is ``other`` better than, practically equivalent to, or worse than ``reference``?

    ``reference``, ``other``: accuracies (fractions) paired by position (finite values only).
    ``rope``: half-width of the region of practical equivalence, in accuracy points.
    Differences d = 100 · (other - reference), in points. Posterior of the mean difference
    (Bayesian correlated t-test, Corani & Benavoli 2015, baycomp's ``CorrelatedTTest``):
    ``Student t(n - 1, loc = mean(d), scale = sd(d) · sqrt(1/n + r))``; ``P(worse) = P(μ < -rope)``,
    ``P(equivalent) = P(|μ| <= rope)``, ``P(better) = P(μ > rope)``. Label: the first of better,
    worse, equivalent whose probability is >= ``probability``, else inconclusive. With several
    contenders against one reference, pass ``decision_probability(m)`` for m contenders, so that
    all m verdicts hold together at 95% (as the Bonferroni difference intervals do).

    ``min_detectable_difference``: the true mean difference (points) a two-sided test at α = 0.05
    detects with 80% power with these n seeds and this sd (``TTestPower``; ``d · sd · sqrt(1 + n·r)``).
    ``seeds_needed`` (inconclusive only): the fewest seeds at which, if the observed mean and sd
    were the truth, the one-sided t-test that decides the label has 80% power: mean beyond the
    ROPE's nearer edge at α = 1 - ``probability`` if |mean| > rope (P(better) >= ``probability`` is that
    test), inside it at α = (1 - ``probability``)/2 otherwise (P(equivalent) >= ``probability`` needs both
    tails <= 1 - ``probability`` together); None if no number up to
    :data:`MAX_SEEDS_NEEDED` would (with per-seed splits, more seeds cannot shrink the
    test-set part ``r`` of the variance).

    Example:
        >>> v = verdict([0.9, 0.91, 0.9, 0.92, 0.91], [0.9, 0.912, 0.905, 0.915, 0.913], rope=0.5)
        >>> v.label, round(v.p_equivalent, 3), v.seeds_needed
        ('inconclusive', 0.949, 10)
    """
    from scipy import stats
    from statsmodels.stats.power import TTestPower

    _check_ratio(test_train_ratio)
    if not (math.isfinite(rope) and rope >= 0):
        raise ValueError(f"rope must be a finite number >= 0 (accuracy points), got {rope}")
    method = "Bayesian correlated t-test (Corani & Benavoli 2015)" + (
        f", n_test/n_train = {test_train_ratio:.3g}" if test_train_ratio else ""
    )
    rule = f"better/worse/equivalent if its posterior probability >= {probability:g}, else inconclusive"
    d = 100.0 * (np.asarray(other, dtype=float) - np.asarray(reference, dtype=float))
    n = len(d)
    base: dict[str, Any] = dict(rope=rope, n=n, method=method, rule=rule)
    if n < 2:
        return Verdict(
            p_better=math.nan,
            p_equivalent=math.nan,
            p_worse=math.nan,
            label="inconclusive",
            min_detectable_difference=math.nan,
            seeds_needed=None,
            mean_difference=float(d.mean()) if n else math.nan,
            note="fewer than 2 paired seeds: no posterior",
            **base,
        )
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0:  # every seed gave the same difference: the posterior is a point mass there
        p_worse, p_better = float(mean < -rope), float(mean > rope)
        probs = (p_better, 1.0 - p_better - p_worse, p_worse)
        note = "the same difference on every seed: zero variance, the posterior is a point mass"
        mdd = 0.0
    else:
        posterior = stats.t(n - 1, loc=mean, scale=sd * _scale_factor(n, test_train_ratio))
        p_worse, p_better = float(posterior.cdf(-rope)), float(posterior.sf(rope))
        probs = (p_better, max(0.0, 1.0 - p_better - p_worse), p_worse)
        note = ""
        effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=ALPHA, power=POWER, alternative="two-sided")
        mdd = float(effect) * sd * math.sqrt(1 + n * test_train_ratio)
    label = "inconclusive"
    for name, p in zip(("better", "equivalent", "worse"), probs):
        if p >= probability:
            label = name
    needed = None
    if label == "inconclusive" and sd > 0:
        margin = abs(abs(mean) - rope)  # distance to the ROPE's edge that the deciding one-sided test must clear
        counts = np.arange(max(n, 2), MAX_SEEDS_NEEDED + 1)
        effects = margin / (
            sd * np.sqrt(1 + counts * test_train_ratio)
        )  # per-seed effect whose t has the right noncentrality
        error = 1.0 - probability  # the one-sided level of the test behind a label at this probability
        alpha = error if abs(mean) > rope else error / 2
        power = TTestPower().power(effect_size=effects, nobs=counts, alpha=alpha, alternative="larger")
        reached = np.nonzero(np.asarray(power) >= POWER)[0]
        needed = int(counts[reached[0]]) if len(reached) and margin > 0 else None
    return Verdict(
        p_better=probs[0],
        p_equivalent=probs[1],
        p_worse=probs[2],
        label=label,
        min_detectable_difference=mdd,
        seeds_needed=needed,
        mean_difference=mean,
        note=note,
        **base,
    )
