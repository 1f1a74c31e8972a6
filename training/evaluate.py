"""Model evaluation: metrics and figures for churn / repurchase classifiers and LTV regressors.

Pure functions on one value per customer (numpy arrays or pandas Series, paired by position).
Nothing here logs anywhere: the caller puts the metrics and figures into its MLflow run.

Shared conventions:

- ``y_true`` is the observed outcome, 1 if the event happened (e.g. the customer churned) and
  0 if not; ``p_pred`` is the predicted probability of that event, in [0, 1].
- ``actual`` / ``predicted`` are customer values (LTV) in the shop's currency; negative values
  (net refunds) are allowed.
- Rankings break ties between equal scores without looking at outcomes: calibration bins keep
  tied scores together, lift and gain curves share a tie group's positives pro rata (the
  expected result of random tie-breaking), and the LTV decile metrics keep input order
  (stable sort).
- Figures are ``matplotlib.figure.Figure`` objects built without ``pyplot``: nothing is shown,
  nothing needs closing, and ``fig.savefig`` / ``mlflow.log_figure`` render them with Agg.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from itertools import cycle

import numpy as np
import numpy.typing as npt
import pandas as pd
from matplotlib import rcParams
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

__all__ = [
    "calibration_curve",
    "calibration_plot",
    "classifier_metrics",
    "cumulative_gain_curve",
    "cumulative_gain_plot",
    "feature_importance_plot",
    "gini_difference_interval",
    "ltv_decile_plot",
    "log_loss",
    "log_loss_difference_interval",
    "ltv_metrics",
    "metrics_table",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

N_BINS = 10
"""Calibration bins and LTV groups: deciles."""
TOP_SHARE = 0.10
"""Share of customers, highest scores first, that ``lift_top_decile`` looks at."""
LOG_LOSS_CLIP = 1e-6
"""Probabilities are clipped to [LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP] for ``log_loss`` only."""


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def log_loss(y_true: np.ndarray, p_pred: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 outcomes, probabilities clipped as in ``classifier_metrics``."""
    clipped = np.clip(p_pred, LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    return float(-np.mean(y_true * np.log(clipped) + (1 - y_true) * np.log(1 - clipped)))


def classifier_metrics(y_true: ArrayLike, p_pred: ArrayLike) -> dict[str, float]:
    """Discrimination, calibration and targeting metrics of predicted event probabilities.

    Returns
    -------
    dict with

    - ``roc_auc``: area under the ROC curve;
    - ``pr_auc``: average precision (area under the precision-recall curve);
    - ``brier``: mean squared error of ``p_pred``;
    - ``log_loss``: mean negative log-likelihood, probabilities clipped to [1e-6, 1 - 1e-6]
      so one confident mistake costs at most ~13.8 instead of infinity;
    - ``ece``: expected calibration error over 10 equal-frequency bins of ``p_pred``
      (quantile edges; tied scores stay in one bin, so repeated scores give fewer, larger
      bins): ``sum over bins of (bin size / n) * |positive rate - mean p_pred|``;
    - ``lift_top_decile``: positive rate among the 10% of customers with the highest scores
      divided by the overall positive rate. At most ``1 / positive_rate`` and at most 10;
      customers tied at the cut-off count pro rata. NaN when there are no positives;
    - ``positive_rate``: share of customers with ``y_true == 1``;
    - ``n``: number of customers.

    When ``y_true`` holds a single class, ``roc_auc`` and ``pr_auc`` are NaN rather than an
    error, so a quiet evaluation window does not stop a training run.
    """
    y, p = _labels_and_probabilities("y_true", y_true, "p_pred", p_pred)
    both_classes = 0 < y.sum() < y.size
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both_classes else np.nan,
        "pr_auc": float(average_precision_score(y, p)) if both_classes else np.nan,
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": log_loss(y, p),
        "ece": _expected_calibration_error(y, p),
        "lift_top_decile": _lift(y, p, TOP_SHARE),
        "positive_rate": float(y.mean()),
        "n": int(y.size),
    }


def ltv_metrics(actual: ArrayLike, predicted: ArrayLike) -> dict[str, float]:
    """Ranking, aggregate and per-customer accuracy of predicted customer values (LTV).

    Returns
    -------
    dict with

    - ``spearman``: rank correlation of ``predicted`` with ``actual``; NaN if either is
      constant;
    - ``gini_normalised``: Gini of ``actual`` ordered by ``predicted`` divided by the Gini of
      ``actual`` ordered by itself (the insurance / Kaggle definition): 1 for a perfect
      ordering, about 0 for a random one, -1 for the reversed one. Tied predictions keep
      their input order (stable sort), so the result is deterministic but does depend on row
      order within ties. NaN if ``actual`` sums to 0 or is constant;
    - ``decile_mape``: customers split into 10 equal-size groups by ``predicted`` (sizes
      differ by at most one; fewer groups when there are fewer than 10 customers); for each
      group ``|predicted total - actual total| / |actual total|``, averaged over groups, as a
      fraction (0.1 = 10%). Groups whose actual total is 0 are skipped; NaN if all are;
    - ``total_ratio``: ``sum(predicted) / sum(actual)``; NaN if ``actual`` sums to 0;
    - ``mae``, ``rmse``: per-customer absolute and root-mean-square error, in currency;
    - ``n``: number of customers.
    """
    a, p = _paired_values("actual", actual, "predicted", predicted)
    actual_total = a.sum()
    return {
        "spearman": _spearman(a, p),
        "gini_normalised": _gini_normalised(a, p),
        "decile_mape": _decile_mape(a, p),
        "total_ratio": float(p.sum() / actual_total) if actual_total != 0 else np.nan,
        "mae": float(np.mean(np.abs(p - a))),
        "rmse": float(np.sqrt(np.mean((p - a) ** 2))),
        "n": int(a.size),
    }


def metrics_table(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """One row per model (index ``model``), one column per metric, for printing.

    Metrics missing for a model are NaN; columns appear in the order they are first met.
    """
    if not rows:
        raise ValueError("metrics_table needs at least one model: rows is empty.")
    table = pd.DataFrame.from_dict(
        {model: dict(metrics) for model, metrics in rows.items()}, orient="index"
    )
    table.index.name = "model"
    return table


def calibration_curve(y_true: ArrayLike, p_pred: ArrayLike) -> dict[str, list[float]]:
    """The reliability curve behind ``calibration_plot`` and ``ece`` as numbers, per quantile bin:
    ``mean_predicted``, ``positive_rate`` and ``customers`` (JSON-ready, for a run's artifacts)."""
    y, p = _labels_and_probabilities("y_true", y_true, "p_pred", p_pred)
    mean_p, positive_rate, sizes = _calibration_bins(y, p)
    return {"mean_predicted": [float(v) for v in mean_p], "positive_rate": [float(v) for v in positive_rate],
            "customers": [int(v) for v in sizes]}


def cumulative_gain_curve(y_true: ArrayLike, p_pred: ArrayLike, points: int = 101) -> dict[str, list[float]]:
    """The curve of ``cumulative_gain_plot`` at ``points`` evenly spaced shares of customers targeted:
    ``targeted_share`` (0 to 1, highest scores first) and ``captured_share`` of all positives (ties
    shared pro rata, as in the plot). JSON-ready."""
    y, p = _labels_and_probabilities("y_true", y_true, "p_pred", p_pred)
    if y.sum() == 0:
        raise ValueError("y_true has no positives, so there is nothing to capture: a cumulative gain curve "
                         "needs at least one customer with y_true == 1.")
    targeted, captured = _gain_curve(y, p)
    shares = np.linspace(0, 1, points)
    return {"targeted_share": [float(v) for v in shares],
            "captured_share": [float(v) for v in np.interp(shares * y.size, targeted, captured) / y.sum()]}


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def calibration_plot(
    y_true: ArrayLike, predictions: Mapping[str, ArrayLike], title: str
) -> Figure:
    """Reliability curves: observed positive rate against mean predicted probability.

    One line per entry of ``predictions`` (the same 10 quantile bins as ``ece``, which the
    legend shows) plus the diagonal of perfect calibration.
    """
    y = _labels("y_true", y_true)
    checked = _validated_predictions("y_true", y_true, y, predictions, _probabilities)
    fig, ax = _new_axes(title)
    for name, p_pred in checked.items():
        mean_p, positive_rate, _ = _calibration_bins(y, p_pred)
        ece = _expected_calibration_error(y, p_pred)
        ax.plot(mean_p, positive_rate, marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability in bin")
    ax.set_ylabel("observed positive rate in bin")
    ax.legend(loc="upper left")
    return fig


def cumulative_gain_plot(
    y_true: ArrayLike, predictions: Mapping[str, ArrayLike], title: str
) -> Figure:
    """Share of all positives captured against share of customers targeted, best scores first.

    One line per entry of ``predictions`` plus the random-targeting diagonal. Tied scores are
    drawn as a straight segment (their positives shared pro rata).
    """
    y = _labels("y_true", y_true)
    if y.sum() == 0:
        raise ValueError(
            "y_true has no positives, so there is nothing to capture: a cumulative gain curve "
            "needs at least one customer with y_true == 1."
        )
    checked = _validated_predictions("y_true", y_true, y, predictions, _probabilities)
    fig, ax = _new_axes(title)
    for name, p_pred in checked.items():
        targeted, captured = _gain_curve(y, p_pred)
        ax.plot(targeted / y.size, captured / y.sum(), label=name)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random targeting")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel("customers targeted (% of all, highest scores first)")
    ax.set_ylabel("positives captured (% of all positives)")
    ax.legend(loc="lower right")
    return fig


def ltv_decile_plot(
    actual: ArrayLike,
    predictions: Mapping[str, ArrayLike],
    title: str,
    *,
    currency: str = "shop currency",
) -> Figure:
    """Mean actual and mean predicted value per customer in each decile of predicted value.

    Each model is ranked by its own predictions (decile 1 = lowest predicted). Two lines per
    model in one colour: solid for the mean actual value, dashed for the mean predicted value.
    ``currency`` only labels the y axis.
    """
    a = _values("actual", actual)
    checked = _validated_predictions("actual", actual, a, predictions, _values)
    fig, ax = _new_axes(title)
    for (name, predicted), colour in zip(checked.items(), _model_colours()):
        groups = _equal_size_groups(predicted)
        deciles = np.arange(1, len(groups) + 1)
        ax.plot(deciles, [a[g].mean() for g in groups], color=colour, marker="o",
                label=f"{name}: mean actual")
        ax.plot(deciles, [predicted[g].mean() for g in groups], color=colour, marker="x",
                linestyle="--", label=f"{name}: mean predicted")
    ax.set_xticks(np.arange(1, N_BINS + 1))
    ax.set_xlabel("decile of predicted value (1 = lowest)")
    ax.set_ylabel(f"mean value per customer ({currency})")
    ax.legend(loc="upper left")
    return fig


def feature_importance_plot(importance: pd.Series, title: str, top: int = 20) -> Figure:
    """Horizontal bars of the ``top`` largest importances (index = feature name), largest on top."""
    if not isinstance(importance, pd.Series):
        raise ValueError(
            "importance must be a pandas Series with feature names as index, e.g. "
            "pd.Series(model.feature_importances_, index=feature_names); "
            f"got {type(importance).__name__}."
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a whole number >= 1, got {top!r}.")
    values = _values("importance", importance)
    shown = pd.Series(values, index=importance.index.astype(str)).sort_values(
        ascending=False, kind="stable"
    ).head(top)
    fig = Figure(figsize=(7, 1.5 + 0.3 * len(shown)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(np.arange(len(shown)), shown.to_numpy(), color="tab:blue")
    ax.set_yticks(np.arange(len(shown)), labels=list(shown.index))
    ax.invert_yaxis()  # barh draws the first bar at the bottom; the largest belongs on top
    ax.set_title(title)
    ax.set_xlabel("importance (model's own measure, e.g. total gain)")
    ax.set_ylabel("feature")
    return fig


# ---------------------------------------------------------------------------------------------
# Metric building blocks
# ---------------------------------------------------------------------------------------------


def _quantile_bins(p_pred: FloatArray) -> IntArray:
    """Bin number 0..k-1 of each score, k <= 10, from the score's deciles; ties share a bin."""
    edges = np.quantile(p_pred, np.linspace(0, 1, N_BINS + 1)[1:-1])
    raw = np.searchsorted(edges, p_pred, side="right")
    # Repeated edges leave some bin numbers unused; renumber the used ones consecutively.
    return np.unique(raw, return_inverse=True)[1]


def _calibration_bins(y: FloatArray, p_pred: FloatArray) -> tuple[FloatArray, FloatArray, IntArray]:
    """Mean predicted probability, positive rate and size of each quantile bin."""
    bins = _quantile_bins(p_pred)
    sizes = np.bincount(bins)
    mean_p = np.bincount(bins, weights=p_pred) / sizes
    positive_rate = np.bincount(bins, weights=y) / sizes
    return mean_p, positive_rate, sizes


def _expected_calibration_error(y: FloatArray, p_pred: FloatArray) -> float:
    mean_p, positive_rate, sizes = _calibration_bins(y, p_pred)
    return float(np.sum(sizes / y.size * np.abs(positive_rate - mean_p)))


def _gain_curve(y: FloatArray, p_pred: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Customers targeted and positives captured at each tie-group boundary, from (0, 0).

    Straight lines between the points are the expected curve under random tie-breaking.
    """
    order = np.argsort(-p_pred, kind="stable")
    scores = p_pred[order]
    group_ends = np.append(np.flatnonzero(np.diff(scores) != 0), scores.size - 1)
    targeted = np.append(0.0, group_ends + 1.0)
    captured = np.append(0.0, np.cumsum(y[order])[group_ends])
    return targeted, captured


def _lift(y: FloatArray, p_pred: FloatArray, share: float) -> float:
    """Positive rate in the top ``share`` of customers by score over the overall rate."""
    positives = y.sum()
    if positives == 0:
        return np.nan
    targeted, captured = _gain_curve(y, p_pred)
    cut_off = share * y.size
    top_rate = np.interp(cut_off, targeted, captured) / cut_off
    return float(top_rate / (positives / y.size))


def _spearman(actual: FloatArray, predicted: FloatArray) -> float:
    # spearmanr warns and returns NaN on constant input; say NaN without the warning.
    if np.ptp(actual) == 0 or np.ptp(predicted) == 0:
        return np.nan
    return float(spearmanr(actual, predicted).statistic)


def _gini(actual: FloatArray, predicted: FloatArray) -> float:
    """Unnormalised Gini of ``actual`` with customers ordered by ``predicted``, highest first.

    Customers with tied predictions share their group's mean outcome (the expected curve over any
    order among them), so a model gets no credit for the order its ties happen to be stored in.
    """
    order = np.argsort(-predicted, kind="stable")
    ordered, keys = actual[order].astype(float), predicted[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, keys.size])
    ordered = np.repeat(np.add.reduceat(ordered, starts) / sizes, sizes) if keys.size else ordered
    n = ordered.size
    return float((np.cumsum(ordered).sum() / ordered.sum() - (n + 1) / 2) / n)


def _gini_normalised(actual: FloatArray, predicted: FloatArray) -> float:
    if actual.sum() == 0:
        return np.nan
    best = _gini(actual, actual)
    return _gini(actual, predicted) / best if best != 0 else np.nan


def gini_difference_interval(actual: ArrayLike, first: ArrayLike, second: ArrayLike, level: float = 0.90,
                             resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """A paired bootstrap interval (customers resampled) of normalised Gini of `first` minus that of `second`,
    both ranking the same customers' `actual` values."""
    actual_v, first_v, second_v = (np.asarray(v, dtype=float) for v in (actual, first, second))
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        pick = rng.integers(0, actual_v.size, actual_v.size)
        differences.append(_gini_normalised(actual_v[pick], first_v[pick]) - _gini_normalised(actual_v[pick], second_v[pick]))
    low, high = np.nanquantile(differences, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def log_loss_difference_interval(y_true: ArrayLike, first: ArrayLike, second: ArrayLike, level: float = 0.90,
                                 resamples: int = 200, seed: int = 0) -> tuple[float, float]:
    """A paired bootstrap interval (examples resampled) of the log loss of `first` minus that of `second`,
    both predicting the same 0/1 outcomes."""
    y = np.asarray(y_true, dtype=float)

    def losses(p: ArrayLike) -> FloatArray:
        clipped = np.clip(np.asarray(p, dtype=float), LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
        return -(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))

    difference = losses(first) - losses(second)
    rng = np.random.default_rng(seed)
    means = [difference[rng.integers(0, y.size, y.size)].mean() for _ in range(resamples)]
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _equal_size_groups(predicted: FloatArray) -> list[IntArray]:
    """Row numbers of up to 10 equal-size groups by ascending ``predicted`` (stable order)."""
    order = np.argsort(predicted, kind="stable")
    return np.array_split(order, min(N_BINS, predicted.size))


def _decile_mape(actual: FloatArray, predicted: FloatArray) -> float:
    errors = [
        abs(predicted[g].sum() - actual[g].sum()) / abs(actual[g].sum())
        for g in _equal_size_groups(predicted)
        if actual[g].sum() != 0
    ]
    return float(np.mean(errors)) if errors else np.nan


# ---------------------------------------------------------------------------------------------
# Figure helpers
# ---------------------------------------------------------------------------------------------


def _new_axes(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def _model_colours() -> Iterator[str]:
    """The default colour cycle, repeated: a model's actual and predicted lines share a colour."""
    return cycle(rcParams["axes.prop_cycle"].by_key()["color"])


# ---------------------------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------------------------


def _values(name: str, values: ArrayLike) -> FloatArray:
    """One finite float per customer, or a ValueError that names ``name`` and the bad rows."""
    try:
        if isinstance(values, (pd.Series, pd.Index)):
            array = values.to_numpy(dtype=float, na_value=np.nan)
        else:
            array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold numbers, one per customer: {error}") from None
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one value per customer); got shape {array.shape}."
        )
    if array.size == 0:
        raise ValueError(f"{name} is empty; evaluation needs at least one customer.")
    bad = ~np.isfinite(array)
    if np.any(bad):
        raise ValueError(
            f"{name}: {_describe(bad, array)} are missing (NaN) or infinite. Drop those "
            "customers or fill their values before evaluating."
        )
    return array


def _labels(name: str, y_true: ArrayLike) -> FloatArray:
    y = _values(name, y_true)
    bad = (y != 0) & (y != 1)
    if np.any(bad):
        raise ValueError(
            f"{name}: {_describe(bad, y)} are not 0 or 1. {name} is the observed outcome per "
            "customer: 1 if the event (churn, repurchase) happened, 0 if not."
        )
    return y


def _probabilities(name: str, p_pred: ArrayLike) -> FloatArray:
    p = _values(name, p_pred)
    bad = (p < 0) | (p > 1)
    if np.any(bad):
        raise ValueError(
            f"{name}: {_describe(bad, p)} are outside [0, 1]. Pass predicted probabilities "
            "(predict_proba(...)[:, 1]), not raw scores or log-odds."
        )
    return p


def _labels_and_probabilities(
    y_name: str, y_true: ArrayLike, p_name: str, p_pred: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    y, p = _labels(y_name, y_true), _probabilities(p_name, p_pred)
    _check_same_customers(y_name, y_true, y, p_name, p_pred, p)
    return y, p


def _paired_values(
    left_name: str, left: ArrayLike, right_name: str, right: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    a, b = _values(left_name, left), _values(right_name, right)
    _check_same_customers(left_name, left, a, right_name, right, b)
    return a, b


def _validated_predictions(
    reference_name: str,
    reference: ArrayLike,
    reference_array: FloatArray,
    predictions: Mapping[str, ArrayLike],
    convert: Callable[[str, ArrayLike], FloatArray],
) -> dict[str, FloatArray]:
    """Each model's predictions, converted and checked against the observed outcomes."""
    if not predictions:
        raise ValueError(
            "predictions is empty: pass at least one model, e.g. {'lightgbm': p_pred}."
        )
    checked = {}
    for model, raw in predictions.items():
        name = f"predictions[{model!r}]"
        values = convert(name, raw)
        _check_same_customers(reference_name, reference, reference_array, name, raw, values)
        checked[model] = values
    return checked


def _check_same_customers(
    left_name: str, left: object, left_array: FloatArray,
    right_name: str, right: object, right_array: FloatArray,
) -> None:
    """Same length, and the same index when both are Series (values are paired by position)."""
    if left_array.size != right_array.size:
        raise ValueError(
            f"{left_name} and {right_name} must have one value per customer each; got lengths "
            f"{left_name}={left_array.size}, {right_name}={right_array.size}."
        )
    if (
        isinstance(left, pd.Series)
        and isinstance(right, pd.Series)
        and not left.index.equals(right.index)
    ):
        raise ValueError(
            f"{left_name} and {right_name} are Series with different indexes, but values are "
            f"paired by position. Align them first, e.g. {right_name}.reindex({left_name}.index), "
            "or pass numpy arrays in the same customer order."
        )


def _describe(bad: npt.NDArray[np.bool_], values: FloatArray) -> str:
    """``'3 value(s) (positions 4, 17, 90: nan, inf, nan)'`` for the flagged entries."""
    positions = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in positions[:3])
    examples = ", ".join(repr(float(values[i])) for i in positions[:3])
    more = ", ..." if positions.size > 3 else ""
    return f"{positions.size} value(s) (positions {shown}{more}: {examples}{more})"
