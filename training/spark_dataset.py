"""Training sets on Spark (`lifetag train --engine spark`): the features and labels at every cut-off,
built in Spark tasks by the feature and label SQL itself, then fitted on the driver.

Each task holds whole customers (features.spark): it validates its rows by intake's rules
(`features.intake.open_partition`), keeps the history before as_of, and runs `build_relation` at every
cut-off and `labels_relation` at every cut-off and horizon, exactly as `training.dataset.CutoffStore`
does on one connection. The rows come back to the driver (one per customer and cut-off: far fewer than
order lines), where `SparkCutoffStore` serves them; the BG/NBD columns, fitted on each cut-off's whole
population, are added there as before.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd
import pyarrow as pa

from configs.schema import Config, EngineConfig
from features.behaviour import build_relation
from features.engine import (connect, lifetag_home, remove_dead_runs_folders, repr_ident, repr_sql,
                             run_folder_name)
from features.behaviour import require_orders_before
from features.intake import ORDER_FIELDS, Intake, customer_fields, open_partition
from features.labels import labels_relation
from features.paths import customers_quarantine
from features.spark import (PartitionedSources, SparkError, carry_errors, check_bad_rows, merged_report,
                            partition_sources, quarantine_ipc, raw_tables, read_source, session, task_engine,
                            task_errors_explained, task_folder)
from training.dataset import CutoffStore, last_year_level_cutoff, plan_cutoffs, targets
from training.history import (History, combine_history, first_purchase_cutoffs, history_parts, ipc_bytes, ipc_table,
                              span_of, span_part)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkCutoffStore", "TrainingSet", "build_training_set", "spark_training_set"]

TrainingSet = tuple[dict[pd.Timestamp, pd.DataFrame], dict[tuple[pd.Timestamp, int], pd.DataFrame]]


def build_training_set(spark: "SparkSession", orders: str | os.PathLike[str], config: Config, as_of: pd.Timestamp,
                       cutoffs: list[pd.Timestamp], horizons: list[int],
                       customers: str | os.PathLike[str] | None = None, partitions: int | None = None) -> TrainingSet:
    """Features at each of `cutoffs` and labels at each cut-off and horizon, from the orders before `as_of`
    (valid rows only: `spark_training_set` reports and quarantines the others), ordered by customer_id."""
    keyed = _keyed_sources(spark, orders, config, customers, partitions)
    with task_errors_explained():
        built, _ = _collect(spark, keyed, config, as_of, cutoffs, horizons, [])
    return built


def _keyed_sources(spark: "SparkSession", orders: str | os.PathLike[str], config: Config,
                   customers: str | os.PathLike[str] | None, partitions: int | None) -> PartitionedSources:
    if config.features.season:
        raise SparkError("features.season is on: its columns are shop-wide, and Spark tasks see only their "
                         "customers' orders. Train with --engine local.")
    raw_orders = read_source(spark, str(orders), config.orders, "orders", "--orders")
    raw_customers = read_source(spark, str(customers), config.customers, "customers", "--customers") \
        if customers is not None else None
    partitions = partitions or max(spark.sparkContext.defaultParallelism, -(-raw_orders.rows // 100_000))
    with task_errors_explained():
        return partition_sources(spark, raw_orders, raw_customers, config, partitions)


def _collect(spark: "SparkSession", keyed: PartitionedSources, config: Config, as_of: pd.Timestamp | None,
             cutoffs: list[pd.Timestamp], horizons: list[int],
             cohorts: list[pd.Timestamp]) -> tuple[TrainingSet, list[dict[str, Any]]]:
    """Run the partition tasks and read back their rows: the training set, and per partition its intake
    report, quarantined rows, order span and history parts (`training.history.history_parts`)."""
    has_customers = keyed.customers is not None
    feature_schema, label_schema = _schemas(config, has_customers)
    schema = pa.schema([pa.field("_kind", pa.string()), pa.field("_cutoff", pa.string()),
                        pa.field("_horizon", pa.int32()), pa.field("_payload", pa.binary()), *feature_schema,
                        *(f for f in label_schema if f.name not in feature_schema.names)])
    result = _run(spark, keyed, schema, config, as_of, cutoffs, horizons, cohorts)
    scratch = _scratch() if spark.sparkContext.master.startswith("local") else None
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        if scratch is not None:
            # Through Parquet files on this machine, not through the JVM: a million customers' rows at a
            # dozen cut-offs are gigabytes, more than Spark hands to Python at once by default.
            result.write.parquet(str(scratch / "rows"))
            # A view holds no bound parameter; the folder is lifetag's own scratch, quoted.
            con.execute(f"CREATE VIEW _rows AS SELECT * FROM read_parquet({repr_sql(str(scratch / 'rows' / '*.parquet'))})")
        else:
            con.register("_rows", result.toArrow())  # a cluster: spark.driver.maxResultSize must hold it
        features = {c: _frame(con, "features", c, None, feature_schema.names) for c in cutoffs}
        labels = {(c, h): _frame(con, "labels", c, h, label_schema.names) for c in cutoffs for h in horizons}
        parts: dict[int, dict[str, Any]] = {}
        for part, name, payload in con.execute("SELECT _horizon, _cutoff, _payload FROM _rows WHERE _kind = 'part'"
                                               ).fetchall():
            parts.setdefault(part, {})[name] = payload
    finally:
        con.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return (features, labels), [parts[p] for p in sorted(parts)]


def _scratch() -> Path:
    """A private folder under LIFETAG_HOME/scratch for this run (a killed run's are removed first)."""
    root = lifetag_home().resolve() / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    remove_dead_runs_folders(root, "spark-training-set")
    return root / run_folder_name("spark-training-set")


def _schemas(config: Config, has_customers: bool) -> tuple[pa.Schema, pa.Schema]:
    """The feature and label SQL's columns and types, bound over empty canonical views."""
    con = connect(EngineConfig())
    try:
        for view, fields in (("orders", ORDER_FIELDS), ("customers", customer_fields(config))):
            columns = ", ".join(f"CAST(NULL AS {spec.sql_type}) AS {name}" for name, spec in fields.items())
            con.execute(f"CREATE TEMP VIEW {view} AS SELECT {columns} WHERE false")
        cut = pd.Timestamp("2000-01-01")
        features = build_relation(con, "orders", cut, config, "customers" if has_customers else None)
        labels = labels_relation(con, "orders", cut, 1, config)
        return features.limit(0).to_arrow_table().schema, labels.limit(0).to_arrow_table().schema
    finally:
        con.close()


def _run(spark: "SparkSession", keyed: PartitionedSources, schema: pa.Schema, config: Config,
         as_of: pd.Timestamp | None, cutoffs: list[pd.Timestamp], horizons: list[int],
         cohorts: list[pd.Timestamp]) -> "DataFrame":
    """One task per customer partition: intake's rules, then (with `as_of`) the features and labels at every
    cut-off and the history parts; every task also hands back its intake report, bad rows and order span."""
    from pyspark.sql.pandas.types import from_arrow_schema

    engine, labels, scopes = task_engine(config), keyed.labels, keyed.scope_types

    def tagged(table: pa.Table, kind: str, cutoff: pd.Timestamp, horizon: int | None) -> pa.Table:
        n = table.num_rows
        extra = {"_kind": pa.array([kind] * n, pa.string()), "_cutoff": pa.array([str(cutoff)] * n, pa.string()),
                 "_horizon": pa.array([horizon] * n, pa.int32())}
        columns = [extra[f.name] if f.name in extra else table.column(f.name).cast(f.type)
                   if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays(columns, schema=schema)

    def payloads(part: int, named: dict[str, bytes | None]) -> pa.Table:
        kept = {name: data for name, data in named.items() if data is not None}
        columns = {"_kind": pa.array(["part"] * len(kept), pa.string()), "_cutoff": pa.array(list(kept), pa.string()),
                   "_horizon": pa.array([part] * len(kept), pa.int32()),
                   "_payload": pa.array(list(kept.values()), pa.binary())}
        return pa.Table.from_arrays([columns.get(f.name, pa.nulls(len(kept), f.type)) for f in schema], schema=schema)

    @carry_errors
    def task(part: int, orders: pa.Table, customers: pa.Table | None) -> pa.Table:
        con, folder = connect(engine), task_folder()
        try:
            bad = folder / "bad.parquet"
            sources = open_partition(con, raw_tables(orders), config, raw_tables(customers) if customers is not None
                                     else None, labels, scopes, bad)
            report = {"orders": dataclasses.asdict(sources.orders),
                      "customers": dataclasses.asdict(sources.customers) if sources.customers else None}
            named = {"report": json.dumps(report).encode(), "bad_orders": quarantine_ipc(bad),
                     "bad_customers": quarantine_ipc(customers_quarantine(bad)),
                     "span": ipc_bytes(span_part(con, "orders"))}
            if as_of is None:
                return payloads(part, named)
            table = "customers" if customers is not None else None
            con.execute(f"CREATE TEMP TABLE _history AS SELECT * FROM orders WHERE order_ts < TIMESTAMP '{as_of}'")
            facts = history_parts(con, "_history", table, as_of, config, cohorts)
            named.update({f"history:{name}": ipc_bytes(t) for name, t in facts.items()})
            parts = [tagged(build_relation(con, "_history", c, config, table).to_arrow_table(), "features", c, None)
                     for c in cutoffs]
            parts += [tagged(labels_relation(con, "_history", c, h, config).to_arrow_table(), "labels", c, h)
                      for c in cutoffs for h in horizons]
            return pa.concat_tables([*parts, payloads(part, named)])
        finally:
            con.close()
            shutil.rmtree(folder, ignore_errors=True)

    spark_schema = from_arrow_schema(schema)
    if keyed.customers is not None:
        grouped = keyed.orders.groupBy("_part").cogroup(keyed.customers.groupBy("_part"))
        return grouped.applyInArrow(lambda key, o, c: task(key[0].as_py(), o, c), spark_schema)
    return keyed.orders.groupBy("_part").applyInArrow(lambda key, o: task(key[0].as_py(), o, None), spark_schema)


def _frame(con: duckdb.DuckDBPyConnection, kind: str, cutoff: pd.Timestamp, horizon: int | None,
           columns: list[str]) -> pd.DataFrame:
    """One cut-off's rows as the embedded store's DuckDB query hands them to pandas, ordered by customer_id."""
    selected = ", ".join(repr_ident(c) for c in columns)
    where = "_kind = ? AND _cutoff = ?" + (" AND _horizon = ?" if horizon is not None else "")
    params = [kind, str(cutoff)] + ([horizon] if horizon is not None else [])
    return con.execute(f"SELECT {selected} FROM _rows WHERE {where} ORDER BY customer_id", params).df()


class SparkCutoffStore(CutoffStore):
    """A CutoffStore whose features and labels were built on Spark; the driver holds no orders to build others."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, config: Config, customers: str | None,
                 built: TrainingSet) -> None:
        super().__init__(con, source, config, customers)
        self._built_features, self._built_labels = built

    def feature_frame(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The Spark-built rows at `cutoff` (a copy: the store adds columns to it)."""
        if cutoff not in self._built_features:
            raise SparkError(f"the Spark training set has no features at {cutoff}; the driver reads no orders.")
        return self._built_features[cutoff].copy()

    def label_frame(self, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
        """The Spark-built labels at `cutoff` for `horizon_days`."""
        if (cutoff, horizon_days) not in self._built_labels:
            raise SparkError(f"the Spark training set has no labels at {cutoff}; the driver reads no orders.")
        return self._built_labels[(cutoff, horizon_days)].copy()


def spark_training_set(master: str | None = None, partitions: int | None = None,
                       spark: "SparkSession | None" = None) -> Any:
    """A `training_set` for `training.pipeline.fit_bundle`: intake, the history's facts and the features and
    labels at every cut-off the targets may plan, all computed in Spark tasks; the driver reads no orders.

    With as_of given, one pass over the data; without, a first pass finds the last order (and reports intake).
    Cut-offs are planned without the first order (every one the targets' steps give): the driver, once it
    knows the first order, uses those that leave enough history, as `training.dataset.plan_cutoffs` does."""

    def factory(con: duckdb.DuckDBPyConnection, orders: str | os.PathLike[str], config: Config,
                customers: str | os.PathLike[str] | None, quarantine: str | os.PathLike[str] | None,
                as_of: pd.Timestamp | None) -> tuple[History, CutoffStore]:
        active = spark or session(master)
        keyed = _keyed_sources(active, orders, config, customers, partitions)
        with task_errors_explained():
            if as_of is None:
                _, found = _collect(active, keyed, config, None, [], [], [])
                intake = _intake(found, keyed, quarantine)
                as_of, _ = span_of(_spans(con, found), "_lifetag_span", None)
            earliest = pd.Timestamp("1700-01-01")  # any first order: planned without it, filtered on the driver
            level_cutoff = last_year_level_cutoff(as_of, earliest, config)
            cutoffs = sorted({as_of, *(c for t in targets(config)
                                       for c in plan_cutoffs(as_of, t.horizon_days, earliest, config, t.name)),
                              *([level_cutoff] if level_cutoff is not None else [])})
            horizons = sorted({t.horizon_days for t in targets(config)})
            cohorts = first_purchase_cutoffs(as_of, earliest, config) if keyed.customers is not None else []
            built, found = _collect(active, keyed, config, as_of, cutoffs, horizons, cohorts)
        intake = _intake(found, keyed, quarantine)
        require_orders_before(_spans(con, found), "_lifetag_span", as_of, str(orders))
        _, first_order = span_of(con, "_lifetag_span", as_of)
        parts = [{name.removeprefix("history:"): ipc_table(data) for name, data in p.items()
                  if name.startswith("history:")} for p in found]
        history = combine_history(con, parts, intake, as_of, first_order, config)
        table = "customers" if intake.customers is not None else None
        return history, SparkCutoffStore(con, "_history", config, table, built)

    return factory


def _intake(found: list[dict[str, Any]], keyed: PartitionedSources, quarantine: str | os.PathLike[str] | None) -> Intake:
    """The sources' intake reports from the partitions' (as `lifetag score --engine spark` adds them up); stops
    with intake's one paragraph on bad rows, or writes them to `quarantine`."""
    reports = [json.loads(p["report"]) for p in found]
    orders_order, customers_order = keyed.problem_orders
    intake = Intake(merged_report([r["orders"] for r in reports], keyed.labels[0], orders_order),
                    merged_report([r["customers"] for r in reports if r["customers"]], keyed.labels[1], customers_order)
                    if keyed.customers is not None else None)
    bad = [{"_bad_orders": p.get("bad_orders"), "_bad_customers": p.get("bad_customers")} for p in found]
    check_bad_rows(intake, bad, quarantine, keyed.labels)
    return intake


def _spans(con: duckdb.DuckDBPyConnection, found: list[dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    """Register the partitions' order spans in `con` as `_lifetag_span` (training.history.span_part)."""
    con.register("_lifetag_span", pa.concat_tables([ipc_table(p["span"]) for p in found]))
    return con
