"""The two-arm statistics behind `lifetag campaign`, against published values and scipy."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from serving.experiment import bootstrap_interval, mean_difference, rate_difference, sample_ratio, wilson_interval


def test_the_rate_interval_is_newcombes_hybrid_score_interval() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 vs 48/80 -> 0.0524 to 0.3339 (method 10).
    d = rate_difference(56, 70, 48, 80, 0.95)
    assert d.difference == pytest.approx(0.2)
    assert (round(d.ci_low, 4), round(d.ci_high, 4)) == (0.0524, 0.3339)
    # ... and 9/10 vs 3/10 -> 0.1705 to 0.8090.
    d = rate_difference(9, 10, 3, 10, 0.95)
    assert (round(d.ci_low, 4), round(d.ci_high, 4)) == (0.1705, 0.8090)


def test_the_rate_p_value_is_the_pooled_two_proportion_z_test() -> None:
    d = rate_difference(56, 70, 48, 80, 0.95)
    table = np.array([[56, 14], [48, 32]])
    assert d.p_value == pytest.approx(stats.chi2_contingency(table, correction=False).pvalue)
    assert rate_difference(0, 40, 0, 50, 0.95).p_value == 1.0  # nobody converted: nothing can differ


def test_wilson_interval_stays_inside_zero_and_one() -> None:
    assert wilson_interval(0, 20, 0.95)[0] == 0.0 and wilson_interval(20, 20, 0.95)[1] == 1.0
    low, high = wilson_interval(0, 20, 0.95)
    assert high == pytest.approx(0.1611, abs=1e-4)


def test_the_mean_difference_is_welchs() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.exponential(20, 400), rng.exponential(15, 300)
    d = mean_difference(a, b, 0.95)
    test = stats.ttest_ind(a, b, equal_var=False)
    assert d.p_value == pytest.approx(test.pvalue)
    assert (d.ci_low, d.ci_high) == pytest.approx(tuple(test.confidence_interval(0.95)))
    constant = mean_difference(np.zeros(40), np.zeros(40), 0.95)
    assert (constant.difference, constant.ci_low, constant.ci_high, constant.p_value) == (0, 0, 0, 1.0)


def test_the_bootstrap_interval_is_seeded_and_near_welchs_on_large_arms() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.exponential(20, 2_000), rng.exponential(18, 2_000)
    first = bootstrap_interval(a, b, 0.95, 2_000, seed=7)
    assert first == bootstrap_interval(a, b, 0.95, 2_000, seed=7)
    welch = mean_difference(a, b, 0.95)
    assert first == pytest.approx((welch.ci_low, welch.ci_high), abs=0.2)


def test_the_split_check_flags_only_a_real_mismatch() -> None:
    assert not sample_ratio(5_050, 4_950, 0.5, 0.001).mismatch
    skewed = sample_ratio(5_250, 4_750, 0.5, 0.001)
    assert skewed.mismatch and skewed.p_value == pytest.approx(stats.chisquare([5_250, 4_750]).pvalue)
    assert not sample_ratio(8_000, 2_000, 0.8, 0.001).mismatch and skewed.observed_share == 0.525
