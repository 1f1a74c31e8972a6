"""Features on a tiny hand-computed history, and invariance to how customers are partitioned."""
from __future__ import annotations

import math

import pandas as pd
import pytest

import features
from features.behaviour import feature_columns

AS_OF = "2024-04-01"


def _line(customer, order, ts, amount, category=None, discount=0.0, channel=None, status="completed"):
    return dict(customer_id=customer, order_id=order, order_ts=pd.Timestamp(ts), amount=amount,
                quantity=1, category=category, product_id=None, discount=discount, channel=channel, status=status)


@pytest.fixture()
def tiny_history() -> pd.DataFrame:
    return pd.DataFrame([
        _line("00042", "O1", "2024-01-01 10:00", 30.0, "A", channel="web"),
        _line("00042", "O1", "2024-01-01 10:00", 20.0, "B", discount=5.0, channel="web"),
        _line("00042", "O2", "2024-02-01 10:00", 40.0, "A", channel="app"),
        _line("00042", "O2-R", "2024-02-05 09:00", 10.0, "A", channel="app", status="returned"),
        _line("00042", "O3", "2024-03-02 10:00", 60.0, "A", channel="web"),
        _line("00042", "O4", "2024-04-10 10:00", 25.0, "A", channel="web"),  # after as_of
        _line("7", "O5", "2023-12-15 00:00", 100.0, "C", channel="store"),
    ])


def test_features_match_hand_computed_values(tiny_history, config):
    frame = features.build(tiny_history, AS_OF, config).set_index("customer_id")
    c = frame.loc["00042"]
    expected = {
        "recency_days": 30 - 10 / 24, "tenure_days": 91 - 10 / 24, "active_span_days": 61,
        "frequency": 3, "repeat_orders": 2, "monetary_total": 140, "monetary_mean": 50, "monetary_std": 10,
        "monetary_max": 60, "first_order_amount": 50, "gap_mean_days": 30.5, "gap_median_days": 30.5,
        "gap_std_days": math.sqrt(0.5), "last_gap_days": 30, "overdue_ratio": (30 - 10 / 24) / 30.5,
        "orders_30d": 1, "spend_30d": 60, "orders_90d": 2, "spend_90d": 90, "orders_180d": 3,
        "spend_180d": 140, "orders_365d": 3, "spend_365d": 140, "trend_orders": 1, "trend_spend": 40,
        "distinct_categories": 2, "top_category_share": 0.75, "discount_share": 1 / 3, "discount_total": 5,
        "return_count": 1, "return_rate": 10 / 150, "weekend_share": 1 / 3, "novdec_share": 0,
    }
    for name, value in expected.items():
        assert c[name] == pytest.approx(value), name
    assert c["first_order_channel"] == "web"


def test_single_order_customer_has_empty_gaps_and_negative_trend(tiny_history, config):
    c = features.build(tiny_history, AS_OF, config).set_index("customer_id").loc["7"]
    assert c["frequency"] == 1 and c["recency_days"] == pytest.approx(108)
    assert pd.isna(c["gap_median_days"]) and pd.isna(c["overdue_ratio"]) and pd.isna(c["monetary_std"])
    assert c["trend_orders"] == -1 and c["trend_spend"] == -100
    assert c["novdec_share"] == 1


def test_trend_compares_with_the_trend_days_before_even_when_they_are_no_window(tiny_history):
    from configs.schema import load_config

    config = load_config(overrides={"features": {"windows_days": [30], "trend_days": 45}})
    c = features.build(tiny_history, AS_OF, config).set_index("customer_id").loc["00042"]
    # Last 45 days: O3 (60). The 45 days before: O2 (40) and its return (-10).
    assert c["trend_orders"] == 0 and c["trend_spend"] == 30
    assert c["orders_30d"] == 1 and c["spend_30d"] == 60


def test_features_ignore_orders_on_or_after_as_of(tiny_history, config):
    at_first_order = features.build(tiny_history, "2024-01-01 10:00", config)
    assert list(at_first_order["customer_id"]) == ["7"]


def test_columns_are_stable_and_documented(tiny_history, config):
    frame = features.build(tiny_history, AS_OF, config)
    assert list(frame.columns) == feature_columns(config)
    assert set(features.feature_docs(config)) == set(frame.columns)


def test_missing_optional_columns_give_empty_features(tiny_history, config):
    bare = tiny_history[["customer_id", "order_ts", "amount"]]
    frame = features.build(bare, AS_OF, config).set_index("customer_id")
    assert pd.isna(frame.loc["00042", "distinct_categories"]) and pd.isna(frame.loc["00042", "discount_share"])
    # Without order ids, the two lines of O1 (same customer, same time) are still one order.
    assert frame.loc["00042", "frequency"] == 4  # O1, O2, the return row counts as a purchase without status, O3


def test_labels_count_orders_and_net_spend_in_the_horizon(tiny_history, config):
    got = features.labels(tiny_history, AS_OF, 30, config).set_index("customer_id")
    assert got.loc["00042", "future_orders"] == 1 and got.loc["00042", "future_spend"] == 25
    assert got.loc["7", "future_orders"] == 0 and got.loc["7", "future_spend"] == 0


def test_a_window_counts_purchase_orders_and_net_spend_of_everyone_with_a_line_in_it(tiny_history, config):
    from features.behaviour import orders_view
    from features.engine import connect
    from features.labels import window_relation

    history = pd.concat([tiny_history, pd.DataFrame([
        _line("7", "O5-R", "2024-04-03 10:00", 40.0, "C", status="returned"),  # money back only: no order
        _line("new", "O6", "2024-04-05 10:00", 15.0, "A"),  # first order in the window
        _line("new", "O6", "2024-04-05 10:00", -5.0, "A"),  # a negative line of the same order: money back
        _line("late", "O7", "2024-05-01 10:00", 99.0, "A"),  # after the window
    ])])
    con = connect(config.engine)
    try:
        got = window_relation(con, orders_view(con, history), AS_OF, 30, config).df().set_index("customer_id")
    finally:
        con.close()
    assert sorted(got.index) == ["00042", "7", "new"]
    assert (got.loc["00042", "future_orders"], got.loc["00042", "future_spend"]) == (1, 25)
    assert (got.loc["7", "future_orders"], got.loc["7", "future_spend"]) == (0, -40)
    assert (got.loc["new", "future_orders"], got.loc["new", "future_spend"]) == (1, 10)


def test_same_features_whatever_the_customer_partition(small_shop, config):
    whole = features.build(small_shop, "2024-06-01", config)
    ids = small_shop["customer_id"].unique()
    parts = [small_shop[small_shop["customer_id"].isin(ids[i::3])] for i in range(3)]
    pieces = pd.concat([features.build(p, "2024-06-01", config) for p in parts])
    pieces = pieces.sort_values("customer_id", ignore_index=True)
    pd.testing.assert_frame_equal(whole, pieces)


def test_timezone_aware_timestamps_are_compared_in_utc(config):
    orders = pd.DataFrame({
        "customer_id": ["a", "b"],
        # 2024-01-01 01:00+02:00 is 2023-12-31 23:00 UTC: before the cut-off.
        "order_ts": pd.to_datetime(["2024-01-01T01:00:00+02:00", "2024-01-01T01:00:00+00:00"], utc=True),
        "amount": [10.0, 10.0],
    })
    assert list(features.build(orders, "2024-01-01", config)["customer_id"]) == ["a"]


def test_docs_feature_table_is_current(config):
    from pathlib import Path

    from features.behaviour import feature_table_markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "features.md").read_text()
    assert feature_table_markdown(config) in docs, "regenerate the table in docs/features.md"


def test_a_return_before_the_first_purchase_and_orders_at_one_time(config):
    history = pd.DataFrame([
        _line("r", "R0", "2024-01-01 00:00", 5.0, "A", channel="app", status="returned"),
        _line("r", "P1", "2024-01-10 00:00", 20.0, "A", channel="store"),
        _line("r", "P2", "2024-02-10 00:00", 30.0, "B", channel="web"),
        _line("r", "P3", "2024-02-10 00:00", 10.0, "B", channel="web"),
    ])
    c = features.build(history, AS_OF, config).set_index("customer_id").loc["r"]
    # The return-only event is neither the first order nor a gap end; P2 and P3 share a time, so the last gap is 0.
    assert c["frequency"] == 3 and c["first_order_amount"] == 20 and c["first_order_channel"] == "store"
    assert c["gap_mean_days"] == pytest.approx(15.5) and c["gap_median_days"] == pytest.approx(15.5)
    assert c["gap_std_days"] == pytest.approx(15.5 * math.sqrt(2)) and c["last_gap_days"] == 0
    assert c["return_count"] == 1 and c["monetary_total"] == 55 and c["tenure_days"] == pytest.approx(82)


# --- season columns (features.season) ------------------------------------------------------------

SEASON_COLUMNS = ["season_doy_sin", "season_doy_cos", "season_ratio_30d", "season_ratio_90d", "season_ratio_365d"]


def _season_config(**horizons):
    from configs.schema import load_config

    return load_config(overrides={"features": {"season": True}, "horizons": horizons})


@pytest.fixture()
def last_year() -> pd.DataFrame:
    """A shop around as_of - 365 days (2023-04-02 for as_of 2024-04-01): windows of 30 days before and after
    that day hold 2 and 3 purchases, of 90 days 3 and 4; returns, cancellations and today's orders around them."""
    return pd.DataFrame([
        _line("a", "A1", "2023-01-01 12:00", 10.0),                      # history starts: before both preceding windows
        _line("c", "D1", "2023-02-01 00:00", 10.0),                      # 90 days before
        _line("a", "B1", "2023-03-10 00:00", 10.0),                      # 30 (and 90) days before
        _line("b", "B2", "2023-03-20 00:00", 10.0),
        _line("b", "B2", "2023-03-20 00:00", 15.0),                      # a second line: still one order
        _line("b", "R1", "2023-03-25 00:00", 10.0, status="returned"),   # a return is no purchase
        _line("c", "X1", "2023-03-28 00:00", -10.0),                     # nor is a cancellation invoice
        _line("a", "C1", "2023-04-02 00:00", 20.0),                      # exactly as_of - 365 days: coming window
        _line("a", "C1", "2023-04-02 00:00", 5.0, status="returned"),    # an order with a bought line is a purchase
        _line("c", "C2", "2023-04-15 00:00", 20.0),
        _line("a", "C3", "2023-05-01 23:00", 20.0),
        _line("b", "E1", "2023-05-02 00:00", 20.0),                      # 30 coming days end here: only in 90
        _line("d", "N1", "2024-03-30 00:00", 20.0),                      # this year: in no season window
        _line("d", "F1", "2024-04-01 00:00", 99.0),                      # at as_of: never read
    ])


def test_season_columns_appear_only_when_switched_on(tiny_history, config):
    off = features.build(tiny_history, AS_OF, config)
    assert not [c for c in off.columns if c.startswith("season_")]
    season = _season_config()
    on = features.build(tiny_history, AS_OF, season)
    assert list(on.columns) == feature_columns(season) == [*off.columns, *SEASON_COLUMNS]
    assert set(features.feature_docs(season)) == set(on.columns)
    # Switching them on changes no other column.
    pd.testing.assert_frame_equal(on[list(off.columns)], off, check_exact=True)


def test_season_ratio_is_last_years_coming_window_over_the_one_before(last_year):
    frame = features.build(last_year, AS_OF, _season_config())
    assert list(frame["customer_id"]) == ["a", "b", "c", "d"]
    season = frame[SEASON_COLUMNS].drop_duplicates()
    assert len(season) == 1, "the season columns are shop-wide: one value for every customer"
    s = season.iloc[0]
    assert s["season_ratio_30d"] == pytest.approx(3 / 2)
    assert s["season_ratio_90d"] == pytest.approx(4 / 3)
    # The year before as_of - 365 days (from 2022-04-02) is not covered by a history starting 2023-01-01.
    assert pd.isna(s["season_ratio_365d"])
    # 2024-04-01 is day 92 of a leap year.
    angle = 2 * math.pi * 91 / 366
    assert s["season_doy_sin"] == pytest.approx(math.sin(angle)) and s["season_doy_cos"] == pytest.approx(math.cos(angle))


def test_season_ratio_is_empty_when_history_starts_inside_the_window_before(last_year):
    # Without A1 the history starts 2023-02-01: inside the 90 days before 2023-04-02, not the 30 days before.
    frame = features.build(last_year[last_year["order_id"] != "A1"], AS_OF, _season_config())
    assert frame["season_ratio_30d"].eq(3 / 2).all()
    assert frame["season_ratio_90d"].isna().all()


def test_season_ratio_is_empty_when_the_window_before_has_no_purchase(last_year):
    # Left in the 30 days before: a return and a cancellation, no purchase.
    frame = features.build(last_year[~last_year["order_id"].isin(["B1", "B2"])], AS_OF, _season_config())
    assert frame["season_ratio_30d"].isna().all()
    assert frame["season_ratio_90d"].eq(4 / 1).all()


def test_season_ratio_beyond_a_year_is_empty_rather_than_read_past_as_of(last_year):
    # Last year's coming 400 days would end after as_of: the column is there but empty.
    season = _season_config(repurchase_days=30, churn_days=30, ltv_days=400)
    frame = features.build(last_year, AS_OF, season)
    assert [c for c in frame.columns if c.startswith("season_")] == [
        "season_doy_sin", "season_doy_cos", "season_ratio_30d", "season_ratio_400d"]
    assert frame["season_ratio_30d"].eq(3 / 2).all() and frame["season_ratio_400d"].isna().all()


@pytest.mark.parametrize(("as_of", "angle"), [
    ("2024-01-01", 0.0), ("2024-12-31", 2 * math.pi * 365 / 366), ("2023-12-31", 2 * math.pi * 364 / 365),
    ("2023-07-02 18:00", 2 * math.pi * 182 / 365),
])
def test_season_day_of_year_goes_round_the_circle_once_a_year(as_of, angle):
    orders = pd.DataFrame([_line("a", "O1", "2020-01-01", 10.0)])
    c = features.build(orders, as_of, _season_config()).iloc[0]
    assert c["season_doy_sin"] == pytest.approx(math.sin(angle), abs=1e-12)
    assert c["season_doy_cos"] == pytest.approx(math.cos(angle), abs=1e-12)


def _whole_and_partitioned(shop, config, shop_wide: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Features of the whole shop at 2024-06-01, and of its customers in three parts put back together
    (with `shop_wide`, each part reads the shop-wide columns from the whole shop)."""
    from features.behaviour import build_relation, orders_view
    from features.engine import connect

    con = connect(config.engine)
    try:
        orders_view(con, shop)
        whole = build_relation(con, "orders", "2024-06-01", config).df()
        pieces = []
        for i in range(3):
            con.execute(f"CREATE TEMP VIEW part_{i} AS SELECT * FROM orders WHERE hash(customer_id) % 3 = {i}")
            pieces.append(build_relation(con, f"part_{i}", "2024-06-01", config,
                                         shop="orders" if shop_wide else None).df())
    finally:
        con.close()
    return whole, pd.concat(pieces).sort_values("customer_id", ignore_index=True)


def test_season_columns_of_a_partition_come_from_the_whole_shop(small_shop):
    whole, pieces = _whole_and_partitioned(small_shop, _season_config(), shop_wide=True)
    assert whole["season_ratio_30d"].notna().all()
    pd.testing.assert_frame_equal(whole, pieces, check_exact=True)


# --- last year's window per customer (features.last_year_days) ----------------------------------

def _last_year_config(*days):
    from configs.schema import load_config

    return load_config(overrides={"features": {"last_year_days": list(days)}})


def test_last_year_columns_are_each_customers_own_window_a_year_back(last_year):
    # as_of 2024-04-01: the windows start 2023-04-02 00:00; 30 days end 2023-05-02 00:00 (excluded).
    config = _last_year_config(90, 30)
    frame = features.build(last_year, AS_OF, config).set_index("customer_id")
    assert [c for c in frame.columns if c.startswith("last_year_")] == [
        "last_year_orders_30d", "last_year_spend_30d", "last_year_orders_90d", "last_year_spend_90d"]
    # a: C1 (20 bought, 5 of it returned: net 15) on the window's first instant and C3; b: E1 on the 30-day end.
    assert frame.loc[["a", "b", "c"], "last_year_orders_30d"].tolist() == [2, 0, 1]
    assert frame.loc[["a", "b", "c"], "last_year_spend_30d"].tolist() == [35, 0, 20]
    assert frame.loc[["a", "b", "c"], "last_year_orders_90d"].tolist() == [2, 1, 1]
    assert frame.loc[["a", "b", "c"], "last_year_spend_90d"].tolist() == [35, 20, 20]
    # d first bought in 2024, after both windows: empty (not a customer then), not 0 (bought nothing).
    assert frame.loc["d", [c for c in frame.columns if c.startswith("last_year_")]].isna().all()


def test_last_year_columns_appear_only_when_asked_for_and_change_nothing_else(last_year, config):
    off = features.build(last_year, AS_OF, config)
    on_config = _last_year_config(30)
    on = features.build(last_year, AS_OF, on_config)
    assert list(on.columns) == feature_columns(on_config) == [*off.columns, "last_year_orders_30d",
                                                                "last_year_spend_30d"]
    assert set(features.feature_docs(on_config)) == set(on.columns)
    pd.testing.assert_frame_equal(on[list(off.columns)], off, check_exact=True)


@pytest.mark.parametrize("days", [0, 365, 400])
def test_last_year_window_of_a_year_or_more_is_refused(days):
    from configs.schema import ConfigError

    with pytest.raises((ConfigError, ValueError), match="last_year_days"):
        _last_year_config(days)


def test_last_year_columns_are_the_same_whatever_the_partitioning(small_shop):
    whole, pieces = _whole_and_partitioned(small_shop, _last_year_config(30, 180), shop_wide=False)
    assert whole["last_year_spend_180d"].notna().any()
    pd.testing.assert_frame_equal(whole, pieces, check_exact=True)
