"""Seed bagging (training.bag_members): members' boosters averaged into one, and a bagged training that serving loads.

Real LightGBM and a real (small) training; nothing is mocked.
"""
from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from configs.schema import Config
from serving.bundle import Bundle
from training.bagging import average_boosters, member_seeds
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home

PARAMS = {"bagging_fraction": 0.7, "bagging_freq": 1, "feature_fraction": 0.7, "num_leaves": 7, "verbosity": -1,
          "deterministic": True, "force_col_wise": True}
BAG = 3


def _frame(rows: int = 2_000) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    X = pd.DataFrame(rng.random((rows, 4)), columns=["recency_days", "spend_90d", "orders_90d", "gap_days"])
    X["first_order_channel"] = pd.Categorical(rng.choice(["web", "app", "store"], rows))
    signal = X["recency_days"] + 0.5 * (X["first_order_channel"] == "app") + rng.normal(0, 0.3, rows)
    return X, signal.to_numpy()


@pytest.mark.parametrize("objective", ["binary", "tweedie", "gamma"])
def test_an_averaged_booster_predicts_the_mean_raw_score_of_its_members(objective: str) -> None:
    X, signal = _frame()
    y = (signal > 0.8).astype(float) if objective == "binary" else np.exp(signal) * (objective == "gamma" or signal > 0.8)
    members = [lgb.train({**PARAMS, "objective": objective, "seed": s}, lgb.Dataset(X, y), num_boost_round=30)
               for s in member_seeds(42, BAG)]

    averaged = lgb.Booster(model_str=average_boosters([m.model_to_string() for m in members]))

    raw = np.mean([m.predict(X, raw_score=True) for m in members], axis=0)
    np.testing.assert_allclose(averaged.predict(X, raw_score=True), raw, rtol=0, atol=1e-12)
    assert averaged.num_trees() == BAG * 30
    # The members differ (else bagging would do nothing): the seed reaches row and feature sampling.
    assert np.abs(members[0].predict(X, raw_score=True) - raw).max() > 1e-3


def test_an_averaged_booster_keeps_an_offset_models_raw_score_a_correction_to_add() -> None:
    X, signal = _frame()
    y = (signal > 0.8).astype(float)
    offset = np.full(len(y), -0.5)
    members = [lgb.train({**PARAMS, "objective": "binary", "seed": s}, lgb.Dataset(X, y, init_score=offset),
                         num_boost_round=20) for s in member_seeds(7, BAG)]

    averaged = lgb.Booster(model_str=average_boosters([m.model_to_string() for m in members]))

    np.testing.assert_allclose(averaged.predict(X, raw_score=True),
                               np.mean([m.predict(X, raw_score=True) for m in members], axis=0), atol=1e-12)


def test_members_whose_bins_come_from_different_row_samples_are_averaged_exactly() -> None:
    # Beyond bin_construct_sample_cnt rows (200,000 by default: a 100k-customer shop's cut-offs) LightGBM
    # bins a sample drawn with the member's seed, so the members' feature ranges in the header differ.
    X, signal = _frame(3_000)
    y = (signal > 0.8).astype(float)
    members = [lgb.train({**PARAMS, "objective": "binary", "seed": s, "bin_construct_sample_cnt": 500},
                         lgb.Dataset(X, y), num_boost_round=20) for s in member_seeds(42, BAG)]
    headers = {m.model_to_string().split("feature_infos=")[1].split("\n")[0] for m in members}
    assert len(headers) == BAG

    averaged = lgb.Booster(model_str=average_boosters([m.model_to_string() for m in members]))

    np.testing.assert_allclose(averaged.predict(X, raw_score=True),
                               np.mean([m.predict(X, raw_score=True) for m in members], axis=0), atol=1e-12)
    ranges = [m.model_to_string().split("feature_infos=[")[1].split("]")[0].split(":") for m in [averaged, *members]]
    (low, high), members_ranges = ranges[0], ranges[1:]
    assert float(low) == min(float(r[0]) for r in members_ranges)  # the widest of the members' ranges
    assert float(high) == max(float(r[1]) for r in members_ranges)


def test_boosters_of_different_objectives_are_not_averaged() -> None:
    X, signal = _frame(500)
    binary = lgb.train({**PARAMS, "objective": "binary"}, lgb.Dataset(X, (signal > 0.8).astype(float)), 5)
    tweedie = lgb.train({**PARAMS, "objective": "tweedie"}, lgb.Dataset(X, np.exp(signal)), 5)

    with pytest.raises(ValueError, match="objective and features"):
        average_boosters([binary.model_to_string(), tweedie.model_to_string()])


def test_member_seeds_start_with_the_training_seed_and_are_distinct_and_reproducible() -> None:
    seeds = member_seeds(42, 5)

    assert seeds[0] == 42 and len(set(seeds)) == 5 and seeds == member_seeds(42, 5)
    assert member_seeds(42, 3) == seeds[:3] and member_seeds(42, 1) == [42]
    assert set(member_seeds(7, 5)[1:]).isdisjoint(seeds[1:])
    with pytest.raises(ValueError):
        member_seeds(42, 0)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, 2_000, 5) / "orders.parquet"


def _fit(shop: Path, config: Config, home: Path, members: int) -> TrainResult:
    bagged = config.model_copy(deep=True)
    bagged.training.bag_members = members
    monkeypatch = module_home(home)
    try:
        return fit_bundle(shop, bagged, trials=0)
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def single(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _fit(shop, config, tmp_path_factory.mktemp("home"), 1)


@pytest.fixture(scope="module")
def bagged(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _fit(shop, config, tmp_path_factory.mktemp("home"), BAG)


def _trees(model_text: str) -> int:
    return lgb.Booster(model_str=model_text).num_trees()


def test_a_bagged_training_ships_each_chosen_booster_with_every_members_trees(single: TrainResult,
                                                                             bagged: TrainResult) -> None:
    for name, result in bagged.results.items():
        one = single.results[name]
        assert result.chosen == one.chosen  # members are fitted after the choice, which they do not change
        for booster, text in result.model.boosters.items():
            if booster != "explain":  # the churn reasons' stumps explain the bagged model; not a member
                assert _trees(text) == BAG * _trees(one.model.boosters[booster]), (name, booster)


def test_a_bagged_bundle_predicts_the_same_after_serving_loads_it(bagged: TrainResult, tmp_path: Path) -> None:
    valid = bagged.results["churn"].valid_features
    loaded = Bundle.load(bagged.bundle.save(tmp_path / "bundle"))

    before, after = bagged.bundle.predict(valid), loaded.predict(valid)

    pd.testing.assert_frame_equal(before, after)
    assert before["churn_risk"].between(0, 1).all() and (before["ltv"] >= 0).all()
