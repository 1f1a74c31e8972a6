"""What `lifetag train` learns from the whole history besides the training set: the order span (and so the
default as_of), the data fingerprint, the category re-buy intervals, the first-purchase cohorts and the
behavioural clusters' sample.

Each is SQL over the validated orders (and customers) of one part of the customers, whose results combine
exactly into the whole history's: `history_parts` runs on one part and `combine_history` adds the parts up.
The embedded engine runs `history_parts` once over the whole history; Spark runs it in every partition
task (`training.spark_dataset`) and the driver combines the partitions' small results. Either way the same
SQL computes every statistic, and a customer's rows never span two parts.
"""
from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

from configs.schema import Config
from features.behaviour import require_orders_before, unmatched_customers
from features.clusters import cluster_candidates, pick_cluster_sample
from features.intake import Intake, open_sources
from features.scenarios import rebuy_gap_counts_sql, rebuy_intervals_from_counts
from training.dataset import default_as_of, order_span, plan_cutoffs
from training.first_purchase import first_purchase_examples, first_purchase_examples_sql

__all__ = ["History", "combine_history", "embedded_history", "history_parts", "ipc_bytes", "ipc_table",
           "span_part", "span_of", "first_purchase_cutoffs"]

_MODULUS = "18446744073709551616"  # the content hashes are sums of 64-bit row hashes, modulo 2**64
_PARTS = ("fingerprint", "customers_hash", "rebuy", "clusters", "unmatched", "first_purchase")


@dataclass
class History:
    """The whole history's shop-wide facts a bundle is trained with."""

    intake: Intake
    as_of: pd.Timestamp
    first_order: pd.Timestamp
    fingerprint: dict[str, Any]
    rebuy_days: dict[str, float]
    cluster_sample: pd.DataFrame
    unmatched: int  # buyers before as_of without a row in the customers table
    first_purchase_examples: Callable[[pd.Timestamp], pd.DataFrame] | None  # per cut-off; None: no customers table


def span_part(con: duckdb.DuckDBPyConnection, source: str) -> pa.Table:
    """The first and last order time of one part (`order_ts`, two rows): the min and max over the parts'
    rows are the whole history's, so `order_span` and `default_as_of` run on them unchanged."""
    return con.sql(f"SELECT min(order_ts) AS order_ts FROM {source} UNION ALL "
                   f"SELECT max(order_ts) FROM {source}").to_arrow_table()


def span_of(con: duckdb.DuckDBPyConnection, name: str, as_of: pd.Timestamp | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """(as_of, first order) from the relation `name` of order times (`span_part` of the parts): `as_of`
    itself, or the day after the last order but never after today (training.pipeline.default_training_as_of)."""
    if as_of is None:
        today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
        as_of = min(default_as_of(con, name), today)
    return as_of, order_span(con, name)[0]


def first_purchase_cutoffs(as_of: pd.Timestamp, first_order: pd.Timestamp, config: Config) -> list[pd.Timestamp]:
    """The sign-up cohorts' cut-offs that `training.first_purchase.fit_first_purchase` plans."""
    return plan_cutoffs(as_of, config.customers.first_purchase_days, first_order, config)


def history_parts(con: duckdb.DuckDBPyConnection, source: str, customers: str | None, as_of: pd.Timestamp,
                  config: Config, cohort_cutoffs: list[pd.Timestamp]) -> dict[str, pa.Table]:
    """The statistics of one part's orders before `as_of` (`source`, a canonical orders view) and of its
    customers table (`customers`, or None), as small Arrow tables that `combine_history` adds up.

    `cohort_cutoffs`: the cut-offs at which the first-purchase examples are wanted (empty: none)."""
    parts = {
        # count(DISTINCT customer_id) adds up because no customer spans two parts.
        "fingerprint": con.sql(
            "SELECT count(*) AS rows, count(DISTINCT customer_id) AS customers, min(order_ts) AS first, "
            "max(order_ts) AS last, CAST(sum(CAST(hash(customer_id, order_id, order_ts, amount, status) AS HUGEINT)) "
            f"AS VARCHAR) AS hash_sum FROM {source}").to_arrow_table(),
        "rebuy": con.sql(rebuy_gap_counts_sql(source, as_of, config)).to_arrow_table(),
        "clusters": cluster_candidates(con, source, as_of, config),
    }
    if customers is not None:
        parts["customers_hash"] = con.sql(
            f"SELECT count(*) AS rows, CAST(sum(CAST(hash(k) AS HUGEINT)) AS VARCHAR) AS hash_sum FROM {customers} k"
        ).to_arrow_table()
        parts["unmatched"] = pa.table({"buyers": [unmatched_customers(con, source, customers, as_of, config)]})
        cohorts = []
        for cutoff in cohort_cutoffs:
            rows = con.sql(first_purchase_examples_sql(source, customers, cutoff, config)).to_arrow_table()
            cohorts.append(rows.append_column("_cohort", pa.array([str(cutoff)] * rows.num_rows, pa.string())))
        if cohorts:
            parts["first_purchase"] = pa.concat_tables(cohorts)
    return parts


def combine_history(con: duckdb.DuckDBPyConnection, parts: list[dict[str, pa.Table]], intake: Intake,
                    as_of: pd.Timestamp, first_order: pd.Timestamp, config: Config) -> History:
    """The whole history's facts from the `history_parts` of parts holding disjoint customers."""
    for name in _PARTS:
        tables = [p[name] for p in parts if name in p]
        if tables:
            con.register(f"_lifetag_{name}", pa.concat_tables(tables, promote_options="permissive"))
    rows, customers, first, last, digest = con.execute(
        "SELECT sum(rows), sum(customers), min(first), max(last), "
        f"CAST(sum(CAST(hash_sum AS HUGEINT)) % {_MODULUS} AS VARCHAR) FROM _lifetag_fingerprint").fetchall()[0]
    fingerprint = {"rows": int(rows or 0), "customers": int(customers or 0), "first_order_ts": str(first),
                   "last_order_ts": str(last), "content_hash": f"{int(digest or 0):016x}"}
    has_customers = intake.customers is not None
    if has_customers:
        rows, digest = con.execute(f"SELECT sum(rows), CAST(sum(CAST(hash_sum AS HUGEINT)) % {_MODULUS} AS VARCHAR) "
                                   "FROM _lifetag_customers_hash").fetchall()[0]
        fingerprint.update({"customers_rows": int(rows or 0), "customers_content_hash": f"{int(digest or 0):016x}"})
    rebuy = rebuy_intervals_from_counts(con, "_lifetag_rebuy")
    sample = pick_cluster_sample(con, "_lifetag_clusters", config)
    unmatched = int(con.execute("SELECT sum(buyers) FROM _lifetag_unmatched").fetchall()[0][0] or 0) \
        if has_customers else 0
    examples = None
    if has_customers:
        cohorts = any("first_purchase" in p for p in parts)

        def cohort_examples(cutoff: pd.Timestamp) -> pd.DataFrame:
            if not cohorts:
                raise KeyError(cutoff)
            # Ordered and typed by DuckDB as first_purchase_examples orders and types its rows.
            return con.execute("SELECT * EXCLUDE (_cohort) FROM _lifetag_first_purchase WHERE _cohort = ? "
                               "ORDER BY customer_id", [str(cutoff)]).df()

        examples = cohort_examples
    return History(intake, as_of, first_order, fingerprint, rebuy, sample, unmatched, examples)


def embedded_history(con: duckdb.DuckDBPyConnection, orders: str | os.PathLike[str], config: Config,
                     customers: str | os.PathLike[str] | None, quarantine: str | os.PathLike[str] | None,
                     as_of: pd.Timestamp | None) -> History:
    """Intake of the sources on `con` (the `orders` and `customers` views), the `_history` table of the orders
    before as_of, and the history's facts computed over it as one part."""
    sources = open_sources(con, orders, config, customers, quarantine)
    con.register("_lifetag_span", span_part(con, "orders"))
    as_of, first_order = span_of(con, "_lifetag_span", as_of)
    require_orders_before(con, "_lifetag_span", as_of, str(orders))
    con.execute(f"CREATE TEMP TABLE _history AS SELECT * FROM orders WHERE order_ts < TIMESTAMP '{as_of}'")
    table = "customers" if sources.customers is not None else None
    parts = history_parts(con, "_history", table, as_of, config, [])
    history = combine_history(con, [parts], sources, as_of, first_order, config)
    if table is not None:
        # The cohorts are read where they are needed, straight from the history (one part: the same rows).
        history.first_purchase_examples = lambda cutoff: first_purchase_examples(con, "_history", table, cutoff, config)
    return history


def ipc_bytes(table: pa.Table) -> bytes:
    """An Arrow table as IPC stream bytes (types kept), to cross from a Spark task to the driver."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_table(data: bytes) -> pa.Table:
    """The Arrow table of `ipc_bytes`."""
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
