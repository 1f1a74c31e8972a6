"""True-holdout comparison: train on orders before `as_of`, score every customer at `as_of`, and compare
the predictions with what they really did afterwards, against BG/NBD + Gamma-Gamma fitted on the same
history. Used by the CDNOW acceptance benchmark and the synthetic-shop comparison."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from configs.schema import Config
from features.behaviour import as_timestamp, build_relation
from features.engine import connect
from features.intake import open_sources
from features.labels import labels_relation
from serving.bundle import Calibrator
from training.dataset import Target, order_span, targets
from training.evaluate import classifier_metrics, ltv_metrics
from training.pipeline import Progress, TrainResult, _no_progress, fit_bundle

__all__ = ["HOLDOUT_METRICS", "Holdout", "holdout_comparison", "score_ties"]

# The figures the acceptance criteria name, per target: (metric key, higher is better).
HOLDOUT_METRICS: dict[str, list[tuple[str, bool]]] = {
    "churn": [("roc_auc", True), ("pr_auc", True), ("brier", False), ("ece", False)],
    "repurchase": [("roc_auc", True), ("pr_auc", True), ("brier", False), ("ece", False)],
    "ltv": [("spearman", True), ("gini_normalised", True), ("decile_mape", False), ("total_ratio", True)],
}


@dataclass
class Holdout:
    """Metrics of lifetag and BG/NBD (+ Gamma-Gamma) on the customers scored at `as_of`."""

    as_of: pd.Timestamp
    customers: int
    metrics: dict[str, dict[str, dict[str, float]]]  # target -> "lifetag"/"bgnbd" -> metric -> value
    train: TrainResult
    # Classifiers: the same model with each calibration fitted on its validation cut-off ("none",
    # "isotonic", "logistic") -> metric -> value, plus how many customers share a score ("ties").
    calibrations: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per target and metric: lifetag, BG/NBD and the gap (lifetag - BG/NBD)."""
        rows = []
        for target, by_model in self.metrics.items():
            for key, _ in HOLDOUT_METRICS[target]:
                ours, theirs = by_model["lifetag"].get(key, np.nan), by_model["bgnbd"].get(key, np.nan)
                rows.append({"target": target, "metric": key, "lifetag": ours, "bgnbd": theirs, "gap": ours - theirs})
        return rows

    def beats_bgnbd(self, target: str, key: str) -> bool:
        """True when lifetag is strictly better than BG/NBD on this metric."""
        ours, theirs = self.metrics[target]["lifetag"][key], self.metrics[target]["bgnbd"][key]
        higher = dict(HOLDOUT_METRICS[target])[key]
        return bool(ours > theirs if higher else ours < theirs)


def holdout_comparison(
    orders: str | os.PathLike[str], config: Config, as_of: str | pd.Timestamp, trials: int | None = None,
    progress: Progress = _no_progress, on_trained: Callable[[TrainResult], None] | None = None,
    customers: str | os.PathLike[str] | None = None,
) -> Holdout:
    """Train before `as_of`, score at `as_of`, and measure both models on each target's real outcome window
    (with `customers`, the customers table's attributes are model inputs in training and scoring).

    Every target's horizon must end by the last order in the file: the outcome has to be observed.
    """
    as_of_ts = as_timestamp(as_of)
    trained = fit_bundle(orders, config, as_of=as_of_ts, trials=trials, progress=progress, customers=customers)
    if on_trained:
        on_trained(trained)
    con = connect(config.engine)
    try:
        sources = open_sources(con, orders, config, customers)
        _, last_order = order_span(con, "orders")
        table = "customers" if sources.customers is not None else None
        features = build_relation(con, "orders", as_of_ts, config, table).df()
        outcomes = {t.name: _outcome(con, t, as_of_ts, last_order, config) for t in targets(config)}
    finally:
        con.close()
    bundle = trained.bundle
    enriched = bundle.bg_columns(features)
    scored = bundle.predict_enriched(enriched, bundle.spec.matrix(enriched))
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    calibrations: dict[str, dict[str, dict[str, float]]] = {}
    for target in targets(config):
        outcome = features[["customer_id"]].merge(outcomes[target.name], on="customer_id", how="left").fillna(0)
        label = target.label(outcome)
        ours = scored[target.output].to_numpy(dtype=float)
        theirs = _bgnbd_prediction(target, enriched)
        metric = classifier_metrics if target.kind == "classifier" else ltv_metrics
        metrics[target.name] = {"lifetag": metric(label, ours), "bgnbd": metric(label, theirs)}
        metrics[target.name]["lifetag"].update(score_ties(ours))
        if target.kind == "classifier":
            calibrations[target.name] = _calibration_alternatives(trained, target, enriched, bundle, label)
    return Holdout(as_of_ts, len(features), metrics, trained, calibrations)


def score_ties(scores: np.ndarray) -> dict[str, float]:
    """How much a score ties customers: distinct values, the largest group sharing one value (a share
    of all customers), and how many are exactly 0 or 1."""
    values, counts = np.unique(np.asarray(scores, dtype=float), return_counts=True)
    n = max(len(scores), 1)
    return {"distinct": float(len(values)), "largest_tie_share": float(counts.max() / n) if len(counts) else 0.0,
            "at_0_or_1": float(np.sum((scores == 0) | (scores == 1)))}


def _calibration_alternatives(trained: TrainResult, target: Target, enriched: pd.DataFrame, bundle: Any,
                              label: np.ndarray) -> dict[str, dict[str, float]]:
    """The shipped model's raw scores at as_of under each calibration, each fitted on the same validation
    cut-off the shipped one was fitted on."""
    result = trained.results.get(target.name)
    if result is None or result.valid is None or "model_uncalibrated" not in result.valid:
        return {}
    model = bundle.models[target.name]
    raw = model.raw_predict(bundle.spec.matrix(enriched), enriched)
    valid_raw, valid_label = result.valid["model_uncalibrated"].to_numpy(), result.valid["label"].to_numpy()
    out = {}
    for method in ("none", "isotonic", "logistic"):
        scores = raw if method == "none" else Calibrator.fit(valid_raw, valid_label, method).apply(raw)
        out[method] = {**classifier_metrics(label, scores), **score_ties(scores)}
    return out


def _outcome(con: Any, target: Target, as_of: pd.Timestamp, last_order: pd.Timestamp, config: Config) -> pd.DataFrame:
    window_end = as_of + pd.Timedelta(days=target.horizon_days)
    if window_end > last_order.normalize() + pd.Timedelta(days=1):
        raise ValueError(
            f"the {target.name} outcome window [{as_of.date()}, {window_end.date()}) runs past the last order "
            f"({last_order.date()}); choose an earlier as_of or a shorter {target.name} horizon."
        )
    return labels_relation(con, "orders", as_of, target.horizon_days, config).df()


def _bgnbd_prediction(target: Target, enriched: pd.DataFrame) -> np.ndarray:
    h = target.horizon_days
    if target.name == "ltv":
        return enriched[f"bg_ltv_{h}d"].to_numpy(dtype=float)
    p_none = enriched[f"bg_p_none_{h}d"].to_numpy(dtype=float)
    return p_none if target.name == "churn" else 1.0 - p_none
