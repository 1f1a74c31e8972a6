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
from features.intake import ORDER_FIELDS, customer_fields, open_partition
from features.labels import labels_relation
from features.spark import (SparkError, carry_errors, partition_sources, raw_tables, read_source, session, task_engine,
                            task_errors_explained, task_folder)
from training.dataset import CutoffStore, plan_cutoffs, targets

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkCutoffStore", "TrainingSet", "build_training_set", "spark_training_set"]

TrainingSet = tuple[dict[pd.Timestamp, pd.DataFrame], dict[tuple[pd.Timestamp, int], pd.DataFrame]]


def build_training_set(spark: "SparkSession", orders: str | os.PathLike[str], config: Config, as_of: pd.Timestamp,
                       cutoffs: list[pd.Timestamp], horizons: list[int],
                       customers: str | os.PathLike[str] | None = None, partitions: int | None = None) -> TrainingSet:
    """Features at each of `cutoffs` and labels at each cut-off and horizon, from the orders before `as_of`
    (valid rows only: the driver's intake reports and quarantines the others), ordered by customer_id."""
    if config.features.season:
        raise SparkError("features.season is on: its columns are shop-wide, and Spark tasks see only their "
                         "customers' orders. Train with --engine local.")
    raw_orders = read_source(spark, str(orders), config.orders, "orders", "--orders")
    raw_customers = read_source(spark, str(customers), config.customers, "customers", "--customers") \
        if customers is not None else None
    partitions = partitions or max(spark.sparkContext.defaultParallelism, -(-raw_orders.rows // 100_000))
    with task_errors_explained():
        keyed = partition_sources(spark, raw_orders, raw_customers, config, partitions)
        feature_schema, label_schema = _schemas(config, raw_customers is not None)
        schema = pa.schema([pa.field("_kind", pa.string()), pa.field("_cutoff", pa.string()),
                            pa.field("_horizon", pa.int32()), *feature_schema,
                            *(f for f in label_schema if f.name not in feature_schema.names)])
        result = _run(spark, keyed, schema, config, as_of, cutoffs, horizons)
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
        finally:
            con.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    return features, labels


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


def _run(spark: "SparkSession", keyed: Any, schema: pa.Schema, config: Config, as_of: pd.Timestamp,
         cutoffs: list[pd.Timestamp], horizons: list[int]) -> "DataFrame":
    from pyspark.sql.pandas.types import from_arrow_schema

    engine, labels, scopes = task_engine(config), keyed.labels, keyed.scope_types

    def tagged(table: pa.Table, kind: str, cutoff: pd.Timestamp, horizon: int | None) -> pa.Table:
        n = table.num_rows
        extra = {"_kind": pa.array([kind] * n, pa.string()), "_cutoff": pa.array([str(cutoff)] * n, pa.string()),
                 "_horizon": pa.array([horizon] * n, pa.int32())}
        columns = [extra[f.name] if f.name in extra else table.column(f.name).cast(f.type)
                   if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays(columns, schema=schema)

    @carry_errors
    def task(orders: pa.Table, customers: pa.Table | None) -> pa.Table:
        con, folder = connect(engine), task_folder()
        try:
            open_partition(con, raw_tables(orders), config, raw_tables(customers) if customers is not None else None,
                           labels, scopes, folder / "bad.parquet")
            table = "customers" if customers is not None else None
            con.execute(f"CREATE TEMP TABLE _history AS SELECT * FROM orders WHERE order_ts < TIMESTAMP '{as_of}'")
            parts = [tagged(build_relation(con, "_history", c, config, table).to_arrow_table(), "features", c, None)
                     for c in cutoffs]
            parts += [tagged(labels_relation(con, "_history", c, h, config).to_arrow_table(), "labels", c, h)
                      for c in cutoffs for h in horizons]
            return pa.concat_tables(parts)
        finally:
            con.close()
            shutil.rmtree(folder, ignore_errors=True)

    spark_schema = from_arrow_schema(schema)
    if keyed.customers is not None:
        grouped = keyed.orders.groupBy("_part").cogroup(keyed.customers.groupBy("_part"))
        result = grouped.applyInArrow(lambda key, o, c: task(o, c), spark_schema)
    else:
        result = keyed.orders.groupBy("_part").applyInArrow(lambda key, o: task(o, None), spark_schema)
    return result


def _frame(con: duckdb.DuckDBPyConnection, kind: str, cutoff: pd.Timestamp, horizon: int | None,
           columns: list[str]) -> pd.DataFrame:
    """One cut-off's rows as the embedded store's DuckDB query hands them to pandas, ordered by customer_id."""
    selected = ", ".join(repr_ident(c) for c in columns)
    where = "_kind = ? AND _cutoff = ?" + (" AND _horizon = ?" if horizon is not None else "")
    params = [kind, str(cutoff)] + ([horizon] if horizon is not None else [])
    return con.execute(f"SELECT {selected} FROM _rows WHERE {where} ORDER BY customer_id", params).df()


class SparkCutoffStore(CutoffStore):
    """A CutoffStore whose features and labels were built on Spark; any other cut-off falls back to the
    driver's connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, config: Config, customers: str | None,
                 built: TrainingSet) -> None:
        super().__init__(con, source, config, customers)
        self._built_features, self._built_labels = built

    def feature_frame(self, cutoff: pd.Timestamp) -> pd.DataFrame:
        """The Spark-built rows at `cutoff` (a copy: the store adds columns to it)."""
        frame = self._built_features.get(cutoff)
        return frame.copy() if frame is not None else super().feature_frame(cutoff)

    def label_frame(self, cutoff: pd.Timestamp, horizon_days: int) -> pd.DataFrame:
        """The Spark-built labels at `cutoff` for `horizon_days`."""
        frame = self._built_labels.get((cutoff, horizon_days))
        return frame.copy() if frame is not None else super().label_frame(cutoff, horizon_days)


def spark_training_set(orders: str | os.PathLike[str], customers: str | os.PathLike[str] | None = None,
                       master: str | None = None, partitions: int | None = None,
                       spark: "SparkSession | None" = None) -> Any:
    """A `training_set` for `training.pipeline.fit_bundle`: every cut-off the targets plan (and as_of itself)
    built on Spark, served by a SparkCutoffStore."""

    def factory(con: duckdb.DuckDBPyConnection, source: str, config: Config, table: str | None,
                as_of: pd.Timestamp, first_order: pd.Timestamp) -> CutoffStore:
        cutoffs = sorted({as_of, *(c for t in targets(config) for c in plan_cutoffs(as_of, t.horizon_days,
                                                                                     first_order, config, t.name))})
        horizons = sorted({t.horizon_days for t in targets(config)})
        built = build_training_set(spark or session(master), orders, config, as_of, cutoffs, horizons,
                                   customers if table is not None else None, partitions)
        return SparkCutoffStore(con, source, config, table, built)

    return factory
