"""BG/NBD + Gamma-Gamma per customer: expected orders, survival and order value as `bg_*` columns.

The classic models are both a baseline the LightGBM models must beat and a source of features:
they extrapolate each customer's purchase rate and survival beyond the ages seen in training,
which trees cannot do on their own. Parameters are fitted on one population at one cut-off and
stored with the model, so scoring any partition of customers gives the same columns.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.bgnbd import BetaGeoModel
from features.gamma_gamma import GammaGammaModel

__all__ = ["ClvBaseline", "add_bg_columns", "bg_feature_columns", "bgnbd_summary", "fit_clv_baseline", "repeat_spend_mean"]

WEEK_DAYS = 7.0


def bgnbd_summary(features: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BG/NBD's (frequency, recency, T) in weeks from a features frame."""
    frequency = features["repeat_orders"].to_numpy(dtype=float)
    recency = features["active_span_days"].to_numpy(dtype=float) / WEEK_DAYS
    age = features["tenure_days"].to_numpy(dtype=float) / WEEK_DAYS
    return frequency, np.minimum(recency, age), age


def repeat_spend_mean(features: pd.DataFrame) -> np.ndarray:
    """Mean value of each customer's repeat orders (Gamma-Gamma's monetary value); NaN without repeats."""
    frequency = features["frequency"].to_numpy(dtype=float)
    total = features["monetary_mean"].to_numpy(dtype=float) * frequency
    repeats = frequency - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(repeats > 0, (total - features["first_order_amount"].to_numpy(dtype=float)) / repeats, np.nan)


def bg_feature_columns(horizons_days: list[int]) -> list[str]:
    """Names of the BG/NBD + Gamma-Gamma columns for the given horizons."""
    columns = ["bg_p_alive", "gg_order_value"]
    for h in sorted(set(horizons_days)):
        columns += [f"bg_orders_{h}d", f"bg_p_none_{h}d", f"bg_ltv_{h}d"]
    return columns


@dataclass
class ClvBaseline:
    """BG/NBD (purchase counts, survival) and Gamma-Gamma (order value), fitted on one population."""

    r: float
    alpha: float
    a: float
    b: float
    p: float | None = None
    q: float | None = None
    v: float | None = None

    @classmethod
    def fit(cls, features: pd.DataFrame) -> "ClvBaseline":
        """Fit both models on the customers of a features frame (point in time: its own as_of)."""
        frequency, recency, age = bgnbd_summary(features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bg = BetaGeoModel().fit(frequency, recency, age)
        spend = repeat_spend_mean(features)
        usable = (frequency > 0) & (spend > 0)
        if usable.sum() < 20:
            return cls(bg.r_, bg.alpha_, bg.a_, bg.b_)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gg = GammaGammaModel().fit(frequency[usable], spend[usable])
        if gg.q_ <= 1:
            return cls(bg.r_, bg.alpha_, bg.a_, bg.b_)
        return cls(bg.r_, bg.alpha_, bg.a_, bg.b_, gg.p_, gg.q_, gg.v_)

    def _bgnbd(self) -> BetaGeoModel:
        model = BetaGeoModel()
        model.r_, model.alpha_, model.a_, model.b_ = self.r, self.alpha, self.a, self.b
        return model

    def order_value(self, features: pd.DataFrame) -> np.ndarray:
        """Expected value of a future order per customer (Gamma-Gamma; own mean order value without it)."""
        if self.p is None:
            return features["monetary_mean"].to_numpy(dtype=float)
        gg = GammaGammaModel()
        gg.p_, gg.q_, gg.v_ = self.p, self.q, self.v
        frequency = features["repeat_orders"].to_numpy(dtype=float)
        spend = repeat_spend_mean(features)
        usable = (frequency > 0) & (spend > 0)
        return gg.conditional_expected_average_value(np.where(usable, frequency, 0), np.where(usable, spend, 0))

    def predict(self, features: pd.DataFrame, horizons_days: list[int]) -> pd.DataFrame:
        """`bg_*` columns (see bg_feature_columns) for each customer of a features frame."""
        bg = self._bgnbd()
        frequency, recency, age = bgnbd_summary(features)
        value = self.order_value(features)
        columns = {"bg_p_alive": bg.prob_alive(frequency, recency, age), "gg_order_value": value}
        for h in sorted(set(horizons_days)):
            weeks = h / WEEK_DAYS
            orders = bg.expected_purchases(weeks, frequency, recency, age)
            columns[f"bg_orders_{h}d"] = orders
            columns[f"bg_p_none_{h}d"] = bg.prob_no_purchase(weeks, frequency, recency, age)
            columns[f"bg_ltv_{h}d"] = orders * value
        return pd.DataFrame(columns, index=features.index)

    def to_dict(self) -> dict[str, float | None]:
        """Parameters, for storing in the model bundle and MLflow."""
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b, "p": self.p, "q": self.q, "v": self.v}


def fit_clv_baseline(features: pd.DataFrame) -> ClvBaseline | None:
    """BG/NBD + Gamma-Gamma on a population; None when there is too little to fit (e.g. no repeat buyers)."""
    if len(features) < 20 or (features["repeat_orders"] > 0).sum() < 5:
        return None
    try:
        return ClvBaseline.fit(features)
    except (ValueError, FloatingPointError):
        return None


def add_bg_columns(features: pd.DataFrame, baseline: ClvBaseline | None, horizons: list[int]) -> pd.DataFrame:
    """The features with `bg_*` columns appended (empty when there is no fitted baseline); existing ones are replaced."""
    present = [c for c in bg_feature_columns(horizons) if c in features.columns]
    if present:  # (dropping nothing still copies the frame: a twentieth of tagging one customer online)
        features = features.drop(columns=present)
    if baseline is None:
        bg = pd.DataFrame(np.nan, index=features.index, columns=bg_feature_columns(horizons))
    else:
        bg = baseline.predict(features, horizons)
    return pd.concat([features, bg], axis=1)
