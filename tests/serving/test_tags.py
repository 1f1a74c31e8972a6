"""The tag function (`serving.tags.tag_rows`) and the re-buy intervals it relies on, stored in the bundle.

Real DuckDB, LightGBM and files; nothing is mocked. A 1,500-customer shop with its customers table is
trained once (trials=0) and scored once as a whole; single customers are then tagged from their own
orders and customers-table row alone, in a connection of their own, and must get exactly their row
of the whole-shop run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.schema import Config, load_config
from features.behaviour import customers_view, orders_view, registered_relation
from features.engine import connect
from features.scenarios import learn_rebuy_intervals, tag_inputs_relation
from serving.bundle import REBUY_FILE, Bundle, BundleError, FeatureSpec, booster_predict
from serving.scoring import ScoreResult, score
from serving.tags import OUTPUT_DOCS, tag_rows
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home

CUSTOMERS = 1_500
SEED = 31
AS_OF = pd.Timestamp("2024-09-01")
# The defaults plus tags that read the scenario inputs and a text column that is often empty.
SCENARIOS = {"due_any": "categories_due >= 1", "worded": "reasons LIKE '%order%'"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED, start="2023-01-01", end="2024-12-31")


@pytest.fixture(scope="module")
def orders(shop: Path) -> pd.DataFrame:
    return pd.read_parquet(shop / "orders.parquet")


@pytest.fixture(scope="module")
def customers(shop: Path) -> pd.DataFrame:
    return pd.read_parquet(shop / "customers.parquet")


@pytest.fixture(scope="module")
def tag_config() -> Config:
    return load_config(overrides={"scoring": {"scenarios": {**load_config().scoring.scenarios, **SCENARIOS}}})


@pytest.fixture(scope="module")
def trained(shop: Path, tag_config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    monkeypatch = module_home(tmp_path_factory.mktemp("home"))
    try:
        return fit_bundle(shop / "orders.parquet", tag_config, as_of=AS_OF, trials=0,
                          customers=shop / "customers.parquet")
    finally:
        monkeypatch.undo()


def _score(shop: Path, bundle: Bundle, config: Config, out: Path, **kwargs) -> tuple[ScoreResult, pd.DataFrame]:
    monkeypatch = module_home(out.parent / "home")
    try:
        result = score(shop / "orders.parquet", AS_OF, out, config, bundle=bundle, model_version="test",
                       customers=shop / "customers.parquet", **kwargs)
    finally:
        monkeypatch.undo()
    return result, pd.read_parquet(out)


@pytest.fixture(scope="module")
def whole_shop(shop: Path, trained: TrainResult, tag_config: Config,
               tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The batch run of the whole shop, one row per customer, indexed by customer_id."""
    return _score(shop, trained.bundle, tag_config, tmp_path_factory.mktemp("tags") / "tags.parquet",
                  partitions=3)[1].set_index("customer_id", drop=False)


def _alone(customer_id: str, orders: pd.DataFrame, customers: pd.DataFrame, bundle: Bundle,
           config: Config) -> pd.DataFrame:
    """One customer's tags from their own orders and customers-table row only, in a fresh connection."""
    con = connect(config.engine)
    try:
        source = orders_view(con, orders[orders["customer_id"] == customer_id])
        table = customers_view(con, customers[customers["customer_id"] == customer_id], config)
        features = tag_inputs_relation(con, source, AS_OF, config, bundle.rebuy_intervals(), table).df()
        registered = registered_relation(con, source, table, AS_OF, config).df()
    finally:
        con.close()
    return tag_rows(features, bundle, config, AS_OF, "test", registered=registered)


def _pick(whole_shop: pd.DataFrame, orders: pd.DataFrame) -> dict[str, str]:
    """A handful of customers of different kinds, by what they are."""
    before = orders[orders["order_ts"] < AS_OF]
    returned = set(before.loc[before["status"] == "returned", "customer_id"])
    buyers = whole_shop[whole_shop["lifecycle_stage"] != "registered"]
    picks = {
        "one order": buyers[buyers["frequency"] == 1],
        "returns": buyers[buyers["customer_id"].isin(returned) & (buyers["frequency"] > 1)],
        "a category due": buyers[buyers["due_any"] & buyers["cross_sell_window"]],
        "high churn tier, with reasons": buyers[(buyers["churn_tier"] == "high") & buyers["reasons"].notna()],
        "low churn tier, no reasons": buyers[buyers["churn_tier"] == "low"],
        "registered, never bought": whole_shop[whole_shop["lifecycle_stage"] == "registered"],
    }
    for kind, rows in picks.items():
        assert len(rows), f"the shop has no customer with {kind}"
    return {kind: rows["customer_id"].iloc[len(rows) // 2] for kind, rows in picks.items()}


# --- one customer alone ------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_customer_tagged_from_their_own_orders_alone_gets_their_row_of_the_whole_shop_run(
    whole_shop: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, trained: TrainResult,
    tag_config: Config
) -> None:
    for kind, customer_id in _pick(whole_shop, orders).items():
        alone = _alone(customer_id, orders, customers, trained.bundle, tag_config)
        expected = whole_shop.loc[[customer_id]].reset_index(drop=True)

        assert list(alone.columns) == list(expected.columns), kind
        pd.testing.assert_frame_equal(alone, expected, check_dtype=False, check_exact=True, obj=kind)


def test_no_rows_in_gives_no_rows_out_with_the_documented_columns(trained: TrainResult, tag_config: Config) -> None:
    features = pd.DataFrame({"customer_id": pd.Series([], dtype=object)})

    rows = tag_rows(features, trained.bundle, tag_config, AS_OF, "test")

    assert len(rows) == 0
    assert list(rows.columns) == [*OUTPUT_DOCS, *tag_config.scoring.scenarios]


# --- re-buy intervals: learned at training time, stored in the bundle ---------------------------------


@pytest.mark.slow
def test_training_stores_the_re_buy_intervals_learned_from_the_history_before_as_of(
    trained: TrainResult, orders: pd.DataFrame, tag_config: Config
) -> None:
    con = connect(tag_config.engine)
    try:
        learned = learn_rebuy_intervals(con, orders_view(con, orders[orders["order_ts"] < AS_OF]), AS_OF, tag_config)
    finally:
        con.close()

    assert trained.bundle.rebuy_days == learned
    assert len(learned) >= 5 and all(days > 0 for days in learned.values())


@pytest.mark.slow
def test_categories_due_counts_against_the_bundles_intervals_not_the_scored_history(
    shop: Path, whole_shop: pd.DataFrame, orders: pd.DataFrame, customers: pd.DataFrame, trained: TrainResult,
    tag_config: Config, tmp_path: Path
) -> None:
    categories = trained.bundle.rebuy_days
    never = dataclasses.replace(trained.bundle, rebuy_days={c: 100_000.0 for c in categories})
    at_once = dataclasses.replace(trained.bundle, rebuy_days={c: 0.0 for c in categories})

    assert 0 < whole_shop["due_any"].sum() < (whole_shop["lifecycle_stage"] != "registered").sum()
    _, none_due = _score(shop, never, tag_config, tmp_path / "never.parquet")
    assert not none_due["due_any"].any() and not none_due["cross_sell_window"].any()
    _, all_due = _score(shop, at_once, tag_config, tmp_path / "at_once.parquet")
    buyers = all_due["lifecycle_stage"] != "registered"
    assert all_due.loc[buyers, "due_any"].all()
    # The predictions do not use the intervals: only the tags that read categories_due change.
    pd.testing.assert_frame_equal(all_due.drop(columns=["due_any", "cross_sell_window"]),
                                  none_due.drop(columns=["due_any", "cross_sell_window"]), check_exact=True)
    # One customer alone follows the bundle too.
    customer_id = whole_shop.loc[whole_shop["due_any"], "customer_id"].iloc[0]
    assert not _alone(customer_id, orders, customers, never, tag_config)["due_any"].item()


@pytest.mark.slow
def test_a_saved_bundle_loads_with_the_same_re_buy_intervals(trained: TrainResult, tmp_path: Path) -> None:
    folder = trained.bundle.save(tmp_path / "bundle")

    assert (folder / REBUY_FILE).exists()
    assert Bundle.load(folder).rebuy_days == trained.bundle.rebuy_days


@pytest.mark.slow
def test_a_damaged_re_buy_intervals_file_is_a_bundle_error_naming_it(trained: TrainResult, tmp_path: Path) -> None:
    folder = trained.bundle.save(tmp_path / "bundle")
    (folder / REBUY_FILE).write_text('["not", "a", "mapping"]')

    with pytest.raises(BundleError, match=f"{REBUY_FILE}: not the bundle's category re-buy intervals"):
        Bundle.load(folder)


# --- a bundle saved before the intervals were stored ---------------------------------------------------


@pytest.fixture(scope="module")
def old_bundle(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    """The trained bundle as an older lifetag saved it: no re-buy intervals file."""
    folder = trained.bundle.save(tmp_path_factory.mktemp("old") / "bundle")
    (folder / REBUY_FILE).unlink()
    return Bundle.load(folder)


@pytest.mark.slow
def test_an_old_bundle_cannot_tag_one_customer_and_says_to_retrain(old_bundle: Bundle) -> None:
    assert old_bundle.rebuy_days is None
    with pytest.raises(BundleError) as caught:
        old_bundle.rebuy_intervals()
    message = str(caught.value)

    assert "re-buy intervals" in message and "Retrain it with `lifetag train`" in message
    assert f"as_of {old_bundle.as_of}" in message and "\n" not in message


@pytest.mark.slow
def test_an_old_bundle_still_scores_the_batch_learning_the_intervals_from_its_orders_and_says_so(
    shop: Path, whole_shop: pd.DataFrame, old_bundle: Bundle, tag_config: Config, tmp_path: Path
) -> None:
    result, tags = _score(shop, old_bundle, tag_config, tmp_path / "tags.parquet")

    # Scored at the training as_of over the same history, the intervals learned now are the stored ones.
    pd.testing.assert_frame_equal(tags, whole_shop.reset_index(drop=True), check_exact=True)
    [note] = [n for n in result.notes if n.startswith("categories_due:")]
    assert "older lifetag" in note and "Retrain it with `lifetag train`" in note


def test_the_boosters_array_inputs_predict_exactly_what_the_frame_predicts(
        trained: TrainResult, shop: Path, tag_config: Config) -> None:
    """`Bundle.inputs` hands LightGBM the array it would make of the model frame itself: every booster's
    predictions (and the explainer's contributions) are equal to the last bit, unseen categories included."""
    bundle = trained.bundle
    assert bundle.spec.categorical, "the test needs a model with categorical inputs"
    con = connect(tag_config.engine)
    try:
        source = orders_view(con, pd.read_parquet(shop / "orders.parquet"))
        table = customers_view(con, pd.read_parquet(shop / "customers.parquet"), tag_config)
        features = tag_inputs_relation(con, source, AS_OF, tag_config, bundle.rebuy_intervals(), table).df()
    finally:
        con.close()
    column = next(iter(bundle.spec.categorical))
    features.loc[features.index[:25], column] = "a category never seen in training"
    enriched = bundle.bg_columns(features)
    matrix = bundle.spec.matrix(enriched)
    inputs = bundle.inputs(enriched)
    assert isinstance(inputs, np.ndarray) and np.isnan(inputs[:25, bundle.spec.columns.index(column)]).all()
    compared = 0
    for model in bundle.models.values():
        for name in model.boosters:
            booster = model.booster(name)
            kwargs = {"pred_contrib": True} if name == "explain" else {"raw_score": True}
            np.testing.assert_array_equal(booster.predict(inputs, **kwargs), booster.predict(matrix, **kwargs))
            # A few rows go through LightGBM on one thread (booster_predict): the same numbers as in a big batch.
            np.testing.assert_array_equal(booster_predict(booster, inputs[:3], **kwargs),
                                          booster_predict(booster, inputs, **kwargs)[:3])
            compared += 1
    assert compared >= 3
    pd.testing.assert_frame_equal(bundle.predict_enriched(enriched, inputs), bundle.predict_enriched(enriched, matrix))


def test_array_codes_a_category_as_the_matrix_does_whatever_the_values_are() -> None:
    """FeatureSpec.array's codes equal those of matrix()'s categoricals: values compared as text, missing
    ones (None, NaN, pd.NA) and ones unseen in training NaN, for object, text and number columns."""
    spec = FeatureSpec(numeric=["x"], categorical={"channel": ["1", "1.5", "app", "web"], "level": ["2", "gold"]})
    frame = pd.DataFrame({
        "x": [0.5, np.nan, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        "channel": pd.Series([1, "app", None, np.nan, pd.NA, "shop", "web", 1.5], dtype=object),
        "level": pd.Series(["gold", None, "2", "silver", "gold", None, "gold", "2"], dtype="str"),
    })
    from_matrix = np.column_stack([
        frame["x"].to_numpy(dtype=float),
        *[np.where(spec.matrix(frame)[c].cat.codes < 0, np.nan, spec.matrix(frame)[c].cat.codes) for c in ("channel", "level")],
    ])
    np.testing.assert_array_equal(spec.array(frame), from_matrix)
    assert np.isnan(spec.array(frame)[[2, 3, 4, 5], 1]).all() and spec.array(frame)[0, 1] == 0.0
    nan = np.nan
    np.testing.assert_array_equal(spec.array(frame)[:, 1:], [[0, 1], [2, nan], [nan, 0], [nan, nan], [nan, 1],
                                                              [nan, nan], [3, 1], [1, 0]])
