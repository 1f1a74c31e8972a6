"""Rolling cut-off training sets: features at each cut-off joined with what happened after it.

For a target with horizon h and a training date `as_of`, the latest cut-off is `as_of - h` (its
label window ends exactly at `as_of`) and earlier ones step back by `cutoff_step_days` (a target's own
count and spacing when `training.target_cutoffs` names it). The latest
`validation_cutoffs` are held out for validation: out of time, never a random split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import duckdb
import numpy as np
import pandas as pd

from configs.schema import Config
from features.behaviour import as_timestamp, build_relation
from features.labels import labels_relation
from features.clv import ClvBaseline, add_bg_columns, fit_clv_baseline
from serving.bundle import Calibrator

__all__ = ["Target", "CutoffStore", "cross_fitted", "customer_halves", "targets", "plan_cutoffs", "default_as_of",
           "last_year_level_cutoff", "order_span"]


@dataclass(frozen=True)
class Target:
    """One predictive tag: what is predicted, over which horizon, by which kind of model."""

    name: Literal["churn", "repurchase", "ltv"]
    horizon_days: int
    kind: Literal["classifier", "regressor"]

    @property
    def output(self) -> str:
        """Column name of the prediction in scores."""
        return {"churn": "churn_risk", "repurchase": "repurchase_prob", "ltv": "ltv"}[self.name]

    def label(self, labels: pd.DataFrame) -> np.ndarray:
        """The target value from a labels frame (future_orders, future_spend over this horizon)."""
        if self.name == "churn":
            return (labels["future_orders"].to_numpy() == 0).astype(np.int8)
        if self.name == "repurchase":
            return (labels["future_orders"].to_numpy() > 0).astype(np.int8)
        # Net spend can dip below zero when returns outweigh purchases; value cannot.
        return np.clip(labels["future_spend"].to_numpy(dtype=float), 0, None)


def targets(config: Config) -> list[Target]:
    """The three targets with their configured horizons."""
    h = config.horizons
    return [
        Target("churn", h.churn_days, "classifier"),
        Target("repurchase", h.repurchase_days, "classifier"),
        Target("ltv", h.ltv_days, "regressor"),
    ]


def order_span(con: duckdb.DuckDBPyConnection, source: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """First and last order time in the source."""
    first, last = con.execute(f"SELECT min(order_ts), max(order_ts) FROM {source}").fetchall()[0]
    return pd.Timestamp(first), pd.Timestamp(last)


def default_as_of(con: duckdb.DuckDBPyConnection, source: str) -> pd.Timestamp:
    """The day after the last order: training then uses the whole history."""
    return order_span(con, source)[1].normalize() + pd.Timedelta(days=1)


def customer_halves(customer_ids: pd.Series) -> np.ndarray:
    """A stable split of customers into two halves, for cross-fitted calibration."""
    return (pd.util.hash_pandas_object(customer_ids.astype(str), index=False).to_numpy() % 2).astype(bool)


def cross_fitted(score: np.ndarray, outcome: np.ndarray, customer_ids: pd.Series,
                 method: Literal["isotonic", "logistic"] = "isotonic") -> np.ndarray:
    """Calibrated probabilities for each half of the customers (customer_halves), fitted on the other half:
    how a calibration fitted on validation is scored without scoring it on its own fit."""
    half = customer_halves(customer_ids)
    out = np.empty_like(score, dtype=float)
    for part in (half, ~half):
        out[part] = Calibrator.fit(score[~part], outcome[~part], method).apply(score[part])
    return out


def plan_cutoffs(as_of: pd.Timestamp, horizon_days: int, first_order: pd.Timestamp, config: Config,
                 target: str | None = None) -> list[pd.Timestamp]:
    """Cut-offs, oldest first, whose label window ends by `as_of` and that leave enough history before them;
    `target` (churn, repurchase, ltv) takes its own plan when training.target_cutoffs has one. With the
    plan's `last_year`, also `as_of` - 365 days: its label window is last year's coming window."""
    plan = config.training.cutoff_plan(target)
    earliest = first_order.normalize() + pd.Timedelta(days=config.training.min_history_days)
    latest = as_timestamp(as_of) - pd.Timedelta(days=horizon_days)
    cutoffs = {latest - pd.Timedelta(days=k * plan.cutoff_step_days) for k in range(plan.cutoffs)}
    if plan.last_year and horizon_days <= 365:  # its label window must end by as_of too
        cutoffs.add(as_timestamp(as_of) - pd.Timedelta(days=365))
    return sorted(c for c in cutoffs if c >= earliest)


def last_year_level_cutoff(as_of: pd.Timestamp, first_order: pd.Timestamp, config: Config) -> pd.Timestamp | None:
    """The cut-off a year before `as_of` whose LTV window is last year's same window (training.ltv_last_year_level):
    None when that is off, the LTV horizon is a year or more, or the history does not leave min_history_days
    before it."""
    if not config.training.ltv_last_year_level or config.horizons.ltv_days >= 365:
        return None
    cutoff = as_timestamp(as_of) - pd.Timedelta(days=365)
    return cutoff if cutoff >= first_order.normalize() + pd.Timedelta(days=config.training.min_history_days) else None


class CutoffStore:
    """Features (with BG/NBD columns) and labels per cut-off, computed once and shared by all targets."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, config: Config, customers: str | None = None) -> None:
        self.con, self.source, self.config, self.customers = con, source, config, customers
        self.horizons = sorted({t.horizon_days for t in targets(config)})
        self._features: dict[pd.Timestamp, pd.DataFrame] = {}
        self._baselines: dict[pd.Timestamp, ClvBaseline | None] = {}
        self._labels: dict[tuple[pd.Timestamp, int], pd.DataFrame] = {}

    def features(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """Behavioural features at `cutoff` plus BG/NBD columns fitted on that cut-off's population."""
        if cutoff not in self._features:
            frame = self.feature_frame(cutoff)
            baseline = fit_clv_baseline(frame)
            self._baselines[cutoff] = baseline
            self._features[cutoff] = add_bg_columns(frame, baseline, self.horizons)
        return self._features[cutoff]

    def baseline(self, cutoff: pd.Timestamp) -> ClvBaseline | None:
        """The BG/NBD + Gamma-Gamma fit at `cutoff` (None when it could not be fitted)."""
        self.features(cutoff)
        return self._baselines[cutoff]

    def labels(self, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
        """future_orders / future_spend in [cutoff, cutoff + horizon) for the cut-off's population."""
        key = (cutoff, horizon_days)
        if key not in self._labels:
            self._labels[key] = self.label_frame(cutoff, horizon_days)
        return self._labels[key]

    def feature_frame(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The feature SQL's rows at `cutoff`, ordered by customer_id (another engine may build them instead)."""
        return build_relation(self.con, self.source, cutoff, self.config, self.customers).df()

    def label_frame(self, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
        """The label SQL's rows at `cutoff` for `horizon_days`, ordered by customer_id."""
        return labels_relation(self.con, self.source, cutoff, horizon_days, self.config).df()

    def examples(self, target: Target, cutoffs: list[pd.Timestamp]) -> pd.DataFrame:
        """Stacked examples for `target`: features, `cutoff`, `future_spend` and `label`, one row per customer and cut-off."""
        parts = []
        for cutoff in cutoffs:
            features = self.features(cutoff)
            labels = self.labels(cutoff, target.horizon_days)
            merged = features.merge(labels, on="customer_id", how="left", validate="one_to_one")
            merged[["future_orders", "future_spend"]] = merged[["future_orders", "future_spend"]].fillna(0)
            merged["label"] = target.label(merged)
            merged.insert(1, "cutoff", cutoff)
            parts.append(merged)
        return pd.concat(parts, ignore_index=True)
