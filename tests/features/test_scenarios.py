"""Scenario inputs (`features.scenarios`): categories due for a re-buy, promotion orders, orders since.

Hand-computed values on a tiny history, and the point-in-time property: orders on or after as_of
never change what the scenario tags see at as_of.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.schema import load_config
from features.behaviour import orders_view
from features.engine import connect
from features.scenarios import SCENARIO_FEATURE_DOCS, scenario_features_relation

AS_OF = datetime(2024, 6, 1)
PROMOS = [
    {"name": "spring", "start": "2024-03-01", "end": "2024-03-03"},   # inclusive: to 2024-03-03 23:59:59
    {"name": "may_day", "start": "2024-05-10", "end": "2024-05-10"},
    {"name": "summer", "start": "2024-06-18", "end": "2024-06-18"},   # after as_of: not seen yet
]
CONFIG = load_config(overrides={"scoring": {"promo_periods": PROMOS}})
COLUMNS = ["customer_id", "order_id", "order_ts", "amount", "category", "status"]


def _tea_regulars(days: tuple[str, ...] = ("2024-01-01", "2024-01-11", "2024-01-21")) -> list[tuple]:
    # Ten customers buying tea on `days`: by default 20 gaps of 10 days, so the shop learns tea's
    # re-buy interval (a category needs at least 20 gaps) as 10 days.
    return [(f"t{n:02d}", f"t{n:02d}-{k}", f"{day} 09:00", 10.0, "tea", None)
            for n in range(10) for k, day in enumerate(days)]


# (customer_id, order_id, order_ts, amount, category, status)
HISTORY = _tea_regulars() + [
    # A: books (never learned: too few gaps), books in the spring promotion, then tea 12 days before as_of.
    ("A", "a1", "2024-01-01 10:00", 20.0, "books", None),
    ("A", "a2", "2024-03-02 10:00", 20.0, "books", None),
    ("A", "a3", "2024-05-20 00:00", 5.0, "tea", None),
    # B: tea, then tea on the May promotion day and nothing since: a promotion sleeper.
    ("B", "b1", "2024-02-01 10:00", 5.0, "tea", None),
    ("B", "b2", "2024-05-10 12:00", 5.0, "tea", None),
    # C: tea 3 days ago, never in a promotion.
    ("C", "c1", "2024-05-29 10:00", 5.0, "tea", None),
    # D: tea in February; a returned tea line later (in a promotion and 1 day ago) is not a purchase.
    ("D", "d1", "2024-02-20 10:00", 5.0, "tea", None),
    ("D", "d2", "2024-03-02 10:00", -5.0, "tea", "returned"),
    ("D", "d3", "2024-05-31 10:00", 5.0, "tea", "returned"),
    # E: the last second of the May promotion, then the first second after it.
    ("E", "e1", "2024-05-10 23:59:59", 5.0, "tea", None),
    ("E", "e2", "2024-05-11 00:00:00", 5.0, "books", None),
    # G: one order of two lines (tea + books) in the spring promotion: one promotion order.
    ("G", "g1", "2024-03-02 10:00", 5.0, "tea", None),
    ("G", "g1", "2024-03-02 10:00", 7.0, "books", None),
    # H: tea exactly 10 days before as_of (due); I: one second later (not yet due).
    ("H", "h1", "2024-05-22 00:00:00", 5.0, "tea", None),
    ("I", "i1", "2024-05-22 00:00:01", 5.0, "tea", None),
    # F: only orders on or after as_of: not a customer yet at as_of.
    ("F", "f1", "2024-06-01 00:00:00", 5.0, "tea", None),
]

# customer_id -> (categories_due, promo_orders, orders_since_promo); None = never bought in a promotion.
EXPECTED = {
    "A": (1, 1, 1),
    "B": (1, 1, 0),
    "C": (0, 0, None),
    "D": (1, 0, None),
    "E": (1, 1, 1),
    "G": (1, 1, 0),
    "H": (1, 0, None),
    "I": (0, 0, None),
    **{f"t{n:02d}": (1, 0, None) for n in range(10)},
}


def _frame(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["order_ts"] = pd.to_datetime(frame["order_ts"], format="mixed")
    return frame


def _scenario_features(orders: pd.DataFrame, as_of=AS_OF, config=CONFIG) -> pd.DataFrame:
    con = connect(config.engine)
    try:
        view = orders_view(con, orders)
        return scenario_features_relation(con, view, as_of, config).df()
    finally:
        con.close()


def _as_dict(frame: pd.DataFrame) -> dict[str, tuple]:
    return {
        row.customer_id: (int(row.categories_due), int(row.promo_orders),
                          None if pd.isna(row.orders_since_promo) else int(row.orders_since_promo))
        for row in frame.itertuples(index=False)
    }


def test_scenario_inputs_match_hand_computed_values_on_a_tiny_history():
    got = _scenario_features(_frame(HISTORY))

    assert list(got.columns) == ["customer_id", *SCENARIO_FEATURE_DOCS]
    assert list(got["customer_id"]) == sorted(EXPECTED), "one row per customer with a purchase before as_of, in id order"
    assert _as_dict(got) == EXPECTED


def test_a_category_is_due_only_once_its_rebuy_interval_is_learned_from_enough_customers():
    # Without the ten regulars tea has a single gap (B's), far below the 20 needed: nothing is due.
    few = _frame([row for row in HISTORY if not row[0].startswith("t")])
    assert _scenario_features(few)["categories_due"].eq(0).all()


def test_without_promotion_periods_nobody_has_promotion_orders():
    no_promos = load_config(overrides={"scoring": {"promo_periods": []}})
    got = _scenario_features(_frame(HISTORY), config=no_promos)

    assert got["promo_orders"].eq(0).all()
    assert got["orders_since_promo"].isna().all()
    assert _as_dict(got)["A"][0] == 1, "categories_due does not depend on promotions"


# --- point in time ------------------------------------------------------------------------------

CUSTOMERS = ["A", "B", "007", "0007"]
CATEGORIES = [None, "tea", "books"]
before = st.datetimes(min_value=AS_OF - timedelta(days=400), max_value=AS_OF - timedelta(microseconds=1))
on_or_after = st.datetimes(min_value=AS_OF, max_value=AS_OF + timedelta(days=200))


def _lines(ts: st.SearchStrategy[datetime], prefix: str) -> st.SearchStrategy[list[tuple]]:
    line = st.tuples(
        st.sampled_from(CUSTOMERS), st.integers(0, 20), ts,
        st.floats(-20, 200, allow_nan=False).map(lambda x: round(x, 2)),
        st.sampled_from(CATEGORIES), st.sampled_from([None, "returned", "cancelled", "completed"]),
    )
    # Order ids are unique per (customer, time), so generated lines never disagree about an order.
    return st.lists(line, max_size=25).map(lambda rows: [
        (c, f"{prefix}{n}-{c}-{t:%Y%m%d%H%M%S%f}", t, a, cat, s) for c, n, t, a, cat, s in rows
    ])


# Gaps of 10 and 30 days, ten each: tea's re-buy interval is their median, 20 days, and any one
# more gap moves it to 10 or 30, which the two sentinels show: S (last tea 25 days ago) is due at
# 20 or 10 but not at 30; S2 (15 days ago) is due at 10 only.
BALANCED = _tea_regulars(("2024-01-01", "2024-01-11", "2024-02-10")) + [
    ("S", "s1", AS_OF - timedelta(days=25), 5.0, "tea", None),
    ("S2", "s2", AS_OF - timedelta(days=15), 5.0, "tea", None),
]


def test_the_sentinels_see_the_balanced_interval():
    got = _as_dict(_scenario_features(_frame(BALANCED)))
    assert (got["S"][0], got["S2"][0]) == (1, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_lines(before, "H"), future=_lines(on_or_after, "F"))
def test_appending_orders_on_or_after_as_of_never_changes_the_scenario_inputs(history, future):
    # Future tea purchases would move tea's learned re-buy interval if they leaked in (see BALANCED);
    # the promotion on 2024-06-18 lies after as_of.
    past = _frame(BALANCED + history)
    seen = _scenario_features(past)
    with_future = _scenario_features(pd.concat([past, _frame(future)], ignore_index=True))

    pd.testing.assert_frame_equal(seen, with_future)
