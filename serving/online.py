"""Tags from what a request sends: a customer's orders (and customers-table row) through the batch's own
intake rules, feature SQL, bundle and tag function, in milliseconds.

`POST /score` of the service calls `OnlineScorer.score`; the request models below are its typed body
(BentoML turns them into the OpenAPI schema and answers a body that breaks them with a 422 naming the
field). Nothing here knows about HTTP.
"""
from __future__ import annotations

import math
import os
import threading
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from configs.errors import LifetagError

if TYPE_CHECKING:  # the engine, pandas and the models load only where requests are tagged, not in
    # BentoML's supervising process, which imports the service module to read its definition
    import pandas as pd
    import pyarrow as pa

    from configs.schema import Config
    from serving.bundle import Bundle

__all__ = ["MAX_CUSTOMERS", "MAX_ORDER_LINES", "CustomerOrders", "OrderLine", "OnlineScorer", "RequestError",
           "json_ready", "json_rows", "request_tables"]

# Customers per /score call and order lines per customer: a request of this size is tagged in well
# under a second; a whole shop belongs in the nightly `lifetag score`.
MAX_CUSTOMERS = int(os.environ.get("LIFETAG_MAX_CUSTOMERS", "100"))
MAX_ORDER_LINES = int(os.environ.get("LIFETAG_MAX_ORDER_LINES", "5000"))
_ID = Field(min_length=1, max_length=256)


class RequestError(LifetagError, ValueError):
    """A request the service cannot tag as sent (answered with a 422 and this one paragraph)."""


class OrderLine(BaseModel):
    """One order line, in the canonical fields of the orders table (docs/features.md); the lines of one
    order share its order_id."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    order_ts: datetime = Field(description="order time; ISO 8601, UTC unless it carries an offset")
    amount: float = Field(description="money paid for the line after discounts (negative = money back)")
    order_id: str | None = Field(None, max_length=256)
    quantity: float | None = None
    category: str | None = Field(None, max_length=256)
    product_id: str | None = Field(None, max_length=256)
    discount: float | None = None
    channel: str | None = Field(None, max_length=256)
    status: str | None = Field(None, max_length=64, description="a purchase or return status of the config")


class CustomerOrders(BaseModel):
    """A customer as the service scores them: the customers-table row and their order lines."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    customer_id: str = _ID
    signup_ts: datetime | None = None
    attributes: dict[str, str | float | None] = Field(
        default_factory=dict, description="customers-table attributes declared in the config (customers.attributes)")
    orders: list[OrderLine] = Field(default_factory=list, max_length=MAX_ORDER_LINES)


def _utc(moment: datetime | None) -> datetime | None:
    """UTC wall time without a zone, as the engine reads every timestamp."""
    if moment is None or moment.tzinfo is None:
        return moment
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


def request_tables(customers: list[CustomerOrders], config: Config) -> tuple[pa.Table, pa.Table]:
    """The request as the intake's canonical orders and customers tables (one customers row each)."""
    import pyarrow as pa

    from features.intake import ORDER_FIELDS

    ids = [c.customer_id for c in customers]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
        raise RequestError(f"customers: customer_id {', '.join(map(repr, repeated[:5]))} appears more than once; "
                           "send each customer once, with all of their order lines.")
    declared = config.customers.attributes
    for customer in customers:
        unknown = sorted(set(customer.attributes) - set(declared))
        if unknown:
            raise RequestError(
                f"customers[{ids.index(customer.customer_id)}].attributes: {', '.join(map(repr, unknown))} "
                f"{'is' if len(unknown) == 1 else 'are'} not declared in the service's config (customers.attributes: "
                f"{', '.join(declared) or 'none'}); send only declared attributes.")
    lines = [(c.customer_id, line) for c in customers for line in c.orders]
    text = pa.string()
    arrow_types = {"VARCHAR": pa.string(), "TIMESTAMP": pa.timestamp("us"), "DOUBLE": pa.float64()}
    orders = pa.table({
        "customer_id": pa.array([c for c, _ in lines], text),
        **{name: pa.array([getattr(line, name) if name != "order_ts" else _utc(line.order_ts) for _, line in lines],
                          arrow_types[spec.sql_type])
           for name, spec in ORDER_FIELDS.items() if name != "customer_id"},
    })
    table = {
        "customer_id": pa.array(ids, text),
        "signup_ts": pa.array([_utc(c.signup_ts) for c in customers], pa.timestamp("us")),
    }
    for name in declared:
        # As text, like a CSV column: the intake checks numbers by the rules a file meets.
        table[name] = pa.array([None if c.attributes.get(name) is None else _attribute_text(c.attributes[name])
                                for c in customers], text)
    return orders, pa.table(table)


def _attribute_text(value: str | float) -> str:
    # A whole number prints without '.0', as a file's integer column would.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def json_ready(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null (JSON has neither); timestamps and dates become ISO text."""
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out


def json_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Tag rows as JSON-ready dicts (json_ready), through Arrow as the snapshot's rows are."""
    from serving.tags import arrow_table

    return [json_ready(row) for row in arrow_table(frame).to_pylist()]


class OnlineScorer:
    """Tags customers from their own orders with one bundle and config.

    One in-memory DuckDB database, file and network access off and settings locked from the start;
    each call works in a cursor of its own (a fresh connection costs ~10 ms, a cursor microseconds),
    whose views no other call sees.
    """

    def __init__(self, bundle: Bundle, version: str, config: Config) -> None:
        from features.engine import connect, lock_external_access

        self.bundle, self.version, self.config = bundle, version, config
        self.unavailable = _why_unavailable(bundle, config)
        self.intervals = bundle.rebuy_days or {}
        # One thread per query: a request's few rows gain nothing from parallel plans, and the server
        # already runs requests side by side.
        self._database = connect(config.engine.model_copy(update={"threads": 1}))
        _without_optimizers(self._database)
        lock_external_access(self._database, [])
        self._database.execute("SET lock_configuration = true")
        self._lock = threading.Lock()

    def score(self, customers: list[CustomerOrders], as_of: str | date | datetime | pd.Timestamp) -> pd.DataFrame:
        """One row of tags per customer, in the order sent: the columns of `lifetag score`'s output. A customer
        who signed up on or after as_of is not a customer yet and gets no row, as in the batch."""
        import numpy as np
        import pandas as pd

        from features.behaviour import as_timestamp
        from features.intake import open_tables
        from serving.scoring import tag_customers

        if self.unavailable:
            raise RequestError(self.unavailable)
        orders, table = request_tables(customers, self.config)
        as_of_ts = as_timestamp(_utc(as_of) if isinstance(as_of, datetime) else as_of)
        with self._lock:
            con = self._database.cursor()
        try:
            open_tables(con, orders, self.config, table, label="request")
            frames = [rows for _, rows in tag_customers(con, "orders", "customers", as_of_ts,
                                                         self.config, self.bundle, self.version, self.intervals,
                                                         batch=len(customers) + 1, streamed=False,
                                                         customers_rows=len(customers))]
        finally:
            con.close()
        if not frames:
            # Everyone sent signed up on or after as_of: not customers yet, as the batch leaves them out.
            return pd.DataFrame({"customer_id": pd.Series([], dtype=object)})
        tags = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        order = {customer.customer_id: i for i, customer in enumerate(customers)}
        positions = [order[c] for c in tags["customer_id"]]
        if positions == sorted(positions):  # already in the order sent (always for one customer)
            return tags.reset_index(drop=True)
        return tags.iloc[np.argsort(positions, kind="stable")].reset_index(drop=True)

    def close(self) -> None:
        """Release the engine."""
        self._database.close()


def _without_optimizers(con: Any) -> None:
    """Switch off DuckDB's query optimizers on `con` (and the cursors made from it).

    A request's few rows cost more to optimise than to run: planning the feature query and the intake's
    checks was a sixth of a /score call. Optimizers choose how a query runs, never what it answers (the
    parity test checks every column of a request's tags against the nightly run's, which optimizes).
    """
    import re

    names = con.execute("SELECT string_agg(name, ',') FROM duckdb_optimizers()").fetchone()[0]
    if names and re.fullmatch(r"[a-z_]+(,[a-z_]+)*", names):  # the engine's own names, checked before use
        con.execute(f"SET disabled_optimizers = '{names}'")


def _why_unavailable(bundle: Bundle, config: Config) -> str:
    """Why this model cannot tag one customer from their own orders ('' when it can)."""
    if bundle.rebuy_days is None:
        try:
            bundle.rebuy_intervals()
        except Exception as exc:  # the bundle's own one-paragraph message
            return str(exc)
    # By name, whatever the serving config says: the columns come from the shop's whole history.
    shop_wide = [c for c in bundle.spec.columns if c.startswith("season_")]
    if shop_wide:
        return (f"the model (as_of {bundle.as_of}) uses the shop-wide season features ({', '.join(shop_wide[:3])}), "
                "which a request carrying one customer's orders cannot compute; /tags answers from the nightly "
                "snapshot, or retrain with features.season off to score requests.")
    return ""
