"""TargetModel: the LTV level factor applies to every kind of model, BG/NBD + Gamma-Gamma's own included."""
from __future__ import annotations

import numpy as np
import pandas as pd

from serving.bundle import TargetModel


def _bg(ltv: list[float], p_none: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"bg_ltv_180d": ltv, "bg_p_none_180d": p_none})


def test_a_bgnbd_ltv_model_predicts_its_level_factor_times_bgnbd_gg() -> None:
    bg = _bg([10.0, 0.0, np.nan, 3.5], [0.2, 0.9, 0.5, 0.4])
    plain = TargetModel("ltv", 180, "bgnbd")
    scaled = TargetModel("ltv", 180, "bgnbd", scale=1.9)
    empty = pd.DataFrame(index=bg.index)
    np.testing.assert_array_equal(plain.predict(empty, bg), bg["bg_ltv_180d"].to_numpy())
    np.testing.assert_allclose(scaled.predict(empty, bg), 1.9 * bg["bg_ltv_180d"].to_numpy())
    assert np.isnan(scaled.predict(empty, bg)[2])
    # The factor before it: what training measures the level on.
    np.testing.assert_array_equal(scaled.unscaled_predict(empty, bg), bg["bg_ltv_180d"].to_numpy())


def test_bgnbd_classifiers_are_bgnbd_probabilities() -> None:
    bg = _bg([1.0, 2.0], [0.25, 0.75])
    empty = pd.DataFrame(index=bg.index)
    np.testing.assert_array_equal(TargetModel("churn", 180, "bgnbd").predict(empty, bg), [0.25, 0.75])
    np.testing.assert_array_equal(TargetModel("repurchase", 180, "bgnbd").predict(empty, bg), [0.75, 0.25])
