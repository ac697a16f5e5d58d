"""Statistics of a multi-seed comparison, from scipy and statsmodels.

- per activation: mean, median and sample sd (ddof=1) of a metric over seeds, and a 95% bootstrap
  confidence interval of the mean (``scipy.stats.bootstrap``, BCa; percentile where BCa is
  undefined);
- each activation against the reference (the first), paired by seed: mean difference with
  its t-based 95% CI and paired t-test (``scipy.stats.ttest_rel``), Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``), both Holm-corrected over the comparisons
  (``statsmodels.stats.multitest.multipletests(method="holm")``);
- McNemar's exact test (``statsmodels.stats.contingency_tables.mcnemar``) per seed on the
  shared test set: do the two networks of one seed err on different test samples more than
  chance allows? (test-sampling noise only; the paired tests above capture seed noise).

Degenerate cases do not raise; they return NaN with a ``note`` saying why (n < 2, zero variance,
all differences zero).

Examples:
    >>> s = summarize([0.95, 0.96, 0.97, 0.96, 0.95])
    >>> round(s.mean, 3), round(s.sd, 4), s.ci_low < s.mean < s.ci_high
    (0.958, 0.0084, True)
"""

from __future__ import annotations

import inspect
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

__all__ = ["Summary", "PairedTest", "McNemarResult", "summarize", "paired_test", "holm", "mcnemar_test"]

CONFIDENCE = 0.95
#: bootstrap resamples and generator seed: a report is reproducible
N_RESAMPLES, BOOTSTRAP_SEED = 9999, 12345


@dataclass
class Summary:
    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    ci_method: str
    note: str = ""
    median: float = math.nan

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


@dataclass
class PairedTest:
    """``activation`` minus ``reference``, paired by seed."""

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

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


@dataclass
class McNemarResult:
    """2x2 table [[both right, only reference right], [only other right, both wrong]] and exact p."""

    table: list[list[int]]
    p_value: float

    def as_dict(self) -> dict:
        return _json_safe(asdict(self))


def _json_safe(data):
    if isinstance(data, dict):
        return {k: _json_safe(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_json_safe(v) for v in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


def _rng_keyword():
    # scipy >= 1.15 takes rng=, older versions random_state=
    return "rng" if "rng" in inspect.signature(_bootstrap()).parameters else "random_state"


def _bootstrap():
    from scipy.stats import bootstrap

    return bootstrap


def summarize(values: Sequence[float]) -> Summary:
    """Mean, sd and 95% bootstrap CI of the mean of ``values`` (NaNs dropped)."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, "none", "no finite values")
    mean, median = float(x.mean()), float(np.median(x))
    if n < 2:
        return Summary(n, mean, math.nan, math.nan, math.nan, "none", "n < 2: no sd or CI", median)
    sd = float(x.std(ddof=1))
    if sd == 0.0:
        return Summary(n, mean, 0.0, mean, mean, "none", "all values equal: zero-width CI", median)
    if n < 3:
        return Summary(n, mean, sd, math.nan, math.nan, "none", "n < 3: no bootstrap CI", median)
    bootstrap = _bootstrap()
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = bootstrap(
                (x,), np.mean, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES, method=method,
                **{_rng_keyword(): np.random.default_rng(BOOTSTRAP_SEED)},
            )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            note = "" if method == "BCa" else "BCa undefined for these values; percentile bootstrap"
            return Summary(n, mean, sd, low, high, f"bootstrap {method}", note, median)
    return Summary(n, mean, sd, math.nan, math.nan, "none", "bootstrap CI undefined", median)


def paired_test(reference: dict[int, float], other: dict[int, float]) -> PairedTest:
    """Paired t-test and Wilcoxon of ``other - reference`` over the seeds both have."""
    from scipy import stats

    seeds = sorted(s for s in set(reference) & set(other) if _finite(reference[s]) and _finite(other[s]))
    a = np.array([other[s] for s in seeds], dtype=float)
    b = np.array([reference[s] for s in seeds], dtype=float)
    n = len(seeds)
    if n == 0:
        return PairedTest(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, note="no paired seeds")
    diff = a - b
    mean = float(diff.mean())
    if n < 2:
        return PairedTest(n, mean, math.nan, math.nan, math.nan, math.nan, math.nan, note="n < 2 paired seeds: no test")
    if np.all(diff == diff[0]):
        if diff[0] == 0:
            return PairedTest(n, 0.0, 0.0, 0.0, math.nan, 1.0, 1.0, note="identical on every seed: p = 1")
        return PairedTest(n, mean, mean, mean, math.nan, math.nan, math.nan, note="the same nonzero difference on every seed: no variance, tests undefined")
    t = stats.ttest_rel(a, b)
    ci = t.confidence_interval(confidence_level=CONFIDENCE)
    note = ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_w = float(stats.wilcoxon(a, b).pvalue)
    except ValueError as error:  # e.g. all differences zero after dropping ties
        p_w, note = math.nan, f"Wilcoxon undefined: {error}"
    return PairedTest(n, mean, float(ci.low), float(ci.high), float(t.statistic), float(t.pvalue), p_w, note=note)


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


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)
