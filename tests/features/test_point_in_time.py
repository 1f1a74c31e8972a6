"""Point-in-time correctness: nothing on or after as_of can change the features or the population."""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features
from configs.schema import load_config

AS_OF = datetime(2024, 6, 1)
CONFIG = load_config()
# The season columns (shop-wide, from last year's windows) on; 400 days > a year gives an always-empty ratio.
SEASON = load_config(overrides={"features": {"season": True}})
SEASON_LONG = load_config(overrides={"features": {"season": True}, "horizons": {"ltv_days": 400}})
# Each customer's own last-year windows (features.last_year_days), up to the longest allowed.
LAST_YEAR = load_config(overrides={"features": {"last_year_days": [30, 90, 180, 364]}})
CUSTOMERS = ["001", "002", "0003", "42", "X-9"]
STATUSES = [None, "completed", "returned", "cancelled"]


def _lines(ts_strategy: st.SearchStrategy[datetime], order_prefix: str) -> st.SearchStrategy[list[dict]]:
    line = st.fixed_dictionaries({
        "customer_id": st.sampled_from(CUSTOMERS),
        "order_ts": ts_strategy,
        "amount": st.floats(-50, 500, allow_nan=False).map(lambda x: round(x, 2)),
        "category": st.sampled_from([None, "books", "tea", "toys"]),
        "discount": st.sampled_from([None, 0.0, 2.5]),
        "channel": st.sampled_from([None, "web", "app"]),
        "status": st.sampled_from(STATUSES),
        "order_no": st.integers(0, 30),
    })
    return st.lists(line, max_size=25).map(lambda rows: [_with_order_id(r, order_prefix) for r in rows])


def _with_order_id(row: dict, prefix: str) -> dict:
    # Order ids are unique per (customer, time) so that generated lines never conflict.
    row = dict(row)
    row["order_id"] = f"{prefix}{row.pop('order_no')}-{row['customer_id']}-{row['order_ts']:%Y%m%d%H%M%S}"
    return row


before = st.datetimes(min_value=AS_OF - timedelta(days=800), max_value=AS_OF - timedelta(microseconds=1))
on_or_after = st.datetimes(min_value=AS_OF, max_value=AS_OF + timedelta(days=400))
# Most lines around as_of - 365 days, where the season windows are, and some exactly on their edges.
_YEAR = timedelta(days=365)
_EDGES = [AS_OF - _YEAR + timedelta(days=d) + timedelta(microseconds=u)
          for d in (-365, -90, -30, 0, 30, 90, 180, 364, 365) for u in (-1, 0, 1)]
around_last_year = st.one_of(
    st.datetimes(min_value=AS_OF - _YEAR - timedelta(days=100), max_value=AS_OF - _YEAR + timedelta(days=100)),
    st.sampled_from(_EDGES),
    before,
)


def _frame(rows: list[dict]) -> pd.DataFrame:
    columns = ["customer_id", "order_id", "order_ts", "amount", "category", "discount", "channel", "status"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["order_ts"] = pd.to_datetime(frame["order_ts"])
    return frame


@pytest.mark.parametrize("config", [CONFIG, SEASON, LAST_YEAR], ids=["season off", "season on", "last-year windows"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_lines(before, "H"), future=_lines(on_or_after, "F"))
def test_appending_orders_on_or_after_as_of_never_changes_features(config, history, future):
    past = _frame(history)
    seen = features.build(past, AS_OF, config)
    with_future = features.build(pd.concat([past, _frame(future)], ignore_index=True), AS_OF, config)
    pd.testing.assert_frame_equal(seen, with_future)


@pytest.mark.parametrize("config", [SEASON, SEASON_LONG, LAST_YEAR],
                         ids=["horizons 30 90 365", "horizons 30 90 400", "last-year windows 30 90 180 364"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_lines(around_last_year, "H"), future=_lines(on_or_after, "F"))
def test_last_years_window_columns_never_read_orders_on_or_after_as_of(config, history, future):
    past = _frame(history)
    seen = features.build(past, AS_OF, config)
    with_future = features.build(pd.concat([past, _frame(future)], ignore_index=True), AS_OF, config)
    pd.testing.assert_frame_equal(seen, with_future)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_lines(before, "H"), future=_lines(on_or_after, "F"))
def test_labels_population_is_the_features_population(history, future):
    orders = pd.concat([_frame(history), _frame(future)], ignore_index=True)
    built = features.build(orders, AS_OF, CONFIG)
    labelled = features.labels(orders, AS_OF, 90, CONFIG)
    assert list(built["customer_id"]) == list(labelled["customer_id"])
