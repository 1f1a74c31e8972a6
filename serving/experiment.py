"""Two-arm comparisons for campaign evaluation: differences of rates and means with confidence intervals,
p-values, and the sample-ratio-mismatch check of a split.

Pure functions of counts and arrays (numpy, scipy); nothing here knows about files, tags or campaigns.
Every difference is treatment - control. Methods, as the campaign result states them:

- a rate (conversion): Newcombe's hybrid score interval (method 10 of Newcombe 1998) built from the
  two Wilson score intervals, and the two-sided two-proportion z-test with the pooled rate;
- a mean (orders, spend per customer): Welch's t interval and two-sided Welch t-test (unequal
  variances); optionally a seeded percentile bootstrap interval beside it (each arm resampled on its own);
- the split: Pearson's chi-square goodness of fit of the arms' counts to the intended shares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["MEAN_METHOD", "RATE_METHOD", "Difference", "SampleRatio", "bootstrap_interval", "mean_difference",
           "rate_difference", "sample_ratio", "wilson_interval"]

RATE_METHOD = ("Newcombe hybrid score interval (from the two Wilson intervals); two-sided two-proportion z-test, "
               "pooled rate")
MEAN_METHOD = "Welch's t interval and two-sided Welch t-test (unequal variances)"
# Resamples drawn at once are capped at this many values, so a large arm never needs gigabytes.
_BOOTSTRAP_BLOCK = 4_000_000


@dataclass(frozen=True)
class Difference:
    """Treatment against control on one measure: the arms' means, their difference and its uncertainty.

    treatment, control: mean per customer (a rate for a yes/no measure).
    difference: treatment - control; ci_low / ci_high: its confidence interval; p_value: two-sided,
    for "no difference".
    """

    treatment: float
    control: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


@dataclass(frozen=True)
class SampleRatio:
    """The split against the intended one: counts, the intended treatment share, the chi-square p-value."""

    treatment: int
    control: int
    intended_share: float
    p_value: float
    threshold: float

    @property
    def observed_share(self) -> float:
        """Share of the assigned customers in treatment."""
        return self.treatment / (self.treatment + self.control)

    @property
    def mismatch(self) -> bool:
        """True when a split this far from the intended one is unlikely by chance (p below the threshold)."""
        return self.p_value < self.threshold


def _z(confidence: float) -> float:
    return float(stats.norm.ppf(0.5 + confidence / 2))


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a proportion (sensible at 0 and n successes, unlike the Wald interval)."""
    z = _z(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_difference(treated_yes: int, treated: int, control_yes: int, control: int,
                    confidence: float) -> Difference:
    """Difference of two proportions: Newcombe's hybrid score interval and the pooled two-proportion z-test."""
    p1, p2 = treated_yes / treated, control_yes / control
    l1, u1 = wilson_interval(treated_yes, treated, confidence)
    l2, u2 = wilson_interval(control_yes, control, confidence)
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = (treated_yes + control_yes) / (treated + control)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / treated + 1 / control))
    # Nobody (or everybody) said yes in either arm: the arms cannot differ.
    p_value = 1.0 if spread == 0 else float(2 * stats.norm.sf(abs(d) / spread))
    return Difference(p1, p2, d, low, high, p_value, RATE_METHOD)


def mean_difference(treated: np.ndarray, control: np.ndarray, confidence: float) -> Difference:
    """Difference of two means: Welch's t interval and two-sided Welch t-test. Each arm needs 2 values."""
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    m1, m2 = float(treated.mean()), float(control.mean())
    d = m1 - m2
    if treated.var() == 0 and control.var() == 0:
        # Both arms constant: the difference is known exactly (Welch's statistic is 0/0).
        return Difference(m1, m2, d, d, d, 1.0 if d == 0 else 0.0, MEAN_METHOD)
    test = stats.ttest_ind(treated, control, equal_var=False)
    interval = test.confidence_interval(confidence_level=confidence)
    return Difference(m1, m2, d, float(interval.low), float(interval.high), float(test.pvalue), MEAN_METHOD)


def _bootstrap_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    means = np.empty(resamples)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    for first in range(0, resamples, block):
        count = min(block, resamples - first)
        means[first:first + count] = values[rng.integers(0, n, size=(count, n))].mean(axis=1)
    return means


def bootstrap_interval(treated: np.ndarray, control: np.ndarray, confidence: float, resamples: int,
                       seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the difference of means, each arm resampled on its own; the same
    seed and arrays give the same interval."""
    rng = np.random.default_rng(seed)
    differences = (_bootstrap_means(np.asarray(treated, dtype=float), resamples, rng)
                   - _bootstrap_means(np.asarray(control, dtype=float), resamples, rng))
    tail = (1 - confidence) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return float(low), float(high)


def sample_ratio(treated: int, control: int, intended_share: float, threshold: float) -> SampleRatio:
    """Chi-square goodness of fit of the arms' counts to the intended treatment share."""
    total = treated + control
    expected = [total * intended_share, total * (1 - intended_share)]
    p_value = float(stats.chisquare([treated, control], f_exp=expected).pvalue)
    return SampleRatio(treated, control, intended_share, p_value, threshold)
