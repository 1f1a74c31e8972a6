"""Specification of the evaluation metrics and figures (training.evaluate).

Metrics agree with hand-computed values on tiny examples and with known limits (perfect,
random, reversed) on larger seeded samples; figures carry the expected lines, bars and titles;
bad input is refused with an error naming the argument.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: figures are only rendered to files

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from training.evaluate import (
    calibration_plot,
    classifier_metrics,
    cumulative_gain_plot,
    feature_importance_plot,
    ltv_decile_plot,
    ltv_metrics,
    metrics_table,
)


def perfect_scores(y: np.ndarray) -> np.ndarray:
    """Every positive scored above every negative."""
    return np.where(y == 1, 0.9, 0.1)


def renders(fig: Figure) -> bool:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.tell() > 0


# ---------------------------------------------------------------------------------------------
# classifier_metrics
# ---------------------------------------------------------------------------------------------


def test_perfect_classifier_has_auc_one_and_lift_of_one_over_positive_rate() -> None:
    y = np.array([1] * 25 + [0] * 75)

    metrics = classifier_metrics(y, perfect_scores(y))

    assert metrics["roc_auc"] == 1.0
    assert metrics["pr_auc"] == 1.0
    assert metrics["positive_rate"] == 0.25
    assert metrics["lift_top_decile"] == pytest.approx(1 / 0.25)
    assert metrics["n"] == 100


def test_lift_of_a_perfect_classifier_is_capped_at_ten_when_positives_are_rarer_than_a_decile() -> None:
    y = np.array([1] * 5 + [0] * 95)

    assert classifier_metrics(y, perfect_scores(y))["lift_top_decile"] == pytest.approx(10.0)


def test_random_scores_give_auc_near_one_half_and_lift_near_one() -> None:
    rng = np.random.default_rng(7)
    y = (rng.random(20_000) < 0.3).astype(int)

    metrics = classifier_metrics(y, rng.random(20_000))

    assert metrics["roc_auc"] == pytest.approx(0.5, abs=0.02)
    assert metrics["pr_auc"] == pytest.approx(0.3, abs=0.02)
    assert metrics["lift_top_decile"] == pytest.approx(1.0, abs=0.1)


def test_brier_and_log_loss_match_hand_computation() -> None:
    y = [1, 0, 1, 0]
    p = [0.8, 0.4, 0.6, 0.1]

    metrics = classifier_metrics(y, p)

    # squared errors 0.04, 0.16, 0.16, 0.01; likelihoods of what happened 0.8, 0.6, 0.6, 0.9
    assert metrics["brier"] == pytest.approx(0.37 / 4)
    assert metrics["log_loss"] == pytest.approx(
        -(math.log(0.8) + math.log(0.6) + math.log(0.6) + math.log(0.9)) / 4
    )


def test_log_loss_clips_certain_mistakes_to_a_finite_cost() -> None:
    metrics = classifier_metrics([1, 0], [0.0, 1.0])

    assert metrics["log_loss"] == pytest.approx(-math.log(1e-6))


def test_ece_is_zero_for_perfectly_calibrated_binned_probabilities() -> None:
    # 1,000 customers at each of five scores; exactly that share of each group is positive.
    scores = [0.1, 0.3, 0.5, 0.7, 0.9]
    p = np.repeat(scores, 1000)
    y = np.concatenate([np.arange(1000) < 1000 * s for s in scores]).astype(int)

    assert classifier_metrics(y, p)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_ece_is_large_for_overconfident_probabilities() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(10_000) < 0.5).astype(int)
    coin_flip_predicted_as_near_certain = np.where(rng.random(10_000) < 0.5, 0.01, 0.99)

    assert classifier_metrics(y, coin_flip_predicted_as_near_certain)["ece"] == pytest.approx(
        0.49, abs=0.02
    )


def test_ece_weights_each_bin_by_its_share_of_customers() -> None:
    # 30 customers at 0.2 of whom 40% are positive (gap 0.2); 10 at 0.6, exactly 60% positive.
    p = np.repeat([0.2, 0.6], [30, 10])
    y = np.concatenate([np.arange(30) < 12, np.arange(10) < 6]).astype(int)

    assert classifier_metrics(y, p)["ece"] == pytest.approx(30 / 40 * 0.2)


def test_single_class_labels_give_nan_auc_instead_of_an_error() -> None:
    metrics = classifier_metrics(np.zeros(50), np.linspace(0, 1, 50))

    assert math.isnan(metrics["roc_auc"])
    assert math.isnan(metrics["pr_auc"])
    assert math.isnan(metrics["lift_top_decile"])  # no positives to lift
    assert metrics["positive_rate"] == 0.0
    assert not math.isnan(metrics["brier"])


def test_constant_scores_have_lift_one_whatever_the_row_order() -> None:
    y = np.array([1] * 10 + [0] * 90)

    assert classifier_metrics(y, np.full(100, 0.3))["lift_top_decile"] == pytest.approx(1.0)


def test_classifier_metrics_accept_pandas_series_with_the_same_index() -> None:
    index = pd.Index([f"c{i}" for i in range(4)], name="customer_id")
    y = pd.Series([True, False, True, False], index=index)
    p = pd.Series([0.8, 0.4, 0.6, 0.1], index=index)

    assert classifier_metrics(y, p)["brier"] == pytest.approx(0.37 / 4)


# ---------------------------------------------------------------------------------------------
# ltv_metrics
# ---------------------------------------------------------------------------------------------


def test_gini_is_one_when_predictions_order_customers_like_actual_values() -> None:
    actual = np.array([0.0, 10.0, 25.0, 40.0, 300.0])

    metrics = ltv_metrics(actual, np.sqrt(actual))  # any increasing transform keeps the order

    assert metrics["gini_normalised"] == pytest.approx(1.0)
    assert metrics["spearman"] == pytest.approx(1.0)


def test_gini_is_minus_one_when_predictions_reverse_the_order() -> None:
    actual = np.array([0.0, 10.0, 25.0, 40.0, 300.0])

    assert ltv_metrics(actual, -actual)["gini_normalised"] == pytest.approx(-1.0)


def test_gini_is_near_zero_for_random_predictions() -> None:
    rng = np.random.default_rng(11)
    actual = rng.gamma(2.0, 50.0, 20_000)

    assert ltv_metrics(actual, rng.random(20_000))["gini_normalised"] == pytest.approx(0, abs=0.05)


def test_gini_gives_tied_predictions_no_credit_for_their_input_order() -> None:
    ascending = np.array([1.0, 2.0, 3.0, 4.0])
    tied = np.zeros(4)

    assert ltv_metrics(ascending, tied)["gini_normalised"] == pytest.approx(0.0)
    assert ltv_metrics(ascending[::-1], tied)["gini_normalised"] == pytest.approx(0.0)
    # Two tie groups ranked right: the Gini lies strictly between random (0) and perfect (1).
    partial = ltv_metrics(ascending, np.array([0.0, 0.0, 1.0, 1.0]))["gini_normalised"]
    assert 0.0 < partial < 1.0


def test_total_ratio_mae_and_rmse_match_hand_computation() -> None:
    metrics = ltv_metrics([10.0, 20.0, 30.0], [12.0, 18.0, 36.0])

    assert metrics["total_ratio"] == pytest.approx(66 / 60)
    assert metrics["mae"] == pytest.approx((2 + 2 + 6) / 3)
    assert metrics["rmse"] == pytest.approx(math.sqrt((4 + 4 + 36) / 3))
    assert metrics["n"] == 3


def test_decile_mape_skips_groups_whose_actual_total_is_zero() -> None:
    predicted = np.arange(1.0, 11.0)  # one customer per group
    actual = np.array([0.0, 2, 3, 4, 5, 6, 7, 8, 9, 20])

    # group 1 (actual 0) is skipped; group 10 is off by |10 - 20| / 20; the other 8 are exact
    assert ltv_metrics(actual, predicted)["decile_mape"] == pytest.approx(0.5 / 9)


def test_decile_mape_compares_group_totals_not_customers() -> None:
    predicted = np.arange(1.0, 21.0)  # groups are consecutive pairs
    actual = predicted.reshape(10, 2)[:, ::-1].ravel()  # swapped within each pair

    metrics = ltv_metrics(actual, predicted)

    assert metrics["decile_mape"] == pytest.approx(0.0)
    assert metrics["mae"] == pytest.approx(1.0)


def test_ltv_metrics_that_divide_by_total_value_are_nan_when_nobody_spent() -> None:
    metrics = ltv_metrics(np.zeros(20), np.linspace(0, 5, 20))

    assert math.isnan(metrics["total_ratio"])
    assert math.isnan(metrics["gini_normalised"])
    assert math.isnan(metrics["decile_mape"])
    assert math.isnan(metrics["spearman"])


# ---------------------------------------------------------------------------------------------
# Refusing bad input
# ---------------------------------------------------------------------------------------------


def test_metrics_refuse_inputs_of_different_lengths() -> None:
    with pytest.raises(ValueError, match=r"y_true=3, p_pred=2"):
        classifier_metrics([0, 1, 1], [0.2, 0.7])
    with pytest.raises(ValueError, match=r"actual=2, predicted=3"):
        ltv_metrics([1.0, 2.0], [1.0, 2.0, 3.0])


def test_metrics_refuse_nan_and_say_where_it_is() -> None:
    with pytest.raises(ValueError, match=r"p_pred: 1 value\(s\) \(positions 1: nan\)"):
        classifier_metrics([0, 1, 1], [0.2, np.nan, 0.9])
    with pytest.raises(ValueError, match=r"actual: 1 value\(s\) \(positions 0: nan\)"):
        ltv_metrics(pd.Series([None, 2.0]), [1.0, 2.0])


def test_classifier_metrics_refuse_labels_that_are_not_zero_or_one() -> None:
    with pytest.raises(ValueError, match="y_true: .* are not 0 or 1"):
        classifier_metrics([0, 1, 2], [0.1, 0.5, 0.9])


def test_classifier_metrics_refuse_scores_outside_zero_one() -> None:
    with pytest.raises(ValueError, match=r"outside \[0, 1\].*predict_proba"):
        classifier_metrics([0, 1], [-1.3, 2.1])


def test_series_with_different_indexes_are_refused_rather_than_paired_by_position() -> None:
    y = pd.Series([0, 1, 1], index=["a", "b", "c"])
    p = pd.Series([0.9, 0.1, 0.2], index=["c", "a", "b"])

    with pytest.raises(ValueError, match="different indexes"):
        classifier_metrics(y, p)


def test_plots_refuse_predictions_that_do_not_match_the_outcomes() -> None:
    with pytest.raises(ValueError, match=r"predictions\['lightgbm'\]=2"):
        calibration_plot([0, 1, 1], {"lightgbm": [0.2, 0.7]}, "calibration")
    with pytest.raises(ValueError, match="predictions is empty"):
        ltv_decile_plot([1.0, 2.0], {}, "ltv")


def test_cumulative_gain_plot_refuses_outcomes_without_positives() -> None:
    with pytest.raises(ValueError, match="no positives"):
        cumulative_gain_plot([0, 0, 0], {"model": [0.1, 0.2, 0.3]}, "gain")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def churn_outcomes() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(5)
    p_true = rng.beta(2, 5, 2_000)
    y = (rng.random(2_000) < p_true).astype(int)
    return y, {"model": p_true, "overconfident": p_true**3, "base rate": np.full(2_000, y.mean())}


def test_calibration_plot_draws_one_curve_per_model_plus_the_diagonal(churn_outcomes) -> None:
    y, predictions = churn_outcomes

    fig = calibration_plot(y, predictions, "Churn calibration")

    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert ax.get_title() == "Churn calibration"
    assert len(ax.lines) == len(predictions) + 1
    assert len(ax.lines[0].get_xdata()) == 10  # ten quantile bins for continuous scores
    assert renders(fig)


def test_cumulative_gain_plot_runs_from_nothing_to_all_positives(churn_outcomes) -> None:
    y, predictions = churn_outcomes

    fig = cumulative_gain_plot(y, predictions, "Churn gain")

    ax = fig.axes[0]
    assert ax.get_title() == "Churn gain"
    assert len(ax.lines) == len(predictions) + 1
    for line in ax.lines[: len(predictions)]:
        assert (line.get_xdata()[0], line.get_ydata()[0]) == (0.0, 0.0)
        assert line.get_xdata()[-1] == pytest.approx(1.0)
        assert line.get_ydata()[-1] == pytest.approx(1.0)
    assert renders(fig)


def test_ltv_decile_plot_draws_actual_and_predicted_lines_per_model() -> None:
    rng = np.random.default_rng(9)
    actual = rng.gamma(2.0, 50.0, 500)
    predictions = {"model": actual * rng.lognormal(0, 0.3, 500), "mean": np.full(500, 100.0)}

    fig = ltv_decile_plot(actual, predictions, "LTV by decile")

    ax = fig.axes[0]
    assert ax.get_title() == "LTV by decile"
    assert len(ax.lines) == 2 * len(predictions)
    assert all(len(line.get_xdata()) == 10 for line in ax.lines)
    assert "shop currency" in ax.get_ylabel()
    assert renders(fig)


def test_feature_importance_plot_shows_the_top_features_largest_on_top() -> None:
    importance = pd.Series(np.arange(30.0), index=[f"feature_{i}" for i in range(30)])

    fig = feature_importance_plot(importance, "What drives churn", top=5)

    ax = fig.axes[0]
    assert ax.get_title() == "What drives churn"
    assert len(ax.patches) == 5
    labels_top_to_bottom = [t.get_text() for t in ax.get_yticklabels()]
    assert labels_top_to_bottom == [f"feature_{i}" for i in range(29, 24, -1)]
    assert ax.yaxis_inverted()
    assert renders(fig)


def test_feature_importance_plot_shows_all_features_when_fewer_than_top() -> None:
    fig = feature_importance_plot(pd.Series({"recency_days": 3.0, "frequency": 1.0}), "few")

    assert len(fig.axes[0].patches) == 2


def test_figures_are_not_left_open_in_pyplot(churn_outcomes) -> None:
    y, predictions = churn_outcomes
    open_before = plt.get_fignums()

    calibration_plot(y, predictions, "calibration")
    cumulative_gain_plot(y, predictions, "gain")

    assert plt.get_fignums() == open_before


# ---------------------------------------------------------------------------------------------
# metrics_table
# ---------------------------------------------------------------------------------------------


def test_metrics_table_has_models_as_rows_and_metrics_as_columns() -> None:
    table = metrics_table(
        {
            "lightgbm": {"roc_auc": 0.81, "brier": 0.12},
            "base rate": {"roc_auc": 0.5, "brier": 0.16, "ece": 0.0},
        }
    )

    assert list(table.index) == ["lightgbm", "base rate"]
    assert table.index.name == "model"
    assert list(table.columns) == ["roc_auc", "brier", "ece"]
    assert table.loc["lightgbm", "brier"] == 0.12
    assert math.isnan(table.loc["lightgbm", "ece"])
