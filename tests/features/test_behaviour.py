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
