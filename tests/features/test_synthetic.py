"""Specification of the synthetic shop: schema, reproducibility, realism and the files it writes."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import features.synthetic as synthetic
from features.synthetic import ORDER_COLUMNS, generate_orders, write_shop

N_CUSTOMERS = 3_000
SEED = 7
PERIOD_END = pd.Timestamp("2025-01-01")  # exclusive: the default end is 2024-12-31 inclusive


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return generate_orders(N_CUSTOMERS, SEED)


@pytest.fixture(scope="module")
def orders(shop: pd.DataFrame) -> pd.DataFrame:
    """One row per completed order."""
    return shop[shop["status"] == "completed"].drop_duplicates("order_id")


def test_orders_have_the_canonical_columns_and_types(shop: pd.DataFrame) -> None:
    assert tuple(shop.columns) == ORDER_COLUMNS
    for column in ("customer_id", "order_id", "category", "product_id", "channel", "status"):
        assert pd.api.types.is_string_dtype(shop[column]), column
    assert shop["order_ts"].dtype.kind == "M" and shop["order_ts"].dt.tz is None
    assert shop["amount"].dtype == np.float64 and shop["discount"].dtype == np.float64
    assert pd.api.types.is_integer_dtype(shop["quantity"])
    assert not shop.isna().any().any()


def test_same_seed_gives_identical_orders(shop: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_orders(N_CUSTOMERS, SEED), shop)


def test_different_seed_gives_different_orders(shop: pd.DataFrame) -> None:
    other = generate_orders(N_CUSTOMERS, SEED + 1)
    assert len(other) != len(shop) or not other["amount"].equals(shop["amount"])


def test_customer_ids_are_zero_padded_strings(shop: pd.DataFrame) -> None:
    assert shop["customer_id"].str.fullmatch(r"\d{7}").all()
    assert shop["customer_id"].min() == "0000000"
    assert shop["customer_id"].nunique() == N_CUSTOMERS


def test_order_ids_are_unique_per_order(orders: pd.DataFrame) -> None:
    assert orders["order_id"].str.fullmatch(r"O\d{9}").all()
    assert orders["order_id"].is_unique


def test_lines_of_one_order_share_customer_time_and_channel(shop: pd.DataFrame) -> None:
    per_order = shop.groupby("order_id")[["customer_id", "order_ts", "channel"]].nunique()
    assert (per_order == 1).all().all()
    lines_per_order = shop[shop["status"] == "completed"].groupby("order_id").size()
    assert lines_per_order.between(1, 4).all() and (lines_per_order > 1).mean() > 0.2


def test_timestamps_fall_in_the_period_at_realistic_hours(shop: pd.DataFrame) -> None:
    assert shop["order_ts"].min() >= pd.Timestamp("2022-01-01")
    assert shop["order_ts"].max() < PERIOD_END
    hour = shop["order_ts"].dt.hour
    assert hour.nunique() > 12 and hour.between(2, 5).mean() < 0.05
    store_hour = shop.loc[shop["channel"] == "store", "order_ts"].dt.hour
    assert store_hour.between(9, 20).all()


def test_money_is_in_cents_and_discounts_reduce_the_amount(shop: pd.DataFrame) -> None:
    for column in ("amount", "discount"):
        assert np.allclose(shop[column], shop[column].round(2))
    assert (shop["amount"] > 0).all() and (shop["discount"] >= 0).all()
    assert (shop["quantity"] >= 1).all() and (shop["quantity"] == 1).mean() > 0.5
    assert 0.05 < (shop["discount"] > 0).mean() < 0.4


def test_returns_come_after_their_order_and_are_marked_returned(shop: pd.DataFrame) -> None:
    returns = shop[shop["order_id"].str.endswith("-R")]
    assert (returns["status"] == "returned").all()
    assert (shop["status"] == "returned").sum() == len(returns)
    completed = shop[shop["status"] == "completed"]
    assert 0.02 < len(returns) / len(completed) < 0.07
    original = returns.assign(order_id=returns["order_id"].str.removesuffix("-R")).merge(
        completed, on=["order_id", "customer_id", "category", "product_id"], suffixes=("", "_sold")
    )
    matched = original.drop_duplicates(["order_id", "product_id", "order_ts"])
    assert matched["order_id"].nunique() == returns["order_id"].nunique()
    delay = original["order_ts"] - original["order_ts_sold"]
    assert delay.between(pd.Timedelta(days=2), pd.Timedelta(days=20)).all()
    assert returns["order_ts"].max() < PERIOD_END
    assert (returns["amount"] > 0).all() and (returns["discount"] == 0).all()


def test_november_december_busier_than_other_months(orders: pd.DataFrame) -> None:
    day = orders["order_ts"].dt.normalize()
    per_day = orders.groupby(day).size()
    holiday = per_day.index.month.isin([11, 12])
    assert per_day[holiday].mean() > 1.4 * per_day[~holiday].mean()


def test_weekends_and_promotion_days_are_busier(orders: pd.DataFrame) -> None:
    per_day = orders.groupby(orders["order_ts"].dt.normalize()).size()
    per_day = per_day.reindex(pd.date_range("2022-01-01", "2024-12-31"), fill_value=0)
    weekday = per_day[per_day.index.day_of_week < 5]
    weekend = per_day[per_day.index.day_of_week >= 5]
    assert weekend.mean() > weekday.mean()
    singles_day = per_day[(per_day.index.month == 11) & (per_day.index.day == 11)]
    rest_of_november = per_day[(per_day.index.month == 11) & (per_day.index.day != 11)]
    assert singles_day.mean() > 2 * rest_of_november.mean()


def test_customers_are_acquired_throughout_a_growing_period(orders: pd.DataFrame) -> None:
    first_year = orders.groupby("customer_id")["order_ts"].min().dt.year.value_counts()
    assert first_year[2022] > 0.15 * N_CUSTOMERS
    assert first_year[2022] < first_year[2023] < first_year[2024]


def test_orders_per_customer_are_heterogeneous_and_average_five_to_seven(
    orders: pd.DataFrame,
) -> None:
    per_customer = orders.groupby("customer_id").size()
    assert 4.5 < per_customer.mean() < 7.5
    assert 0.15 < (per_customer == 1).mean() < 0.5
    assert per_customer.quantile(0.95) > 3 * per_customer.median()


def test_some_customers_stop_buying(orders: pd.DataFrame) -> None:
    last_order = orders.groupby("customer_id")["order_ts"].max()
    inactive = (last_order < PERIOD_END - pd.Timedelta(days=180)).mean()
    assert 0.3 < inactive < 0.6


def test_past_frequency_predicts_future_orders(orders: pd.DataFrame) -> None:
    as_of = pd.Timestamp("2024-01-01")
    past = orders[orders["order_ts"] < as_of].groupby("customer_id").size()
    future = orders[orders["order_ts"] >= as_of].groupby("customer_id").size()
    future = future.reindex(past.index, fill_value=0)
    assert future[past >= 5].mean() > 2 * future[past == 1].mean()


def test_replenishers_reorder_on_a_regular_cycle(orders: pd.DataFrame) -> None:
    gaps = orders.groupby("customer_id")["order_ts"].diff().dt.total_seconds() / 86_400
    frame = orders.assign(gap=gaps).dropna(subset=["gap"])
    stats = frame.groupby("customer_id")["gap"].agg(["mean", "std", "size"])
    regular = stats[(stats["size"] >= 6) & (stats["std"] < 0.3 * stats["mean"])]
    # Poisson buyers have gap sd ~ mean, so a tight cycle marks a replenisher.
    assert 0.05 * N_CUSTOMERS < len(regular) < 0.2 * N_CUSTOMERS
    assert regular["mean"].between(15, 55).mean() > 0.9


def test_customers_have_a_preferred_channel_and_categories(shop: pd.DataFrame) -> None:
    completed = shop[shop["status"] == "completed"]
    assert set(completed["channel"]) == {"web", "app", "store"}
    assert 6 <= completed["category"].nunique() <= 10
    busy = completed.groupby("customer_id").filter(lambda lines: len(lines) >= 10)
    top_channel_share = busy.groupby("customer_id")["channel"].agg(
        lambda channel: channel.value_counts(normalize=True).iloc[0]
    )
    assert top_channel_share.median() > 0.65
    price = completed.groupby("category")["amount"].median()
    assert price.max() > 5 * price.min()


def test_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="n_customers"):
        generate_orders(0, SEED)
    with pytest.raises(ValueError, match="after start"):
        generate_orders(10, SEED, start="2024-01-01", end="2023-01-01")


def test_write_shop_is_atomic_and_writes_summary(tmp_path, shop: pd.DataFrame) -> None:
    out_dir = tmp_path / "shop"
    summary = write_shop(out_dir, N_CUSTOMERS, SEED)
    assert sorted(p.name for p in out_dir.iterdir()) == ["orders.parquet", "shop.json"]
    written = pd.read_parquet(out_dir / "orders.parquet")
    pd.testing.assert_frame_equal(written, shop, check_dtype=False)
    assert json.loads((out_dir / "shop.json").read_text()) == summary
    assert summary["parameters"] == {
        "n_customers": N_CUSTOMERS, "seed": SEED, "start": "2022-01-01", "end": "2024-12-31",
    }
    assert summary["customers"] == N_CUSTOMERS
    assert summary["orders"] == shop.loc[shop["status"] == "completed", "order_id"].nunique()
    assert summary["rows"] == len(shop)
    assert summary["returns"] == (shop["status"] == "returned").sum()
    assert 0.3 * N_CUSTOMERS < summary["churned_customers"] < 0.7 * N_CUSTOMERS
    assert 0.1 * N_CUSTOMERS < summary["replenishers"] < 0.2 * N_CUSTOMERS
    assert 0.15 * N_CUSTOMERS < summary["coupon_users"] < 0.25 * N_CUSTOMERS
    assert summary["date_range"]["first_order_ts"] == shop["order_ts"].min().isoformat()


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_shop(tmp_path, monkeypatch) -> None:
    write_shop(tmp_path, 200, SEED)
    before = (tmp_path / "orders.parquet").read_bytes()

    def broken_chunks(*args, **kwargs):
        yield from ()
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "iter_shop_chunks", broken_chunks)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shop(tmp_path, 200, SEED + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet", "shop.json"]
    assert (tmp_path / "orders.parquet").read_bytes() == before


def test_chunked_generation_keeps_customers_whole_and_order_ids_unique(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", 700)
    chunked = generate_orders(2_000, SEED)
    assert chunked["customer_id"].nunique() == 2_000
    assert chunked["customer_id"].is_monotonic_increasing
    completed = chunked[chunked["status"] == "completed"]
    per_order = completed.groupby("order_id")["customer_id"].nunique()
    assert (per_order == 1).all()
    summary = write_shop(tmp_path, 2_000, SEED)
    written = pd.read_parquet(tmp_path / "orders.parquet")
    pd.testing.assert_frame_equal(written, chunked, check_dtype=False)
    assert summary["orders"] == len(per_order)
