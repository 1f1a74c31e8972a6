"""Batch scoring: one row of tags per customer from an order history and a registered model bundle.

This module is the batch driver only: it reads the sources, splits customers into hash partitions of
their id (a customer's orders never split), streams each partition's tag inputs in batches through
`serving.tags.tag_rows` (the one function the service and Spark call too), writes the parts and
merges them in customer order, so memory stays bounded and the output is identical whatever the
partition count.
"""
from __future__ import annotations

import os
import glob
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.schema import Config
from features.behaviour import (as_timestamp, registered_relation, registered_sql, require_orders_before,
                                unmatched_customers)
from features.clusters import ClusterModel
from features.engine import connect, repr_ident, repr_sql
from features.intake import Intake, IntakeReport, open_sources
from features.output import OutputError, write_relation
from features.paths import file_part
from features.scenarios import learn_rebuy_intervals, tag_inputs_relation, tag_inputs_sql
from serving.bundle import Bundle, load_model
from serving.locks import LockHeld, output_lock, scratch_folder
# The tag logic lives in serving.tags; the names callers imported from here before it moved are re-exported.
from serving.tags import (OUTPUT_DOCS, ScoringError, _apply_scenarios, check_feature_columns, check_scenarios,
                          lifecycle_stage, output_docs, reasons, scenario_columns, tag_rows, tags_table_markdown)

__all__ = [
    "OUTPUT_DOCS", "ScoreResult", "ScoringError", "check_scenarios", "lifecycle_stage", "load_model", "output_docs",
    "one_run_per_output", "output_target", "reasons", "score", "score_notes", "summaries", "tag_customers",
    "tags_table_markdown",
]

Progress = Callable[[str, int], Callable[[int], None]]


@dataclass
class ScoreResult:
    """What a scoring run wrote and the figures of its closing summary."""

    out: str
    customers: int
    model_version: str
    intake: IntakeReport
    summary_by_segment: pd.DataFrame
    summary_by_stage: pd.DataFrame
    scenario_counts: dict[str, int] = field(default_factory=dict)
    customers_intake: IntakeReport | None = None
    registered: int = 0  # customers-table rows with no order before as_of, tagged `registered`
    unmatched_customers: int = 0  # buyers without a row in the customers table
    notes: list[str] = field(default_factory=list)
    partition_seconds: list[float] = field(default_factory=list)  # Spark: each partition task's own time


def _partition_view(con: duckdb.DuckDBPyConnection, table: str, partitions: int, index: int) -> str:
    if partitions == 1:
        return table
    name = f"_lifetag_{table}_part_{index}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT * FROM {table} "
                f"WHERE hash(CAST(customer_id AS VARCHAR)) % {partitions} = {index}")
    return name


def _rebuy_intervals(con: duckdb.DuckDBPyConnection, bundle: Bundle, as_of: pd.Timestamp,
                     config: Config) -> tuple[dict[str, float], str]:
    """The category re-buy intervals behind categories_due, and a note when they are not the bundle's.

    They are the bundle's, learned at training time. A bundle saved before lifetag stored them keeps
    working in the batch only: the intervals are learned from the whole history of this run's orders
    before as_of, as before, and the run's notes say to retrain (Bundle.rebuy_intervals refuses it).
    """
    if bundle.rebuy_days is not None:
        return bundle.rebuy_days, ""
    return learn_rebuy_intervals(con, "orders", as_of, config), (
        f"categories_due: the model (as_of {bundle.as_of}) was saved by an older lifetag without the category "
        "re-buy intervals, so this run learned them from the orders it scored, as before. Retrain it with "
        "`lifetag train` to fix them at training time; tagging one customer from their own orders needs them "
        "in the model.")


def _batches(con: duckdb.DuckDBPyConnection, query: str, batch: int, streamed: bool) -> Iterator[pd.DataFrame]:
    if not streamed:
        # A request's few rows: run the text directly, without binding a relation first (a third of the
        # time of tagging one customer); DuckDB's warning that this copies the rows does not matter here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
            table = con.execute(query).to_arrow_table()
        if table.num_rows:
            # Without Arrow's thread pool: for a few rows, waking its threads costs more than the conversion.
            yield table.to_pandas(use_threads=False)
        return
    # The relation's reader streams; nothing else may run on its connection until it has been read out.
    with con.sql(query).to_arrow_reader(batch_size=batch) as reader:
        for record_batch in reader:
            if record_batch.num_rows:
                yield record_batch.to_pandas()


def tag_customers(con: duckdb.DuckDBPyConnection, source: str, customers: str | None, as_of: pd.Timestamp,
                  config: Config, bundle: Bundle, model_version: str, intervals: dict[str, float],
                  batch: int, streamed: bool = True, shop: str = "orders",
                  clusters: ClusterModel | None = None,
                  customers_rows: int | None = None) -> Iterator[tuple[str, pd.DataFrame]]:
    """The tag rows of the customers of `source` (a canonical orders view) and of the registered
    customers of `customers` who had no order before as_of, in batches: ("buyers" | "registered", rows).

    The one way from validated views to tags: the batch calls it per partition, the service per
    request; both then call `serving.tags.tag_rows` through it. `streamed=False` (a request's few
    customers) reads each query's rows at once instead of streaming them in bounded batches. With
    `clusters` (`score --clusters`), buyers' rows also get `cluster` and `cluster_description` from
    their features; registered customers, who have no behaviour yet, get them empty. `customers_rows`:
    the number of rows of `customers` when every buyer of `source` is one of them (a request): once the
    buyers account for all of them, nobody is left to be a registered customer and that query is skipped.
    """
    # With features.season on, the season columns are shop-wide: they come from the whole shop's
    # orders (`shop`, the `orders` view), not the partition's. Requests carrying one customer's
    # orders cannot compute them; the service refuses a model that needs them.
    query = tag_inputs_sql(con, source, as_of, config, intervals, customers, shop=shop)
    # Registered customers' scenario tags see every tag input empty: the columns, without rows. Taken
    # from the first batch of buyers; asked of the engine only when there is none (the query costs as
    # much as tagging a request's customers).
    no_buyers = None
    buyers = 0
    for frame in _batches(con, query, batch, streamed):
        if no_buyers is None:
            no_buyers = frame.iloc[:0].copy()
        buyers += len(frame)
        rows = tag_rows(frame, bundle, config, as_of, model_version)
        yield "buyers", rows if clusters is None else _with_clusters(rows, clusters, frame)
    if customers is None or buyers == customers_rows:
        return
    if no_buyers is None:
        no_buyers = con.sql(f"SELECT * FROM ({query}) LIMIT 0").to_arrow_table().to_pandas()
    for frame in _batches(con, registered_sql(source, customers, as_of, config), batch, streamed):
        rows = tag_rows(no_buyers, bundle, config, as_of, model_version, registered=frame)
        yield "registered", rows if clusters is None else _with_clusters(rows, clusters, None)


def _with_clusters(rows: pd.DataFrame, clusters: ClusterModel, features: pd.DataFrame | None) -> pd.DataFrame:
    """`rows` with `cluster` and `cluster_description` after the tag columns (empty without `features`)."""
    if features is None:
        extra = pd.DataFrame({"cluster": pd.array([pd.NA] * len(rows), dtype="Int64"),
                              "cluster_description": pd.Series([None] * len(rows), dtype=object)}, index=rows.index)
    else:
        extra = clusters.columns(features.reset_index(drop=True)).set_index(rows.index)
    return pd.concat([rows, extra], axis=1)


def score(
    orders: str | os.PathLike[str], as_of: str | pd.Timestamp, out: str | os.PathLike[str], config: Config,
    model_uri: str | None = None, quarantine: str | os.PathLike[str] | None = None, partitions: int = 1,
    progress: Progress | None = None, bundle: Bundle | None = None, model_version: str | None = None,
    customers: str | os.PathLike[str] | None = None, clusters: bool = False,
) -> ScoreResult:
    """Tag every customer with an order before `as_of`, and every registered customer of the customers
    table who has not ordered yet, and write one row each to `out` (atomically). `clusters`: also the
    behavioural `cluster` and its description (`features.clusters`, learned with the model)."""
    out_format = output_target(out)
    if partitions < 1:
        raise ScoringError(f"--partitions must be at least 1, got {partitions}.")
    with _one_run_per_output(out):
        return _score_locked(orders, as_of, out, out_format, config, model_uri, quarantine, partitions, progress,
                             bundle, model_version, customers, clusters)


def _score_locked(
    orders: str | os.PathLike[str], as_of: str | pd.Timestamp, out: str | os.PathLike[str], out_format: str,
    config: Config, model_uri: str | None, quarantine: str | os.PathLike[str] | None, partitions: int,
    progress: Progress | None, bundle: Bundle | None, model_version: str | None,
    customers: str | os.PathLike[str] | None, clusters: bool = False,
) -> ScoreResult:
    """`score`, once this run holds the output's lock."""
    if bundle is None:
        bundle, model_version = load_model(model_uri)
    # The clusters learned with the model (before any reading: a model without them is said at once);
    # a scoring run never re-learns a shop-wide statistic.
    cluster_model = bundle.cluster_model() if clusters else None
    as_of_ts = as_timestamp(as_of)
    con = connect(config.engine)
    try:
        sources = open_sources(con, orders, config, customers, quarantine)
        require_orders_before(con, "orders", as_of_ts, str(orders))
        table = "customers" if sources.customers is not None else None
        intervals, learned_here = _rebuy_intervals(con, bundle, as_of_ts, config)
        inputs_at = tag_inputs_relation(con, "orders", as_of_ts, config, intervals, table)
        check_feature_columns(inputs_at.columns, bundle, has_customers=table is not None)
        check_scenarios(config.scoring.scenarios, scenario_columns(zip(inputs_at.columns, inputs_at.types)))
        customers_total = con.execute(
            f"SELECT count(DISTINCT customer_id) FROM orders WHERE order_ts < TIMESTAMP '{as_of_ts}'"
        ).fetchall()[0][0]
        registered_total = registered_relation(con, "orders", table, as_of_ts, config).count("*").fetchall()[0][0] \
            if table else 0
        advance = progress("Scoring customers", int(customers_total + registered_total)) if progress else (lambda n: None)
        scratch = scratch_folder("score")
        try:
            parts = []
            for index in range(partitions):
                source = _partition_view(con, "orders", partitions, index)
                part_customers = _partition_view(con, table, partitions, index) if table else None
                batches = tag_customers(con, source, part_customers, as_of_ts, config, bundle, model_version or "",
                                        intervals, config.scoring.batch_customers, clusters=cluster_model)
                for number, (kind, rows) in enumerate(batches):
                    parts.append(_write_part(scratch, f"{index:05d}-{kind[0]}{number:05d}", rows))
                    advance(len(rows))
            if not parts:
                raise ScoringError(f"{orders}: no customer has a purchase before as_of {as_of_ts.date()}, so there "
                                   "is nothing to score; check --as-of against the dates in the orders.")
            # A fresh connection writes the output: the intake one may be locked to its inputs.
            writer = connect(config.engine)
            try:
                written = _merge(writer, parts, out, out_format)
                by_segment, by_stage, counts = _summaries(writer, out, out_format, config)
            finally:
                writer.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        unmatched = unmatched_customers(con, "orders", table, as_of_ts, config) if table else 0
    finally:
        con.close()
    notes = score_notes(sources, bundle, table is not None, unmatched, learned_here)
    return ScoreResult(str(out), written, model_version or "", sources.orders, by_segment, by_stage, counts,
                       sources.customers, int(registered_total), unmatched, notes)


def score_notes(sources: Intake, bundle: Bundle, has_customers: bool, unmatched: int, learned_here: str = "") -> list[str]:
    """The notes of a scoring run: the intake's, re-buy intervals learned in the run, customers without a row
    in the customers table, and why first_purchase_prob is (or is not) given."""
    notes = sources.notes() + ([learned_here] if learned_here else [])
    if has_customers:
        if unmatched:
            notes.append(f"customers: {unmatched:,} buyers have no row in the customers table; their attributes are empty")
        why = bundle.metadata.get("first_purchase_note") or "the model was trained without a customers table"
        notes.append(f"first_purchase_prob: {why}" if bundle.first_purchase is not None
                     else f"first_purchase_prob is empty: {why}")
    return notes


def _write_part(scratch: Path, name: str, frame: pd.DataFrame) -> Path:
    path = scratch / f"part-{name}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


@contextmanager
def _one_run_per_output(out: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the output's lock for the run, refusing a second run to the same output; clear a dead run's leftovers.

    Partial results live in LIFETAG_HOME/scratch (serving.locks.scratch_folder), never beside the
    output; only the final temporary file is written there, for an atomic rename, named
    `.NAME.<id>.tmp` so that no `*.parquet` / `*.csv` glob matches it. With the lock held, such a
    file can only be a killed run's, and is removed.
    """
    target = file_part(out).resolve()
    try:
        with output_lock(str(target)):
            for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp") if target.parent.is_dir() else []:
                stale.unlink(missing_ok=True)
            yield
    except LockHeld as held:
        raise ScoringError(
            f"{out}: another `lifetag score` is writing this output right now ({held.holder}); two runs to one "
            "output would race. Wait for it to finish (or stop it), or pass another --out. Nothing was written."
        ) from None


def output_target(out: str | os.PathLike[str]) -> str:
    """'parquet', 'csv' or 'duckdb' (a `file.duckdb::table` URI), from the output name."""
    text = str(out)
    if "::" in text:
        path, table = text.split("::", 1)
        if not path.endswith((".duckdb", ".db")) or not table.isidentifier():
            raise OutputError(f"{out}: a DuckDB output is written as FILE.duckdb::TABLE (e.g. tags.duckdb::customer_tags).")
        return "duckdb"
    suffix = Path(text).suffix.lower()
    if suffix in (".parquet", ".csv"):
        return suffix[1:]
    raise OutputError(f"{out}: unknown output format '{suffix or '(none)'}'; use .parquet, .csv or FILE.duckdb::TABLE.")


def _merge(con: duckdb.DuckDBPyConnection, parts: list[Path], out: str | os.PathLike[str], fmt: str) -> int:
    """Write the parts as one output ordered by customer_id, atomically (temporary name, then rename).

    `con` is a writer: it reads lifetag's own part files and runs no SQL from a config. File names
    are bound parameters and the table name a quoted identifier: no path becomes SQL text.
    """
    # By name: registered customers' parts leave order-based columns empty (typed NULL in Parquet).
    query = "SELECT * FROM read_parquet(?, union_by_name = true) ORDER BY customer_id"
    files = [str(p) for p in parts]
    text = str(out)
    if fmt == "duckdb":
        path, table = text.split("::", 1)
        con.execute("ATTACH ? AS _lifetag_out", [path])
        try:
            target = f"_lifetag_out.{repr_ident(table)}"
            con.execute("BEGIN")
            con.execute(f"CREATE OR REPLACE TABLE {target} AS {query}", [files])
            con.execute("COMMIT")
            return int(con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0])
        finally:
            con.execute("DETACH _lifetag_out")
    # A relation carries no bound parameters and a view may not hold them: the part files (lifetag's
    # own scratch names) are quoted literals.
    listed = "[" + ", ".join(repr_sql(f) for f in files) + "]"
    con.execute(f"CREATE OR REPLACE TEMP VIEW _lifetag_parts AS SELECT * FROM read_parquet({listed}, union_by_name = true)")
    target = write_relation(con, con.sql("SELECT * FROM _lifetag_parts ORDER BY customer_id"), text)
    reader = "read_parquet" if fmt == "parquet" else "read_csv"
    return int(con.execute(f"SELECT count(*) FROM {reader}(?)", [str(target)]).fetchall()[0][0])


def _summaries(con: duckdb.DuckDBPyConnection, out: str | os.PathLike[str], fmt: str,
               config: Config) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    text = str(out)
    params: list[str] = []
    if fmt == "duckdb":
        path, table = text.split("::", 1)
        con.execute("ATTACH ? AS _lifetag_read (READ_ONLY)", [path])
        source = f"_lifetag_read.{repr_ident(table)}"
    else:
        source, params = f"{'read_parquet' if fmt == 'parquet' else 'read_csv'}(?)", [text]
    try:
        def by(column: str) -> pd.DataFrame:
            return con.execute(
                f"SELECT {column}, count(*) AS customers, sum(monetary_total) / sum(sum(monetary_total)) OVER () AS revenue_share, "
                f"avg(churn_risk) AS mean_churn_risk, avg(ltv) AS mean_ltv, sum(ltv) AS ltv_total "
                f"FROM {source} GROUP BY {column} ORDER BY customers DESC, {column}", params
            ).df()

        by_segment, by_stage = by("rfm_segment"), by("lifecycle_stage")
        counts = {}
        for name in config.scoring.scenarios:
            counts[name] = int(con.execute(f"SELECT count(*) FILTER (WHERE {repr_ident(name)}) FROM {source}",
                                           params).fetchall()[0][0])
    finally:
        if fmt == "duckdb":
            con.execute("DETACH _lifetag_read")
    return by_segment, by_stage, counts


# The Spark driver (serving.spark) writes the same output under the same rules: one run per output, the
# same closing summaries.
one_run_per_output = _one_run_per_output
summaries = _summaries
