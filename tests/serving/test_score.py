"""Batch scoring (`serving.scoring.score`) end to end: train on a generated shop, then tag every customer.

Real DuckDB, LightGBM and files; nothing is mocked. The model is trained once per module (trials=0)
on a 2,500-customer shop and saved as a bundle folder; each scoring run of that shop takes about a
second. The shop scored carries a few hand-made customers whose scenario tags are known by
construction. Rules (lifecycle stage, RFM segment) are also checked on hand-made feature rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from configs.schema import RFM_SEGMENT_KEYS, Config, ConfigError, load_config
from features.segments import RfmCutPoints, rfm_scores, rfm_segment
from serving.bundle import Bundle
from serving.scoring import (
    OUTPUT_DOCS, ScoreResult, ScoringError, check_scenarios, lifecycle_stage, output_docs, score,
)
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home, parquet_file

CUSTOMERS = 2_500
SEED = 13
AS_OF = pd.Timestamp("2024-10-01")  # mid-history: later orders and later customers must be ignored
USER_TAGS = {
    "big_spender_at_risk": "monetary_total >= 500 AND churn_tier <> 'low'",
    "vip_slipping": "rfm_segment = 'important_value' AND lifecycle_stage IN ('at_risk', 'dormant')",
}
STAGES = {"new", "active", "at_risk", "dormant", "churned"}
TIERS = {"high", "medium", "low"}


def _day(offset_days: float) -> pd.Timestamp:
    return AS_OF + pd.Timedelta(days=offset_days)


def _hand_made_orders() -> pd.DataFrame:
    """Customers whose scenario tags are known by construction (one line per order, at noon)."""
    orders = {
        # Every 30 days, last one 30.5 days ago: on cadence (1.02x their gap) -> replenishment_due.
        "zz-replenisher": [_day(-120.5), _day(-90.5), _day(-60.5), _day(-30.5)],
        # Every 10 days, last one 80.5 days ago: 8x their gap -> at_risk, not due, not yet dormant_90d.
        "zz-overdue": [_day(-100.5), _day(-90.5), _day(-80.5)],
        # One order 200 days ago -> dormant, dormant_90d.
        "zz-dormant": [_day(-200.5)],
        # Bought on the 618 promotion day of 2024 (104.5 days ago), nothing since -> promo_sleeper, and
        # still active by their own 109-day cadence.
        "zz-promo-sleeper": [pd.Timestamp("2024-03-01 12:00"), pd.Timestamp("2024-06-18 12:00")],
        # Bought on 618, and again after it -> not a promo sleeper.
        "zz-promo-back": [pd.Timestamp("2024-06-18 12:00"), pd.Timestamp("2024-08-01 12:00")],
        # First order exactly at as_of: not a customer yet.
        "zz-future": [AS_OF],
    }
    rows = [
        {"customer_id": customer, "order_id": f"{customer}-{k}", "order_ts": ts, "amount": 40.0, "quantity": 1,
         "category": "hand-made", "product_id": "P-hand", "discount": 0.0, "channel": "web", "status": "completed"}
        for customer, stamps in orders.items() for k, ts in enumerate(stamps)
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED) / "orders.parquet"


@pytest.fixture(scope="module")
def trained(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    monkeypatch = module_home(tmp_path_factory.mktemp("home"))
    try:
        return fit_bundle(shop, config, as_of=AS_OF, trials=0)
    finally:
        monkeypatch.undo()


@pytest.fixture(scope="module")
def bundle_dir(trained: TrainResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained.bundle.save(tmp_path_factory.mktemp("models") / "nightly")


@pytest.fixture(scope="module")
def orders(shop: Path) -> pd.DataFrame:
    """The generated shop plus the hand-made customers."""
    generated = pd.read_parquet(shop)
    hand_made = _hand_made_orders().astype({c: generated[c].dtype for c in generated.columns})
    return pd.concat([generated, hand_made], ignore_index=True)


@pytest.fixture(scope="module")
def orders_path(orders: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parquet_file(orders, tmp_path_factory.mktemp("scored_shop"), "orders.parquet")


@pytest.fixture(scope="module")
def tag_config() -> Config:
    """The defaults plus two marketing-defined tags."""
    return load_config(overrides={"scoring": {"scenarios": USER_TAGS}})


@pytest.fixture(scope="module")
def scored(orders_path: Path, bundle_dir: Path, tag_config: Config,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoreResult, pd.DataFrame, list[tuple[str, int]]]:
    """One `score` run of the whole shop with the saved bundle: its result, its output and its progress calls."""
    out = tmp_path_factory.mktemp("tags") / "tags.parquet"
    calls: list[tuple[str, int]] = []

    def progress(description: str, total: int):
        calls.append((description, total))
        return lambda n: calls.append(("advance", n))

    monkeypatch = module_home(tmp_path_factory.mktemp("home"))
    try:
        result = score(orders_path, AS_OF, out, tag_config, model_uri=str(bundle_dir), progress=progress)
    finally:
        monkeypatch.undo()
    return result, pd.read_parquet(out), calls


@pytest.fixture(scope="module")
def tags(scored) -> pd.DataFrame:
    return scored[1]


def _score_to(path: Path, orders_path: Path, trained: TrainResult, config: Config, **kwargs) -> pd.DataFrame:
    score(orders_path, AS_OF, path, config, bundle=trained.bundle, model_version="test", **kwargs)
    return pd.read_parquet(path)


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_customer_with_a_purchase_before_as_of_has_exactly_one_row(tags: pd.DataFrame, orders: pd.DataFrame,
                                                                          scored) -> None:
    result, _, calls = scored
    returned = orders["status"].isin(["returned", "cancelled"]) | (orders["amount"] < 0)
    expected = set(orders.loc[(orders["order_ts"] < AS_OF) & ~returned, "customer_id"])

    assert tags["customer_id"].is_unique
    assert set(tags["customer_id"]) == expected
    assert list(tags["customer_id"]) == sorted(expected), "rows are in customer order"
    assert "zz-future" not in expected and len(expected) < orders["customer_id"].nunique()
    assert result.customers == len(tags)
    assert calls[0] == ("Scoring customers", len(tags))
    assert sum(n for what, n in calls[1:] if what == "advance") == len(tags)


@pytest.mark.slow
def test_columns_are_the_documented_ones_plus_one_flag_per_configured_scenario(tags: pd.DataFrame,
                                                                               tag_config: Config) -> None:
    scenarios = list(tag_config.scoring.scenarios)

    assert {"replenishment_due", "about_to_churn", "dormant_90d", "cross_sell_window", "promo_sleeper"} <= set(scenarios)
    assert list(tags.columns) == [*OUTPUT_DOCS, *scenarios]
    # Without a customers table the declared attributes are not in the output.
    attributes = set(tag_config.customers.attributes)
    assert [name for name, _, _ in output_docs(tag_config) if name not in attributes] == list(tags.columns)
    for name in scenarios:
        assert tags[name].dtype == bool, name
    # signup_days and first_purchase_prob need a customers table; without one they are empty for everyone.
    assert tags[["signup_days", "first_purchase_prob"]].isna().all().all()
    assert not tags[list(OUTPUT_DOCS)].drop(columns=["expected_next_order", "reasons", "signup_days",
                                                     "first_purchase_prob"]).isna().any().any()


@pytest.mark.slow
def test_customer_ids_stay_text_exactly_as_given(tags: pd.DataFrame) -> None:
    generated = tags.loc[~tags["customer_id"].str.startswith("zz-"), "customer_id"]

    assert tags["customer_id"].map(type).eq(str).all()
    assert generated.str.fullmatch(r"\d{7}").all(), "zero-padded ids keep their padding"
    assert generated.str.startswith("000").any()


@pytest.mark.slow
def test_predictions_are_probabilities_and_money_with_value_at_risk_their_product(tags: pd.DataFrame) -> None:
    for column in ("churn_risk", "repurchase_prob"):
        assert tags[column].between(0, 1).all(), column
        assert tags[column].std() > 0.05, f"{column} barely varies"
    assert (tags["ltv"] >= 0).all()
    assert (tags["value_at_risk"] == tags["churn_risk"] * tags["ltv"]).all()
    assert (tags["as_of"] == AS_OF.date()).all()
    assert (tags["model_version"] == "bundle:nightly").all()


@pytest.mark.slow
def test_expected_next_order_is_after_as_of_and_sooner_for_likelier_buyers(tags: pd.DataFrame) -> None:
    known = tags.dropna(subset=["expected_next_order"])
    dates = pd.to_datetime(known["expected_next_order"])

    assert len(known) > 0.5 * len(tags)
    assert (dates >= AS_OF).all()
    assert (dates <= AS_OF + pd.Timedelta(days=3650)).all()
    order = known.sort_values("repurchase_prob", kind="stable")
    assert pd.to_datetime(order["expected_next_order"]).is_monotonic_decreasing
    unknown = tags[tags["expected_next_order"].isna()]
    assert (unknown["repurchase_prob"] < known["repurchase_prob"].min()).all()


@pytest.mark.slow
def test_tiers_follow_the_configured_thresholds_and_the_cut_points_stored_with_the_model(
    tags: pd.DataFrame, trained: TrainResult, tag_config: Config
) -> None:
    churn = tag_config.scoring.churn_tier
    expected_churn = np.where(tags["churn_risk"] >= churn.high, "high",
                              np.where(tags["churn_risk"] >= churn.medium, "medium", "low"))
    cuts = trained.bundle.metadata["tier_cut_points"]
    expected_value = np.where(tags["ltv"] >= cuts["ltv"]["high"], "high",
                              np.where(tags["ltv"] >= cuts["ltv"]["medium"], "medium", "low"))

    assert set(tags["churn_tier"]) == TIERS and set(tags["value_tier"]) == TIERS
    assert (tags["churn_tier"] == expected_churn).all()
    assert (tags["value_tier"] == expected_value).all()
    # Scored at the training as_of, the tiers are the configured top shares of the population.
    shares = tag_config.scoring.value_tier_top_share
    assert (tags["value_tier"] == "high").mean() == pytest.approx(shares.high, abs=0.02)
    assert tags["value_tier"].isin(["high", "medium"]).mean() == pytest.approx(shares.medium, abs=0.02)
    potential = (tags["value_tier"] == "high") & (tags["monetary_total"] < cuts["monetary_total"]["high"])
    assert (tags["high_value_potential"] == potential).all()
    assert potential.any() and not potential.all()


@pytest.mark.slow
def test_rfm_scores_rank_customers_and_segments_follow_the_eight_group_rule(tags: pd.DataFrame,
                                                                          tag_config: Config) -> None:
    for column, feature, higher_is_better in (("rfm_r", "recency_days", False), ("rfm_f", "frequency", True),
                                              ("rfm_m", "monetary_total", True)):
        assert tags[column].between(1, 5).all(), column
        ranked = tags.sort_values(feature, kind="stable")[column]
        assert ranked.is_monotonic_increasing if higher_is_better else ranked.is_monotonic_decreasing, column
    # Recency is continuous: the training population's quintiles give each score about a fifth.
    assert tags["rfm_r"].value_counts(normalize=True).sort_index().to_numpy() == pytest.approx([0.2] * 5, abs=0.03)

    high = tag_config.rfm.high_score_from
    r, f, m = (tags[c] >= high for c in ("rfm_r", "rfm_f", "rfm_m"))
    group = np.select([r & f, r & ~f, ~r & f], ["value", "develop", "retain"], default="winback")
    assert (tags["rfm_segment"] == np.where(m, "important_", "general_") + group).all()
    assert set(tags["rfm_segment"]) == set(RFM_SEGMENT_KEYS)
    labels = tag_config.rfm.segments
    for key, info in labels.items():
        rows = tags[tags["rfm_segment"] == key]
        assert set(rows["rfm_segment_label"]) == {info.label}, key
        assert set(rows["rfm_segment_label_zh"]) == {info.label_zh}, key
        assert set(rows["rfm_action"]) == {info.action}, key
    assert set(tags.loc[tags["rfm_segment"] == "important_value", "rfm_segment_label_zh"]) == {"重要价值客户"}
    assert set(tags.loc[tags["rfm_segment"] == "general_winback", "rfm_segment_label_zh"]) == {"一般挽留客户"}


@pytest.mark.slow
def test_lifecycle_stages_agree_with_recency_thresholds(tags: pd.DataFrame, tag_config: Config) -> None:
    rules = tag_config.scoring.lifecycle

    assert set(tags["lifecycle_stage"]) == STAGES
    assert ((tags["lifecycle_stage"] == "churned") == (tags["recency_days"] >= rules.churned_days)).all()
    dormant = (tags["recency_days"] >= rules.dormant_days) & (tags["recency_days"] < rules.churned_days)
    assert ((tags["lifecycle_stage"] == "dormant") == dormant).all()
    assert (tags.loc[tags["lifecycle_stage"] == "new", "recency_days"] < rules.new_days).all()


@pytest.mark.slow
def test_reasons_are_given_for_medium_and_high_churn_tiers_only(tags: pd.DataFrame) -> None:
    low = tags["churn_tier"] == "low"
    worded = tags.loc[~low, "reasons"].dropna()

    assert tags.loc[low, "reasons"].isna().all()
    assert len(worded) > 0.9 * (~low).sum()
    assert worded.str.split("; ").map(len).le(3).all()
    assert worded.str.contains("no order for").any()


def test_every_model_feature_has_words_for_a_value_and_for_an_empty_value(config: Config) -> None:
    from features.behaviour import customer_columns, feature_columns
    from features.clv import bg_feature_columns
    from serving.tags import REASON_PHRASES, TEXT_PHRASES, _phrase_key, _phrases

    attributes = {name: a.type for name, a in config.customers.attributes.items()}
    config = config.model_copy(update={"features": config.features.model_copy(update={"season": True})})
    features = [c for c in feature_columns(config) + customer_columns(config) if c != "customer_id"]
    assert "season_ratio_90d" in features
    features += bg_feature_columns([30, 90, 365])
    rows = pd.DataFrame({c: [2.0, np.nan] for c in features})
    for name in [*TEXT_PHRASES, *(n for n, kind in attributes.items() if kind == "categorical")]:
        rows[name] = pd.Series(["gold", None], dtype="object")

    for feature in features:
        assert feature in attributes or feature in TEXT_PHRASES or _phrase_key(feature) in REASON_PHRASES, feature
        known, empty = _phrases(feature, rows, attributes)
        for phrase in (known, empty):
            assert "_" not in phrase and "unknown" not in phrase and "nan" not in phrase, (feature, phrase)
        assert known != empty, feature
    assert _phrases("membership_level", rows, attributes) == ["membership level: gold", "no membership level on record"]
    assert _phrases("age", rows.assign(age=[55.0, np.nan]), attributes) == ["age 55", "no age on record"]


@pytest.mark.slow
def test_the_closing_summary_counts_what_was_written(scored) -> None:
    result, tags, _ = scored

    for frame, column in ((result.summary_by_segment, "rfm_segment"), (result.summary_by_stage, "lifecycle_stage")):
        counts = dict(zip(frame[column], frame["customers"]))
        assert counts == tags[column].value_counts().to_dict(), column
        assert frame["revenue_share"].sum() == pytest.approx(1.0)
    assert result.scenario_counts == {name: int(tags[name].sum()) for name in result.scenario_counts}


# --- scenario tags --------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_scenario_tags_mark_the_hand_made_customers(tags: pd.DataFrame) -> None:
    flags = tags.set_index("customer_id").loc[
        ["zz-replenisher", "zz-overdue", "zz-dormant", "zz-promo-sleeper", "zz-promo-back"],
        ["replenishment_due", "dormant_90d", "promo_sleeper", "lifecycle_stage"],
    ]
    expected = pd.DataFrame(
        [[True, False, False, "active"],
         [False, False, False, "at_risk"],
         [False, True, False, "dormant"],
         [False, True, True, "active"],
         [False, False, False, "active"]],
        index=flags.index, columns=flags.columns,
    )
    pd.testing.assert_frame_equal(flags, expected, check_dtype=False)


@pytest.mark.slow
def test_scenario_flags_equal_their_expressions_over_the_output(tags: pd.DataFrame) -> None:
    assert (tags["dormant_90d"] == (tags["recency_days"] >= 90)).all()
    churning = ((tags["churn_risk"] >= 0.5) & tags["lifecycle_stage"].isin(["active", "at_risk"]))
    assert (~tags["about_to_churn"] | churning).all()
    assert (tags["big_spender_at_risk"] == ((tags["monetary_total"] >= 500) & (tags["churn_tier"] != "low"))).all()
    vip = (tags["rfm_segment"] == "important_value") & tags["lifecycle_stage"].isin(["at_risk", "dormant"])
    assert (tags["vip_slipping"] == vip).all()
    for name in ("replenishment_due", "about_to_churn", "dormant_90d", "cross_sell_window", "promo_sleeper",
                 "big_spender_at_risk"):
        assert 0 < tags[name].sum() < len(tags), f"{name} marks nobody or everybody"


SCORED_COLUMNS = {"customer_id": "VARCHAR", "recency_days": "DOUBLE", "repeat_orders": "BIGINT",
                  "churn_tier": "VARCHAR", "lifecycle_stage": "VARCHAR"}


@pytest.mark.parametrize("expression, says", [
    ("recency_dayz >= 90", "recency_dayz"),
    ("recency_days >= ", "syntax error"),
    ("churn_tier", "gives VARCHAR"),
    ("recency_days", "gives DOUBLE"),
    ("(SELECT count(*) FROM read_csv('/etc/passwd')) > 0", "may only compute from the row's own columns"),
    ("(SELECT max(length(content)) FROM read_text('/etc/hostname')) > 0", "may only compute from the row's own columns"),
])
def test_a_bad_tag_expression_is_one_paragraph_naming_the_tag_and_the_columns(expression: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_scenarios({"dormant_90d": "recency_days >= 90", "my_tag": expression}, SCORED_COLUMNS)
    message = str(caught.value)

    assert message.startswith("scoring.scenarios.my_tag: ")
    assert says.lower() in message.lower()
    assert all(column in message for column in SCORED_COLUMNS), "the message lists the columns"
    assert "\n" not in message


@pytest.mark.parametrize("name", ["churn_tier", "Lifecycle_Stage", "not an identifier"])
def test_a_tag_cannot_take_the_name_of_a_column_or_an_unquotable_name(name: str) -> None:
    with pytest.raises(ConfigError, match=f"tag name '{name}'"):
        check_scenarios({name: "recency_days >= 90"}, SCORED_COLUMNS)


# --- partitions, re-runs, atomic output ------------------------------------------------------------


@pytest.mark.slow
def test_output_is_identical_whatever_the_partition_count_and_batch_size(
    orders_path: Path, trained: TrainResult, tag_config: Config, tmp_path: Path
) -> None:
    one = _score_to(tmp_path / "p1.parquet", orders_path, trained, tag_config, partitions=1)
    small_batches = tag_config.model_copy(update={"scoring": tag_config.scoring.model_copy(update={"batch_customers": 300})})

    for partitions, config in ((3, tag_config), (7, tag_config), (2, small_batches)):
        other = _score_to(tmp_path / f"p{partitions}.parquet", orders_path, trained, config, partitions=partitions)
        pd.testing.assert_frame_equal(other, one, check_exact=True, obj=f"{partitions} partitions")


@pytest.mark.slow
def test_a_rerun_gives_the_same_output_and_leaves_no_temporary_files(
    orders_path: Path, trained: TrainResult, tag_config: Config, tmp_path: Path
) -> None:
    first = _score_to(tmp_path / "tags.parquet", orders_path, trained, tag_config, partitions=2)
    again = _score_to(tmp_path / "tags.parquet", orders_path, trained, tag_config, partitions=2)

    pd.testing.assert_frame_equal(again, first, check_exact=True)
    assert [p.name for p in tmp_path.iterdir()] == ["tags.parquet"]


@pytest.mark.slow
@pytest.mark.parametrize("expression, error", [
    ("no_such_column > 1", ConfigError),               # caught by the check at start
    ("CAST(churn_tier AS INTEGER) > 0", ScoringError),  # compiles, but fails on the first row it meets
])
def test_a_failed_run_leaves_the_previous_output_untouched(
    expression: str, error: type[Exception], orders_path: Path, trained: TrainResult, tag_config: Config,
    tmp_path: Path
) -> None:
    out = tmp_path / "tags.parquet"
    _score_to(out, orders_path, trained, tag_config)
    before = out.read_bytes()
    broken = load_config(overrides={"scoring": {"scenarios": {"broken": expression}}})

    with pytest.raises(error, match="scoring.scenarios.broken"):
        score(orders_path, AS_OF, out, broken, bundle=trained.bundle, model_version="other")

    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["tags.parquet"]
    score(orders_path, AS_OF, out, tag_config, bundle=trained.bundle, model_version="other")
    assert set(pd.read_parquet(out)["model_version"]) == {"other"}, "a successful run replaces the output"


@pytest.mark.slow
def test_scoring_before_the_first_order_is_an_error_not_an_empty_file(
    orders_path: Path, trained: TrainResult, tag_config: Config, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="no orders before --as-of 2021-01-01: the first order is on 2022-01-0"):
        score(orders_path, "2021-01-01", tmp_path / "tags.parquet", tag_config, bundle=trained.bundle)
    assert list(tmp_path.iterdir()) == []


# --- rules on hand-made rows -----------------------------------------------------------------------

LIFECYCLE_CASES = [
    # recency_days, tenure_days, repeat_orders, overdue_ratio, stage
    (10.0, 10.0, 0, None, "new"),            # first order 10 days ago
    (2.0, 29.9, 2, 9.0, "new"),              # new wins over an overdue cadence
    (5.0, 30.0, 0, None, "active"),          # first order exactly new_days ago: no longer new
    (15.0, 200.0, 3, 1.5, "at_risk"),        # 15 days is 1.5x their 10-day cadence
    (14.9, 200.0, 3, 1.49, "active"),
    (100.0, 400.0, 4, 1.11, "active"),       # 100 days, but they buy every 90: not at risk
    (59.9, 100.0, 0, None, "active"),        # one order: the fixed day count decides
    (60.0, 100.0, 0, None, "at_risk"),
    (150.0, 300.0, 1, None, "at_risk"),      # two orders placed together: no cadence, day count decides
    (179.9, 300.0, 0, None, "at_risk"),
    (180.0, 300.0, 5, 1.0, "dormant"),       # on cadence, but 180 days is dormant whatever the cadence
    (364.9, 500.0, 0, None, "dormant"),
    (365.0, 500.0, 2, 1.0, "churned"),
]


def _feature_rows(cases: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame([case[:4] for case in cases],
                        columns=["recency_days", "tenure_days", "repeat_orders", "overdue_ratio"])


def test_lifecycle_stage_rules_on_hand_made_rows(config: Config) -> None:
    stages = lifecycle_stage(_feature_rows(LIFECYCLE_CASES), config)
    assert list(stages) == [case[4] for case in LIFECYCLE_CASES]


def test_lifecycle_thresholds_come_from_config() -> None:
    strict = load_config(overrides={"scoring": {"lifecycle": {
        "new_days": 7, "at_risk_overdue": 1.2, "at_risk_days": 30, "dormant_days": 90, "churned_days": 120}}})
    rows = _feature_rows([(5.0, 10.0, 0, None), (5.0, 6.0, 0, None), (12.0, 100.0, 2, 1.2),
                          (30.0, 100.0, 0, None), (90.0, 100.0, 0, None), (120.0, 200.0, 0, None)])
    assert list(lifecycle_stage(rows, strict)) == ["active", "new", "at_risk", "at_risk", "dormant", "churned"]


RFM_CASES = [
    # rfm_r, rfm_f, rfm_m, segment (high_score_from 3)
    (5, 5, 5, "important_value"),
    (3, 3, 3, "important_value"),
    (5, 1, 4, "important_develop"),
    (2, 5, 3, "important_retain"),
    (1, 1, 5, "important_winback"),
    (5, 5, 2, "general_value"),
    (4, 2, 1, "general_develop"),
    (2, 4, 2, "general_retain"),
    (1, 1, 1, "general_winback"),
    (2, 2, 2, "general_winback"),
]


def test_the_eight_rfm_segments_on_hand_made_scores(config: Config) -> None:
    scores = pd.DataFrame([case[:3] for case in RFM_CASES], columns=["rfm_r", "rfm_f", "rfm_m"])

    assert list(rfm_segment(scores, config.rfm)) == [case[3] for case in RFM_CASES]
    stricter = config.rfm.model_copy(update={"high_score_from": 4})
    assert list(rfm_segment(scores.iloc[[1]], stricter)) == ["general_winback"]


def test_rfm_scores_use_the_stored_cut_points_with_edges_in_the_lower_bin() -> None:
    cuts = RfmCutPoints(recency_days=(10.0, 20.0, 30.0, 40.0), frequency=(1.0, 1.0, 2.0, 4.0),
                        monetary_total=(50.0, 100.0, 200.0, 400.0))
    features = pd.DataFrame({
        "recency_days": [5.0, 10.0, 10.5, 40.0, 41.0],
        "frequency": [1, 2, 3, 4, 9],
        "monetary_total": [0.0, 50.0, 100.01, 399.0, 1e6],
    })
    scores = rfm_scores(features, cuts)

    assert scores["rfm_r"].tolist() == [5, 5, 4, 2, 1]
    assert scores["rfm_f"].tolist() == [1, 3, 4, 4, 5]  # one-order customers all score F=1
    assert scores["rfm_m"].tolist() == [1, 1, 3, 4, 5]


@pytest.mark.slow
def test_a_saved_bundle_loads_with_the_same_cut_points(trained: TrainResult, bundle_dir: Path) -> None:
    loaded = Bundle.load(bundle_dir)
    assert loaded.rfm_cut_points == trained.bundle.rfm_cut_points
    assert loaded.metadata["tier_cut_points"] == trained.bundle.metadata["tier_cut_points"]
