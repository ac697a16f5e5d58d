"""Statistics: checked against independent computations, and the degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from spocu.experiments.results.stats import holm, mcnemar_test, paired_test, summarize


def test_summary_mean_sd_and_ci():
    values = [0.91, 0.93, 0.92, 0.95, 0.90, 0.94]
    s = summarize(values)
    assert s.n == 6
    assert s.mean == pytest.approx(np.mean(values), abs=1e-15)
    assert s.sd == pytest.approx(math.sqrt(sum((v - np.mean(values)) ** 2 for v in values) / 5), rel=1e-12)
    # the Student-t interval (a bootstrap interval under-covers at this n: see test_verdict.py)
    t_low, t_high = sps.t.interval(0.95, 5, loc=np.mean(values), scale=sps.sem(values))
    assert (s.ci_low, s.ci_high) == pytest.approx((t_low, t_high), rel=1e-12)


def test_summary_degenerate_cases():
    assert summarize([0.9, 0.9, 0.9]).note.startswith("all values equal")
    assert summarize([0.9, 0.9, 0.9]).sd == 0.0
    one = summarize([0.8])
    assert one.n == 1 and math.isnan(one.sd) and "n < 2" in one.note
    assert summarize([]).n == 0
    assert summarize([0.5, None, float("nan"), 0.7]).n == 2


def test_paired_test_direction_and_p_value():
    ref = {0: 0.90, 1: 0.91, 2: 0.89, 3: 0.92, 4: 0.90}
    other = {0: 0.92, 1: 0.92, 2: 0.92, 3: 0.93, 4: 0.93}
    result = paired_test(ref, other)
    diff = np.array([other[s] - ref[s] for s in sorted(ref)])
    t = diff.mean() / (diff.std(ddof=1) / math.sqrt(len(diff)))
    assert result.mean_difference == pytest.approx(diff.mean()) and result.mean_difference > 0
    assert result.t_statistic == pytest.approx(t)
    assert result.p_ttest == pytest.approx(2 * sps.t.sf(abs(t), len(diff) - 1))
    half = sps.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff))
    assert (result.ci_low, result.ci_high) == pytest.approx((diff.mean() - half, diff.mean() + half))
    # all five differences positive: the exact two-sided Wilcoxon p is 2 / 2**5
    assert result.p_wilcoxon == pytest.approx(2 / 32)


def test_paired_test_uses_only_common_seeds():
    result = paired_test({0: 0.9, 1: 0.8, 2: 0.7}, {1: 0.85, 2: 0.7, 9: 0.1})
    assert result.n == 2 and result.mean_difference == pytest.approx(0.025)


def test_paired_test_degenerate_cases():
    same = paired_test({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8})
    assert same.p_ttest == 1.0 and "identical" in same.note
    shifted = paired_test({0: 0.9, 1: 0.8}, {0: 0.95, 1: 0.85})
    assert math.isnan(shifted.p_ttest) and "no variance" in shifted.note
    assert shifted.mean_difference == pytest.approx(0.05)
    single = paired_test({0: 0.9}, {0: 0.95})
    assert math.isnan(single.p_ttest) and "n < 2" in single.note
    assert paired_test({}, {}).n == 0


def test_holm_against_the_step_down_definition():
    p = [0.01, 0.04, 0.03, 0.20]
    # Holm: sort ascending, multiply the i-th smallest by (m - i), take running maxima, cap at 1
    order = np.argsort(p)
    adjusted = np.empty(4)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (4 - rank) * p[index]))
        adjusted[index] = running
    np.testing.assert_allclose(holm(p), adjusted)
    with_nan = holm([0.01, float("nan"), 0.04])
    assert math.isnan(with_nan[1]) and with_nan[0] == pytest.approx(0.02) and with_nan[2] == pytest.approx(0.04)
    assert holm([]) == []


def test_mcnemar_table_and_exact_p():
    y = np.zeros(100, dtype=int)
    ref = np.zeros(100, dtype=int)
    other = np.zeros(100, dtype=int)
    ref[:12] = 1  # reference wrong on 0..11
    other[8:10] = 1  # other wrong on 8, 9 (both wrong there)
    other[50:53] = 1  # other wrong only on 50..52
    result = mcnemar_test(y, ref, other)
    # [[both right, only reference right], [only other right, both wrong]]
    assert result.table == [[85, 3], [10, 2]]
    assert result.p_value == pytest.approx(sps.binomtest(3, 13, 0.5).pvalue)
