"""RFM scores and the eight classic RFM segments.

Cut points are learned once (`RfmCutPoints.fit`) and then applied to any population, so that scores
do not shift between runs; scoring uses the cut points stored with the model.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from configs.schema import RfmConfig

__all__ = ["RfmCutPoints", "rfm_scores", "rfm_segment", "RFM_COLUMNS"]

# The feature behind each RFM letter.
RFM_COLUMNS = {"r": "recency_days", "f": "frequency", "m": "monetary_total"}
_QUANTILES = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class RfmCutPoints:
    """Quintile edges of recency_days, frequency and monetary_total (four edges each)."""

    recency_days: tuple[float, ...]
    frequency: tuple[float, ...]
    monetary_total: tuple[float, ...]

    @classmethod
    def fit(cls, features: pd.DataFrame) -> "RfmCutPoints":
        """Learn the quintile edges from a features frame."""
        edges = {
            column: tuple(float(q) for q in np.nanquantile(features[column].to_numpy(dtype=float), _QUANTILES))
            for column in RFM_COLUMNS.values()
        }
        return cls(**edges)

    def to_dict(self) -> dict[str, list[float]]:
        """Plain lists, for storing with a model."""
        return {k: list(v) for k, v in asdict(self).items()}


def _score(values: pd.Series, edges: tuple[float, ...], higher_is_better: bool) -> np.ndarray:
    # side="left": a value equal to an edge stays in the lower bin, so the many one-order
    # customers (all frequency edges at 1) get F=1 rather than sharing a middle score.
    bins = np.searchsorted(np.asarray(edges), values.to_numpy(dtype=float), side="left")
    return (bins + 1) if higher_is_better else (5 - bins)


def rfm_scores(features: pd.DataFrame, cut_points: RfmCutPoints) -> pd.DataFrame:
    """`rfm_r`, `rfm_f`, `rfm_m` (1-5, 5 best: most recent, most frequent, biggest spender)."""
    return pd.DataFrame(
        {
            "rfm_r": _score(features["recency_days"], cut_points.recency_days, higher_is_better=False),
            "rfm_f": _score(features["frequency"], cut_points.frequency, higher_is_better=True),
            "rfm_m": _score(features["monetary_total"], cut_points.monetary_total, higher_is_better=True),
        },
        index=features.index,
    ).astype("int8")


def rfm_segment(scores: pd.DataFrame, config: RfmConfig) -> pd.Series:
    """The eight-group segment key per customer (important/general x value/develop/retain/win-back).

    Monetary decides important vs general; recency and frequency decide the group:
    R high F high = value, R high F low = develop, R low F high = retain, R low F low = win-back.
    """
    high = config.high_score_from
    r_high = scores["rfm_r"] >= high
    f_high = scores["rfm_f"] >= high
    m_high = scores["rfm_m"] >= high
    group = np.select(
        [r_high & f_high, r_high & ~f_high, ~r_high & f_high],
        ["value", "develop", "retain"],
        default="winback",
    )
    tier = np.where(m_high, "important", "general")
    return pd.Series(np.char.add(np.char.add(tier.astype(str), "_"), group.astype(str)), index=scores.index, name="rfm_segment")
