"""Specification of the synthetic shop: schema, reproducibility, realism and the files it writes."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import features.synthetic as synthetic
from features.intake import read_orders
from features.synthetic import (
    CUSTOMER_COLUMNS, ORDER_COLUMNS, SHAPES, ShopShape, UnknownShapeError, generate_orders,
    write_shop,
)

N_CUSTOMERS = 3_000
SEED = 7
PERIOD_END = pd.Timestamp("2025-01-01")  # exclusive: the default end is 2024-12-31 inclusive
SHOP_FILES = ["customers.parquet", "orders.parquet", "shop.json"]


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
    assert sorted(p.name for p in out_dir.iterdir()) == SHOP_FILES
    written = pd.read_parquet(out_dir / "orders.parquet")
    pd.testing.assert_frame_equal(written, shop, check_dtype=False)
    assert json.loads((out_dir / "shop.json").read_text()) == summary
    assert summary["parameters"] == {
        "n_customers": N_CUSTOMERS, "seed": SEED, "start": "2022-01-01", "end": "2024-12-31",
    }
    assert summary["customers"] == N_CUSTOMERS
    assert summary["never_bought"] == round(synthetic.NEVER_BUYER_SHARE * N_CUSTOMERS)
    assert summary["registered"] == N_CUSTOMERS + summary["never_bought"]
    assert pq.read_metadata(out_dir / "customers.parquet").num_rows == summary["registered"]
    assert summary["orders"] == shop.loc[shop["status"] == "completed", "order_id"].nunique()
    assert summary["rows"] == len(shop)
    assert summary["returns"] == (shop["status"] == "returned").sum()
    assert 0.3 * N_CUSTOMERS < summary["churned_customers"] < 0.7 * N_CUSTOMERS
    assert 0.1 * N_CUSTOMERS < summary["replenishers"] < 0.2 * N_CUSTOMERS
    assert 0.15 * N_CUSTOMERS < summary["coupon_users"] < 0.25 * N_CUSTOMERS
    assert summary["date_range"]["first_order_ts"] == shop["order_ts"].min().isoformat()


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_shop(tmp_path, monkeypatch) -> None:
    write_shop(tmp_path, 200, SEED)
    before = {name: (tmp_path / name).read_bytes() for name in SHOP_FILES}

    def broken_chunks(*args, **kwargs):
        yield from ()
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "simulate_shop", broken_chunks)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shop(tmp_path, 200, SEED + 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == SHOP_FILES
    assert {name: (tmp_path / name).read_bytes() for name in SHOP_FILES} == before


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
    customers = pd.read_parquet(tmp_path / "customers.parquet")
    assert customers["customer_id"].tolist() == [f"{i:07d}" for i in range(2_500)]
    first_order = completed.groupby("customer_id")["order_ts"].min()
    buyers = customers.set_index("customer_id").loc[first_order.index]
    assert (buyers["signup_ts"] <= first_order).all()


# The registered customers (customers.parquet).

REGISTERED_SHOP = 5_000


@pytest.fixture(scope="module")
def registered_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("registered")
    write_shop(folder, REGISTERED_SHOP, SEED)
    return folder


@pytest.fixture(scope="module")
def registered_orders(registered_shop: Path) -> pd.DataFrame:
    return pd.read_parquet(registered_shop / "orders.parquet")


@pytest.fixture(scope="module")
def customers(registered_shop: Path, registered_orders: pd.DataFrame) -> pd.DataFrame:
    """customers.parquet plus each customer's completed orders and first order time."""
    customers = pd.read_parquet(registered_shop / "customers.parquet")
    completed = registered_orders[registered_orders["status"] == "completed"]
    per_customer = completed.drop_duplicates("order_id").groupby("customer_id")["order_ts"]
    return customers.assign(
        orders=customers["customer_id"].map(per_customer.size()).fillna(0).astype(int),
        first_order_ts=customers["customer_id"].map(per_customer.min()),
    )


@pytest.fixture(scope="module")
def buyers(customers: pd.DataFrame) -> pd.DataFrame:
    return customers[customers["orders"] > 0]


def test_customers_table_has_the_documented_columns_and_types(registered_shop: Path) -> None:
    schema = pq.read_schema(registered_shop / "customers.parquet")
    assert tuple(schema.names) == CUSTOMER_COLUMNS
    types = {field.name: str(field.type) for field in schema}
    assert types == {
        "customer_id": "string", "signup_ts": "timestamp[us]", "region": "string",
        "gender": "string", "age": "int64", "acquisition_channel": "string",
        "membership_level": "string",
    }
    customers = pd.read_parquet(registered_shop / "customers.parquet")
    assert customers["customer_id"].str.fullmatch(r"\d{7}").all()
    assert customers["customer_id"].is_unique and customers["customer_id"].is_monotonic_increasing
    assert not customers.drop(columns="age").isna().any().any()
    assert set(customers["region"]) == {"North", "East", "South", "West", "Central"}
    assert set(customers["gender"]) == {"F", "M", "U"}
    assert set(customers["acquisition_channel"]) == {"search", "social", "referral", "store", "app"}
    assert set(customers["membership_level"]) == {"basic", "silver", "gold"}
    assert customers["age"].dropna().between(18, 75).all()
    assert 0.03 < customers["age"].isna().mean() < 0.07


def test_every_buyer_is_registered_and_never_buyers_follow_without_orders(
    customers: pd.DataFrame, registered_orders: pd.DataFrame
) -> None:
    assert set(registered_orders["customer_id"]) <= set(customers["customer_id"])
    buyer_ids = [f"{i:07d}" for i in range(REGISTERED_SHOP)]
    assert customers["customer_id"].iloc[:REGISTERED_SHOP].tolist() == buyer_ids
    assert (customers["orders"].iloc[:REGISTERED_SHOP] > 0).all()
    never_bought = customers.iloc[REGISTERED_SHOP:]
    assert (never_bought["orders"] == 0).all()
    assert 0.2 <= len(never_bought) / REGISTERED_SHOP <= 0.3


def test_buyers_sign_up_at_or_before_their_first_order(buyers: pd.DataFrame) -> None:
    delay_days = (buyers["first_order_ts"] - buyers["signup_ts"]).dt.total_seconds() / 86_400
    assert (delay_days >= 0).all()
    assert (buyers["signup_ts"] >= pd.Timestamp("2022-01-01")).all()
    at_checkout = delay_days < 1 / 24
    assert 0.45 < at_checkout.mean() < 0.65
    checkout_share = at_checkout.groupby(buyers["acquisition_channel"]).mean()
    assert checkout_share["store"] > 0.7 > 0.4 > checkout_share["social"]
    waited = delay_days[~at_checkout].groupby(buyers["acquisition_channel"]).mean()
    assert 10 < delay_days[~at_checkout].mean() < 25
    assert waited["social"] > 1.5 * waited["store"]


def test_never_buyers_sign_up_throughout_a_growing_period_some_of_them_recently(
    customers: pd.DataFrame,
) -> None:
    signup = customers["signup_ts"].iloc[REGISTERED_SHOP:]
    assert signup.min() >= pd.Timestamp("2022-01-01") and signup.max() < PERIOD_END
    per_year = signup.dt.year.value_counts()
    assert per_year[2022] < per_year[2023] < per_year[2024]
    assert (signup >= PERIOD_END - pd.Timedelta(days=7)).sum() > 0


def test_never_buyers_come_through_other_channels_than_buyers(
    customers: pd.DataFrame, buyers: pd.DataFrame
) -> None:
    never_bought = customers[customers["orders"] == 0]
    buyer_share = buyers["acquisition_channel"].value_counts(normalize=True)
    never_share = never_bought["acquisition_channel"].value_counts(normalize=True)
    assert never_share["social"] > buyer_share["social"] + 0.1
    assert never_share["store"] < buyer_share["store"]


def test_same_seed_gives_identical_customers(tmp_path, registered_shop: Path) -> None:
    write_shop(tmp_path / "again", REGISTERED_SHOP, SEED)
    first = pd.read_parquet(registered_shop / "customers.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "customers.parquet"), first)
    write_shop(tmp_path / "other", REGISTERED_SHOP, SEED + 1)
    other = pd.read_parquet(tmp_path / "other" / "customers.parquet")
    assert not other["signup_ts"].equals(first["signup_ts"])


def _orders_fingerprint(orders: pd.DataFrame) -> tuple[int, float, str]:
    rows = (
        orders["customer_id"] + "|" + orders["order_id"] + "|"
        + orders["order_ts"].dt.strftime("%Y-%m-%dT%H:%M:%S") + "|"
        + orders["amount"].map("{:.2f}".format) + "|" + orders["quantity"].astype(str) + "|"
        + orders["category"] + "|" + orders["product_id"] + "|"
        + orders["discount"].map("{:.2f}".format) + "|" + orders["channel"] + "|"
        + orders["status"]
    )
    digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return len(orders), round(float(orders["amount"].sum()), 2), digest[:16]


# Recorded with the generator before it wrote customers.parquet: the orders must not move.
@pytest.mark.parametrize(("chunk_customers", "expected"), [
    (100_000, (14_501, 716_077.11, "997099cea856438c")),
    (400, (14_900, 802_241.57, "e16890786540fb62")),
])
def test_orders_are_unchanged_by_the_customers_table(
    tmp_path, monkeypatch, chunk_customers: int, expected: tuple[int, float, str]
) -> None:
    monkeypatch.setattr(synthetic, "CHUNK_CUSTOMERS", chunk_customers)
    write_shop(tmp_path, 1_500, 11)
    assert _orders_fingerprint(pd.read_parquet(tmp_path / "orders.parquet")) == expected


def test_membership_level_predicts_retention(buyers: pd.DataFrame) -> None:
    level_share = buyers["membership_level"].value_counts(normalize=True)
    assert 0.5 < level_share["basic"] < 0.7
    assert 0.2 < level_share["silver"] < 0.35
    assert 0.08 < level_share["gold"] < 0.18
    repeat_share = (buyers["orders"] >= 2).groupby(buyers["membership_level"]).mean()
    assert repeat_share["gold"] > repeat_share["silver"] > repeat_share["basic"]
    assert 1 - repeat_share["gold"] < 0.5 * (1 - repeat_share["basic"])
    mean_orders = buyers.groupby("membership_level")["orders"].mean()
    assert mean_orders["gold"] > 1.8 * mean_orders["basic"]


def test_region_and_gender_are_noise(customers: pd.DataFrame, buyers: pd.DataFrame) -> None:
    repeat = buyers["orders"] >= 2
    for column, tolerance in (("region", 0.05), ("gender", 0.08)):
        by_value = repeat.groupby(buyers[column]).mean()
        assert (by_value - repeat.mean()).abs().max() < tolerance, column
        never_bought = customers.loc[customers["orders"] == 0, column]
        share_gap = never_bought.value_counts(normalize=True) - buyers[column].value_counts(
            normalize=True
        )
        assert share_gap.abs().max() < 0.05, column


def test_age_is_a_little_higher_for_frequent_buyers(buyers: pd.DataFrame) -> None:
    known = buyers.dropna(subset=["age"])
    correlation = np.corrcoef(known["age"], np.log(known["orders"]))[0, 1]
    assert 0.05 < correlation < 0.3


# Shapes: the same simulation with other knobs (SHAPES), e.g. a gift retailer's invoices.

SHAPE_SHOP = 2_000
REPO = Path(__file__).resolve().parents[2]
LIFETAG = [str(Path(sys.executable).with_name("lifetag"))]


def _q4_over_summer(lines: pd.DataFrame) -> float:
    """Mean monthly orders in October-December over those in June-August."""
    orders = lines[lines["status"] == "completed"].drop_duplicates("order_id")
    per_month = orders.groupby(orders["order_ts"].dt.to_period("M")).size()
    month = per_month.index.month
    return per_month[month >= 10].mean() / per_month[month.isin([6, 7, 8])].mean()


@pytest.fixture(scope="module")
def gift() -> pd.DataFrame:
    return generate_orders(SHAPE_SHOP, SEED, shape="gift")


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_each_shape_gives_the_same_shop_for_a_seed(shape: str) -> None:
    first = generate_orders(300, SEED, shape=shape)
    pd.testing.assert_frame_equal(generate_orders(300, SEED, shape=SHAPES[shape]), first)
    other = generate_orders(300, SEED + 1, shape=shape)
    assert len(other) != len(first) or not other["amount"].equals(first["amount"])


def test_default_shape_is_the_original_shop(shop: pd.DataFrame) -> None:
    """The default knobs reproduce the shop the pinned figures above were recorded with."""
    pd.testing.assert_frame_equal(generate_orders(N_CUSTOMERS, SEED, shape="default"), shop)
    pd.testing.assert_frame_equal(generate_orders(N_CUSTOMERS, SEED, shape=ShopShape()), shop)
    assert set(shop["status"]) == {"completed", "returned"}


def test_shapes_write_their_customers_the_same_way_for_a_seed(tmp_path) -> None:
    for folder in ("a", "b"):
        write_shop(tmp_path / folder, 300, SEED, shape="wholesale")
    for name in ("orders.parquet", "customers.parquet"):
        pd.testing.assert_frame_equal(
            pd.read_parquet(tmp_path / "a" / name), pd.read_parquet(tmp_path / "b" / name)
        )


def test_gift_shop_peaks_in_october_to_december(gift: pd.DataFrame) -> None:
    assert _q4_over_summer(gift) >= 3


def test_gift_invoices_have_many_lines_with_a_long_tail(gift: pd.DataFrame) -> None:
    lines_per_invoice = gift[gift["status"] == "completed"].groupby("order_id").size()
    assert lines_per_invoice.median() >= 8
    assert lines_per_invoice.max() >= 100 and lines_per_invoice.quantile(0.1) <= 5


def test_gift_cancellations_take_back_part_of_an_earlier_invoice_of_the_same_customer(
    gift: pd.DataFrame,
) -> None:
    assert (gift["status"] != "returned").all()  # a gift shop cancels instead
    cancels = gift[gift["status"] == "cancelled"]
    assert cancels["order_id"].str.fullmatch(r"CO\d{9}").all()
    assert (cancels["amount"] < 0).all() and (cancels["quantity"] < 0).all()
    sold = gift[gift["status"] == "completed"]
    invoices = sold.drop_duplicates("order_id").set_index("order_id")
    original = cancels["order_id"].str.removeprefix("C")
    assert original.isin(invoices.index).all()
    assert (cancels["customer_id"].values == invoices.loc[original, "customer_id"].values).all()
    delay = cancels["order_ts"].values - invoices.loc[original, "order_ts"].values
    assert (delay > np.timedelta64(0)).all() and np.median(delay) < np.timedelta64(3, "D")
    share = original.nunique() / len(invoices)
    assert 0.015 < share < 0.04
    taken = cancels.assign(order_id=original).groupby(["order_id", "product_id"])[
        ["quantity", "amount"]
    ].sum()
    bought = sold.groupby(["order_id", "product_id"])[["quantity", "amount"]].sum().loc[taken.index]
    assert (-taken["quantity"] <= bought["quantity"]).all()
    assert (-taken["amount"] <= bought["amount"] + 1e-9).all()
    lines_taken = cancels.groupby("order_id").size().rename(lambda c: c[1:])
    whole = lines_taken == sold.groupby("order_id").size().loc[lines_taken.index]
    assert 0.1 < whole.mean() < 0.9  # some invoices cancelled whole, some in part


def test_gift_revenue_is_concentrated_in_a_few_wholesale_buyers(gift: pd.DataFrame) -> None:
    sold = gift[gift["status"] == "completed"]
    spend = sold.groupby("customer_id")["amount"].sum().sort_values(ascending=False)
    top = spend.iloc[: len(spend) // 100]
    assert top.sum() / spend.sum() > 0.3
    top_lines = sold[sold["customer_id"].isin(top.index)]
    assert top_lines["quantity"].median() >= 12 and top_lines["quantity"].max() >= 100
    assert sold["quantity"].median() < 12  # ordinary buyers buy a few or a dozen


def test_flat_shop_has_no_season_and_single_line_orders() -> None:
    flat = generate_orders(SHAPE_SHOP, SEED, shape="flat")
    assert _q4_over_summer(flat) < 1.5
    assert (flat[flat["status"] == "completed"].groupby("order_id").size() == 1).mean() > 0.8


def test_wholesale_shop_has_business_accounts_reordering_on_a_cycle() -> None:
    shop = generate_orders(SHAPE_SHOP, SEED, shape="wholesale")
    sold = shop[shop["status"] == "completed"]
    bulk_buyers = sold.groupby("customer_id")["quantity"].median() >= 12
    assert 0.03 < bulk_buyers.mean() < 0.07
    orders = sold[sold["customer_id"].isin(bulk_buyers[bulk_buyers].index)].drop_duplicates(
        "order_id"
    )
    gaps = orders.groupby("customer_id")["order_ts"].diff().dt.total_seconds() / 86_400
    stats = gaps.groupby(orders["customer_id"]).agg(["mean", "std", "count"])
    regular = stats[stats["count"] >= 5]
    assert len(regular) >= 10 and (regular["std"] < 0.3 * regular["mean"]).mean() > 0.8


def test_fast_fashion_shop_returns_about_a_fifth_of_its_lines() -> None:
    shop = generate_orders(SHAPE_SHOP, SEED, shape="fast_fashion")
    returned = (shop["status"] == "returned").sum() / (shop["status"] == "completed").sum()
    assert 0.14 < returned < 0.25


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_passes_lifetag_intake(tmp_path, config, shape: str) -> None:
    write_shop(tmp_path, 300, SEED, shape=shape)
    orders, report = read_orders(tmp_path / "orders.parquet", config)
    assert report.rows_quarantined == 0 and len(orders) == report.rows_read > 0


def test_shop_json_records_the_shape_and_its_knobs(tmp_path) -> None:
    summary = write_shop(tmp_path, 300, SEED, shape="gift")
    assert json.loads((tmp_path / "shop.json").read_text())["shape"] == summary["shape"]
    assert summary["shape"]["name"] == "gift"
    assert summary["shape"] == json.loads(json.dumps(SHAPES["gift"].as_dict()))
    assert summary["shape"]["lines_per_order"] == {"median": 13.0, "sigma": 0.95, "most": 400}
    written = pd.read_parquet(tmp_path / "orders.parquet")
    cancels = written[written["status"] == "cancelled"]
    assert summary["cancellations"] == len(cancels) > 0
    assert summary["cancelled_orders"] == cancels["order_id"].nunique()
    assert summary["rows"] == len(written)
    assert summary["lines"] == (written["status"] == "completed").sum()


def test_a_custom_shape_changes_only_its_knobs() -> None:
    no_season = replace(SHAPES["default"], name="calm", q4_demand=(1.0, 1.0, 1.0))
    calm = generate_orders(SHAPE_SHOP, SEED, shape=no_season)
    assert _q4_over_summer(calm) < _q4_over_summer(generate_orders(SHAPE_SHOP, SEED)) - 0.2
    with pytest.raises(ValueError, match="cancel_share"):
        ShopShape(cancel_share=1.5)


def test_unknown_shape_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown shop shape 'giftt'.*default, gift, flat"):
        write_shop(tmp_path, 100, SEED, shape="giftt")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnknownShapeError):
        generate_orders(100, SEED, shape="Gift")


def test_every_shape_is_documented_in_the_module_the_readme_and_the_cli_help() -> None:
    readme = (REPO / "README.md").read_text()
    help_text = subprocess.run([*LIFETAG, "generate", "--help"], capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "400"}).stdout
    for name in SHAPES:
        assert f"\n{name} " in synthetic.__doc__, name
        assert f"| `{name}` |" in readme, name
        assert f"{name} (" in help_text, name


def test_generate_command_takes_a_shape_and_refuses_an_unknown_one(tmp_path) -> None:
    done = subprocess.run(
        [*LIFETAG, "generate", "--n-customers", "300", "--out", str(tmp_path / "gift"),
         "--seed", "3", "--shape", "gift"], capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "gift shape" in done.stdout and "cancellations" in done.stdout
    assert json.loads((tmp_path / "gift" / "shop.json").read_text())["shape"]["name"] == "gift"
    features = subprocess.run(
        [*LIFETAG, "features", "--orders", str(tmp_path / "gift" / "orders.parquet"),
         "--as-of", "2024-10-01", "--out", str(tmp_path / "features.parquet")],
        capture_output=True, text=True,
    )
    assert features.returncode == 0, features.stderr
    assert pd.read_parquet(tmp_path / "features.parquet")["return_count"].sum() > 0

    wrong = subprocess.run(
        [*LIFETAG, "generate", "--n-customers", "300", "--out", str(tmp_path / "x"),
         "--shape", "giftt"], capture_output=True, text=True,
    )
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert "giftt" in wrong.stderr and "fast_fashion" in wrong.stderr
    assert not (tmp_path / "x").exists()
