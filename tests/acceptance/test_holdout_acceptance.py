"""The issue's acceptance on CDNOW, as a test: the benchmark script's own comparison must pass.

Trained before 1998-01-01 with the default settings (tuning included), scored at 1998-01-01 and compared
with the real purchases to 1998-06-30, lifetag beats BG/NBD + Gamma-Gamma fitted on the same
history on churn AUC, repurchase AUC, LTV Spearman and LTV Gini, with total spend within +-5%.
"""
from __future__ import annotations

import pytest

from benchmarks.holdout import ACCEPTANCE, acceptance_failures, run_cdnow


@pytest.fixture(scope="module")
def cdnow_holdout(cdnow_path):  # noqa: ANN001 - the fixture asserts the panel is present
    return run_cdnow()  # the default trials from config, as `lifetag train` runs


@pytest.mark.slow
def test_cdnow_acceptance_criteria_are_met(cdnow_holdout) -> None:  # noqa: ANN001
    assert acceptance_failures(cdnow_holdout) == []


@pytest.mark.slow
def test_cdnow_holdout_scores_every_customer_and_uses_lightgbm(cdnow_holdout) -> None:  # noqa: ANN001
    assert cdnow_holdout.customers == 23_570
    for name, result in cdnow_holdout.train.results.items():
        assert not result.fallback_reason, f"{name} fell back to BG/NBD: {result.fallback_reason}"
        assert result.model.kind in ("lgbm", "hurdle")


@pytest.mark.slow
def test_acceptance_check_detects_a_miss(cdnow_holdout) -> None:  # noqa: ANN001
    # The check itself must be able to fail: swap lifetag's and BG/NBD's figures.
    for target, metric in ACCEPTANCE:
        by_model = cdnow_holdout.metrics[target]
        swapped = {**by_model, "lifetag": by_model["bgnbd"], "bgnbd": by_model["lifetag"]}
        original = cdnow_holdout.metrics[target]
        cdnow_holdout.metrics[target] = swapped
        try:
            assert any(target in failure and metric in failure for failure in acceptance_failures(cdnow_holdout))
        finally:
            cdnow_holdout.metrics[target] = original
