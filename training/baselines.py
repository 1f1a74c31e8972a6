"""Baselines the models must beat: a recency heuristic, and BG/NBD + Gamma-Gamma (features.clv)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["RecencyBaseline"]


@dataclass
class RecencyBaseline:
    """The marketer's rule of thumb: the longer since the last order, the likelier churn.

    Probabilities are the churn rates of recency deciles on the training cut-offs, so the
    heuristic is scored on the same scale as the models; its LTV is last year's spend run rate.
    """

    edges: np.ndarray
    rate: np.ndarray

    @classmethod
    def fit(cls, recency_days: np.ndarray, outcome: np.ndarray) -> "RecencyBaseline":
        """Outcome rate (e.g. churn) per recency decile from training examples."""
        edges = np.unique(np.quantile(recency_days, np.linspace(0.1, 0.9, 9)))
        bins = np.searchsorted(edges, recency_days, side="right")
        overall = float(np.mean(outcome))
        rates = np.array([outcome[bins == i].mean() if np.any(bins == i) else overall for i in range(len(edges) + 1)])
        return cls(edges=edges, rate=rates)

    def predict_proba(self, recency_days: np.ndarray) -> np.ndarray:
        """Outcome probability of the customer's recency decile."""
        return self.rate[np.searchsorted(self.edges, recency_days, side="right")]

    @staticmethod
    def run_rate_ltv(features: pd.DataFrame, horizon_days: int) -> np.ndarray:
        """Spend of the last 365 days, scaled to the horizon."""
        return np.clip(features["spend_365d"].to_numpy(dtype=float), 0, None) * horizon_days / 365.0
