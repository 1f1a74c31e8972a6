"""The calibrations a classifier can ship: isotonic, logistic (order-keeping) and none."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from serving.bundle import Calibrator
from training.dataset import cross_fitted
from training.holdout import score_ties


def _scores(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.beta(2, 2, n)
    outcome = (rng.uniform(size=n) < raw ** 1.6).astype(float)  # raw over-states the event: needs calibrating
    return raw, outcome


def test_logistic_calibration_keeps_every_customers_order_and_never_says_0_or_1() -> None:
    raw, outcome = _scores()
    calibrated = Calibrator.fit(raw, outcome, "logistic").apply(raw)
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(calibrated[order]) >= 0)
    assert len(np.unique(calibrated)) == len(np.unique(raw))  # no plateau ties customers the model told apart
    assert 0 < calibrated.min() and calibrated.max() < 1
    assert abs(calibrated.mean() - outcome.mean()) < 1e-6  # a logistic fit matches the base rate exactly


def test_isotonic_calibration_ties_groups_that_logistic_keeps_apart() -> None:
    raw, outcome = _scores()
    isotonic = score_ties(Calibrator.fit(raw, outcome, "isotonic").apply(raw))
    logistic = score_ties(Calibrator.fit(raw, outcome, "logistic").apply(raw))
    assert isotonic["largest_tie_share"] > 10 * logistic["largest_tie_share"]
    assert logistic["distinct"] == len(np.unique(raw))


def test_logistic_calibration_improves_a_miscalibrated_score() -> None:
    raw, outcome = _scores()
    honest = cross_fitted(raw, outcome, _ids(len(raw)), "logistic")
    by_bin = lambda p: np.mean([abs(p[b].mean() - outcome[b].mean())  # noqa: E731
                                for b in np.array_split(np.argsort(p), 10)])
    assert by_bin(honest) < by_bin(raw) / 2


def test_a_score_that_reverses_the_outcome_gets_the_base_rate_not_a_reversed_order() -> None:
    raw, outcome = _scores()
    calibrated = Calibrator.fit(raw, 1 - outcome, "logistic").apply(raw)
    assert np.allclose(calibrated, (1 - outcome).mean())


def test_calibrators_round_trip_through_json_and_old_isotonic_bundles_still_load() -> None:
    raw, outcome = _scores(2_000)
    for method in ("isotonic", "logistic"):
        fitted = Calibrator.fit(raw, outcome, method)
        again = Calibrator(**json.loads(json.dumps(asdict(fitted))))
        assert np.array_equal(again.apply(raw), fitted.apply(raw))
    old = Calibrator(x=[0.0, 1.0], y=[0.2, 0.8])  # what bundles stored before `method`
    assert old.method == "isotonic" and old.apply(np.array([0.5]))[0] == pytest.approx(0.5)


def _ids(n: int):  # noqa: ANN202 - a pandas Series of customer ids
    import pandas as pd

    return pd.Series([f"C{i:06d}" for i in range(n)])
