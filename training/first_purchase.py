"""first_purchase_prob: will a registered customer who has not ordered yet place a first order soon?

Learned from earlier sign-up cohorts: at each cut-off c, the customers who signed up in the
look-back before c and had not bought by c, labelled by whether their first purchase fell in
[c, c + first_purchase_days). Inputs are the sign-up age and the static attributes. Like the other
targets, the latest cut-off is held out for validation and calibration (out of time).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd

from configs.schema import Config
from features.behaviour import _return_flag, _ts_sql, customer_select_sql
from serving.bundle import Calibrator, FeatureSpec, TargetModel
from training.dataset import cross_fitted, plan_cutoffs
from training.evaluate import classifier_metrics
from training.models import DEFAULT_PARAMS, train_booster

__all__ = ["FirstPurchaseResult", "first_purchase_examples", "first_purchase_examples_sql", "fit_first_purchase"]

MIN_POSITIVES = 10


@dataclass
class FirstPurchaseResult:
    """The first-purchase model (None when it cannot be learned, with the reason in `note`)."""

    model: TargetModel | None
    spec: FeatureSpec | None
    note: str
    cutoffs: list[pd.Timestamp] = field(default_factory=list)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # "model" / "signup_recency" on validation
    rows: dict[str, int] = field(default_factory=dict)
    chosen: str = ""  # "with_attributes" or "signup_days_only"


def first_purchase_examples(con: duckdb.DuckDBPyConnection, source: str, customers: str, cutoff: pd.Timestamp,
                            config: Config) -> pd.DataFrame:
    """Registered, not-yet-buying customers at `cutoff` (signed up within the look-back) with their label."""
    return con.sql(first_purchase_examples_sql(source, customers, cutoff, config)).df()


def first_purchase_examples_sql(source: str, customers: str, cutoff: pd.Timestamp, config: Config) -> str:
    """`first_purchase_examples`' query: each customer's row depends on their own orders and sign-up only."""
    cut = _ts_sql(cutoff)
    days = config.customers.first_purchase_days
    lookback = config.customers.first_purchase_lookback_days
    return f"""
WITH first AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, min(order_ts) AS first_ts
    FROM {source} WHERE NOT {_return_flag(config)} GROUP BY 1
)
SELECT k.customer_id {customer_select_sql(customers, 'k', cut, config)},
       CAST(f.first_ts IS NOT NULL AND f.first_ts < {cut} + INTERVAL {int(days)} DAY AS TINYINT) AS label
FROM {customers} k LEFT JOIN first f USING (customer_id)
WHERE k.signup_ts < {cut} AND k.signup_ts >= {cut} - INTERVAL {int(lookback)} DAY
  AND (f.first_ts IS NULL OR f.first_ts >= {cut})
ORDER BY k.customer_id
"""


def fit_first_purchase(con: duckdb.DuckDBPyConnection, source: str, customers: str | None, as_of: pd.Timestamp,
                       first_order: pd.Timestamp, config: Config, has_signup: bool,
                       examples: Callable[[pd.Timestamp], pd.DataFrame] | None = None) -> FirstPurchaseResult:
    """Fit, calibrate and validate the first-purchase model, or say why it cannot be learned.

    `examples(cutoff)`: the cohort at a cut-off when another engine built them (training.history); default:
    `first_purchase_examples` on `con`."""
    if customers is None:
        return FirstPurchaseResult(None, None, "no customers table (--customers), so there are no sign-ups to learn from")
    if not has_signup:
        return FirstPurchaseResult(None, None, "the customers table has no sign-up date (customers.columns.signup_ts), "
                                               "so sign-up cohorts cannot be followed")
    days = config.customers.first_purchase_days
    cutoffs = plan_cutoffs(as_of, days, first_order, config)
    n_valid = config.training.validation_cutoffs
    if len(cutoffs) <= n_valid:
        return FirstPurchaseResult(None, None, f"only {len(cutoffs)} cut-off(s) fit the history for a {days}-day "
                                               f"first-purchase window; {n_valid + 1} are needed", cutoffs)
    cohort = examples or (lambda cutoff: first_purchase_examples(con, source, customers, cutoff, config))
    frames = {c: cohort(c).assign(cutoff=c) for c in cutoffs}
    train = pd.concat([frames[c] for c in cutoffs[:-n_valid]], ignore_index=True)
    valid = pd.concat([frames[c] for c in cutoffs[-n_valid:]], ignore_index=True)
    rows = {"train": len(train), "valid": len(valid), "train_positives": int(train["label"].sum()),
            "valid_positives": int(valid["label"].sum())}
    minimum = config.training.min_examples
    if len(train) < minimum or len(valid) < minimum or min(rows["train_positives"], rows["valid_positives"]) < MIN_POSITIVES \
            or rows["train_positives"] == len(train) or rows["valid_positives"] == len(valid):
        return FirstPurchaseResult(
            None, None, f"too few sign-ups to learn from: {len(train)} training and {len(valid)} validation examples "
                        f"with {rows['train_positives']} and {rows['valid_positives']} first purchases; at least "
                        f"{minimum} examples and {MIN_POSITIVES} first purchases (and some non-buyers) are needed in each",
            cutoffs, rows=rows)
    numeric = ["signup_days"] + [n for n, a in config.customers.attributes.items() if a.type == "numeric"]
    categorical = [n for n, a in config.customers.attributes.items() if a.type == "categorical"]
    # Two candidates, the held-out cohort decides (log loss): with the attributes, and sign-up age
    # alone, which wins when the attributes say nothing about buying (noise only costs accuracy).
    candidates = {"with_attributes": FeatureSpec.fit(train, numeric, categorical)}
    if len(candidates["with_attributes"].columns) > 1:
        candidates["signup_days_only"] = FeatureSpec(numeric=["signup_days"])
    outcome = valid["label"].to_numpy()
    fitted = {name: _fit(train, valid, spec, config) for name, spec in candidates.items()}
    losses = {name: classifier_metrics(outcome, raw)["log_loss"] for name, (_, raw) in fitted.items()}
    chosen = min(losses, key=losses.get)
    spec, (booster, raw) = candidates[chosen], fitted[chosen]
    model = TargetModel("first_purchase", days, "lgbm", {"main": booster.model_to_string()})
    model.calibrator = Calibrator.fit(raw, outcome)
    # Calibration is fitted on validation, so its metrics come from the half it was not fitted on;
    # the baseline (the newest sign-ups first) gets exactly the same treatment.
    recency = -valid["signup_days"].to_numpy(dtype=float)  # never empty: every example signed up before its cut-off
    metrics = {"model": classifier_metrics(outcome, cross_fitted(raw, outcome, valid["customer_id"])),
               "signup_recency": classifier_metrics(outcome, cross_fitted(recency, outcome, valid["customer_id"]))}
    note = (f"learned from {len(cutoffs)} sign-up cohorts ({rows['train']:,} training examples, "
            f"{chosen.replace('_', ' ')}; validation at {cutoffs[-1].date()}: ROC AUC "
            f"{metrics['model']['roc_auc']:.3f}, sign-up recency alone {metrics['signup_recency']['roc_auc']:.3f})")
    return FirstPurchaseResult(model, spec, note, cutoffs, metrics, rows, chosen)


def _fit(train: pd.DataFrame, valid: pd.DataFrame, spec: FeatureSpec, config: Config) -> tuple[object, np.ndarray]:
    """One candidate: the booster and its raw predictions on the validation cohort."""
    seed, threads = config.training.seed, config.engine.threads or 0
    # A few hundred first purchases per cohort: small trees with many sign-ups per leaf (on four
    # generated shops they beat both the default trees and sign-up recency alone).
    params = {**DEFAULT_PARAMS, "learning_rate": 0.05, "num_leaves": 7, "min_data_in_leaf": 200}
    rounds = _rounds(train, spec, params, seed, config, threads)
    booster = train_booster(params, "binary", seed, spec.matrix(train), train["label"].to_numpy(dtype=float), rounds,
                            threads=threads)
    return booster, booster.predict(spec.matrix(valid))


def _rounds(train: pd.DataFrame, spec: FeatureSpec, params: dict, seed: int, config: Config, threads: int) -> int:
    """Boosting rounds, found by early stopping on the latest training cut-off (never on validation)."""
    cuts = sorted(train["cutoff"].unique())
    if len(cuts) < 2:
        return 100
    fit, stop = train[train["cutoff"] < cuts[-1]], train[train["cutoff"] == cuts[-1]]
    if fit["label"].nunique() < 2 or stop["label"].nunique() < 2:
        return 100
    booster = train_booster(params, "binary", seed, spec.matrix(fit), fit["label"].to_numpy(dtype=float),
                            config.training.max_rounds, valid=(spec.matrix(stop), stop["label"].to_numpy(dtype=float)),
                            early_stopping=config.training.early_stopping_rounds, threads=threads)
    return max(10, booster.best_iteration or config.training.max_rounds)
