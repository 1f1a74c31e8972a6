"""Tags from a request's own orders (`POST /score`) equal the nightly batch's row for the same customer,
as_of and model: the point of one intake, one feature definition and one tag function."""
from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from configs.errors import LifetagError
from configs.schema import load_config
from features.intake import read_customers, read_orders
from serving.online import CustomerOrders, OnlineScorer, RequestError, json_rows
from serving.scoring import score
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home

AS_OF = pd.Timestamp("2024-09-01")
NUMBERS = ["churn_risk", "repurchase_prob", "ltv", "value_at_risk", "recency_days", "frequency", "monetary_total",
           "first_purchase_prob", "signup_days"]
LABELS = ["churn_tier", "value_tier", "rfm_segment", "rfm_r", "rfm_f", "rfm_m", "lifecycle_stage", "reasons",
          "high_value_potential", "expected_next_order"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, TrainResult]:
    """A generated shop with its customers table, a model trained on it, and its nightly tags."""
    folder = generated_shop(tmp_path_factory, 1_500, 43, start="2023-01-01", end="2024-12-31")
    home = tmp_path_factory.mktemp("home")
    monkeypatch = module_home(home)
    try:
        config = load_config()
        trained = fit_bundle(folder / "orders.parquet", config, as_of=AS_OF, trials=0,
                             customers=folder / "customers.parquet")
        out = home / "tags.parquet"
        score(folder / "orders.parquet", AS_OF, out, config, bundle=trained.bundle, model_version="7",
              customers=folder / "customers.parquet")
    finally:
        monkeypatch.undo()
    return folder, pd.read_parquet(out), trained


def request_of(ids: list[str], orders: pd.DataFrame, customers: pd.DataFrame) -> list[CustomerOrders]:
    """The customers as a marketing system would send them: their customers-table row and every order line
    (after as_of too: the service must ignore those as the batch does)."""
    by_customer = dict(tuple(orders.groupby("customer_id")))
    rows = customers.set_index("customer_id")
    attributes = [c for c in customers.columns if c not in ("customer_id", "signup_ts")]
    sent = []
    for customer in ids:
        lines = by_customer.get(customer, orders.iloc[:0])
        row = rows.loc[customer] if customer in rows.index else None
        sent.append(CustomerOrders(
            customer_id=customer,
            signup_ts=None if row is None or pd.isna(row["signup_ts"]) else row["signup_ts"].isoformat() + "Z",
            attributes={} if row is None else {a: (None if pd.isna(row[a]) else row[a]) for a in attributes},
            orders=[{k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in line.items()
                     if k != "customer_id"} | {"order_ts": line["order_ts"].isoformat() + "+00:00"}
                    for line in lines.to_dict("records")],
        ))
    return sent


def assert_same_tags(online: dict[str, Any], nightly: pd.Series) -> None:
    """Every column the batch wrote, equal: numbers to 1e-9, everything else exactly."""
    for column, expected in nightly.items():
        got = online[column]
        if expected is None or (isinstance(expected, float) and math.isnan(expected)) or expected is pd.NaT:
            assert got is None, (nightly["customer_id"], column, got)
        elif isinstance(expected, (float, np.floating)):
            assert got == pytest.approx(float(expected), abs=1e-9, rel=0), (nightly["customer_id"], column)
        elif isinstance(expected, (pd.Timestamp, date)):
            assert pd.Timestamp(got) == pd.Timestamp(expected), (nightly["customer_id"], column, got, expected)
        else:
            expected = expected.item() if isinstance(expected, np.generic) else expected
            assert got == expected, (nightly["customer_id"], column, got, expected)


@pytest.mark.slow
def test_score_from_a_customers_own_orders_equals_their_nightly_row(
        shop: tuple[Path, pd.DataFrame, TrainResult]) -> None:
    folder, nightly, trained = shop
    config = load_config()
    orders, _ = read_orders(folder / "orders.parquet", config)
    customers, _ = read_customers(folder / "customers.parquet", config)
    before = orders[orders["order_ts"] < AS_OF]
    returned = before["status"].isin(config.orders.return_statuses)
    per_customer = before.assign(returned=returned).groupby("customer_id").agg(
        order_ids=("order_id", "nunique"), returns=("returned", "sum"))
    one_order = per_customer.index[per_customer["order_ids"] == 1][:40].tolist()
    with_returns = per_customer.index[per_customer["returns"] > 0][:40].tolist()
    registered = nightly.loc[nightly["lifecycle_stage"] == "registered", "customer_id"][:40].tolist()
    rng = np.random.default_rng(5)
    rest = rng.choice(nightly["customer_id"].to_numpy(), size=200, replace=False).tolist()
    ids = list(dict.fromkeys(one_order + with_returns + registered + rest))
    assert len(one_order) >= 20 and len(with_returns) >= 20 and len(registered) >= 20 and len(ids) >= 250

    scorer = OnlineScorer(trained.bundle, "7", config)
    expected = nightly.set_index("customer_id", drop=False)
    for start in range(0, len(ids), 50):  # requests of 50 customers, as a CRM would send them
        batch = ids[start:start + 50]
        rows = json_rows(scorer.score(request_of(batch, orders, customers), AS_OF.date()))
        assert [r["customer_id"] for r in rows] == batch
        for row in rows:
            assert_same_tags(row, expected.loc[row["customer_id"]])
    # A customer alone in a request gets the row they get among others.
    alone = json_rows(scorer.score(request_of(ids[:1], orders, customers), AS_OF.date()))[0]
    assert_same_tags(alone, expected.loc[ids[0]])


@pytest.mark.slow
def test_a_bad_line_in_a_request_is_refused_by_the_intake_rules_in_one_paragraph(
        shop: tuple[Path, pd.DataFrame, TrainResult]) -> None:
    _, _, trained = shop
    config = load_config()
    scorer = OnlineScorer(trained.bundle, "7", config)
    good = {"order_ts": "2024-05-01T10:00:00Z", "amount": 20.0, "order_id": "o1", "status": "completed"}
    for line, words in [({**good, "status": "lost in post"}, "status"),
                        ({**good, "order_ts": "2090-01-01T00:00:00Z"}, "order_ts"),
                        ({**good, "amount": 5e13}, "amount")]:
        with pytest.raises(LifetagError) as refused:
            scorer.score([CustomerOrders(customer_id="c1", orders=[good, line])], AS_OF)
        message = str(refused.value)
        assert "request orders" in message and words in message and "\n" not in message, message
    with pytest.raises(RequestError, match="'c1' appears more than once"):
        scorer.score([CustomerOrders(customer_id="c1"), CustomerOrders(customer_id="c1")], AS_OF)
    with pytest.raises(RequestError, match="'shoe_size' is not declared"):
        scorer.score([CustomerOrders(customer_id="c1", attributes={"shoe_size": 42})], AS_OF)
