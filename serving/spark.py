"""Batch scoring on Spark (`lifetag score --engine spark`): the embedded batch's per-partition work, run
in Spark tasks.

Spark reads the orders (and the customers table), brings each customer's rows to one hash partition of
the customer id (features.spark), and every partition runs what a partition of the embedded batch runs:
intake's rules (`features.intake.open_partition`), then `serving.scoring.tag_customers` (feature SQL in
DuckDB, `serving.tags.tag_rows`). The bundle is loaded once on the driver and broadcast. The output is a
folder of Parquet part files, written beside the target and put in place only when the job succeeded.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from configs.schema import Config, ConfigError, EngineConfig
from features.behaviour import as_timestamp, unmatched_customers
from features.clusters import ClusterModel
from features.engine import connect, repr_ident
from features.intake import ORDER_FIELDS, Intake, customer_fields, empty_view, open_partition
from features.output import OutputError
from features.paths import customers_quarantine
from features.scenarios import tag_inputs_relation
from features.spark import (PartitionedSources, carry_errors, check_bad_rows, merged_report, partition_sources,
                            quarantine_ipc, raw_tables, read_source, remove_stale_folders, replace_folder,
                            require_first_order_before, session, task_engine, task_errors_explained, task_folder)
from serving.bundle import Bundle, load_model
from serving.scoring import ScoreResult, ScoringError, one_run_per_output, score_notes, summaries, tag_customers
from serving.tags import OUTPUT_DOCS, check_feature_columns, check_scenarios, scenario_columns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["score_on_spark", "tag_schema"]

_EXTRAS = {"_report": pa.string(), "_bad_orders": pa.binary(), "_bad_customers": pa.binary()}
Progress = Callable[[str, int], Callable[[int], None]]


def score_on_spark(
    orders: str | os.PathLike[str], as_of: str | pd.Timestamp, out: str | os.PathLike[str], config: Config,
    model_uri: str | None = None, quarantine: str | os.PathLike[str] | None = None, partitions: int | None = None,
    progress: Progress | None = None, bundle: Bundle | None = None, model_version: str | None = None,
    customers: str | os.PathLike[str] | None = None, master: str | None = None,
    spark: "SparkSession | None" = None, clusters: bool = False,
) -> ScoreResult:
    """`serving.scoring.score` on Spark: the same rows, written as a folder of Parquet part files at `out`.

    `partitions`: customer hash partitions (default: one per ~100,000 order lines, at least Spark's
    default parallelism); each is one task's work, held in memory at once.
    """
    target = str(out)
    if Path(target).suffix.lower() in (".csv",) or "::" in target:
        raise OutputError(f"{out}: --engine spark writes a folder of Parquet part files; name the output "
                          "e.g. tags.parquet or tags/ (a URI such as hdfs:///shop/tags on a cluster).")
    if partitions is not None and partitions < 1:
        raise ScoringError(f"--partitions must be at least 1, got {partitions}.")
    if config.features.season:
        raise ConfigError("features.season is on: its columns are shop-wide, and Spark tasks see only their "
                          "customers' orders. Score this model with --engine local.")
    if bundle is None:
        bundle, model_version = load_model(model_uri)
    cluster_model = bundle.cluster_model() if clusters else None  # the model's own, as in the embedded batch
    if bundle.rebuy_days is None:
        raise ScoringError(f"the model (as_of {bundle.as_of}) was saved by an older lifetag without the category "
                           "re-buy intervals, which Spark tasks cannot learn from their own customers. Retrain it "
                           "with `lifetag train`, or score it with --engine local.")
    local = "://" not in target
    lock = one_run_per_output(out) if local else _no_lock()
    with lock:
        if local:
            remove_stale_folders(target)
        spark = spark or session(master)
        with task_errors_explained():
            return _score(spark, orders, as_timestamp(as_of), target, config, quarantine, partitions, bundle,
                          model_version or "", customers, cluster_model)


class _no_lock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _score(spark: "SparkSession", orders: str | os.PathLike[str], as_of: pd.Timestamp, out: str, config: Config,
           quarantine: str | os.PathLike[str] | None, partitions: int | None, bundle: Bundle, model_version: str,
           customers: str | os.PathLike[str] | None, clusters: "ClusterModel | None" = None) -> ScoreResult:
    raw_orders = read_source(spark, str(orders), config.orders, "orders", "--orders")
    raw_customers = read_source(spark, str(customers), config.customers, "customers", "--customers") \
        if customers is not None else None
    partitions = partitions or max(spark.sparkContext.defaultParallelism, -(-raw_orders.rows // 100_000))
    keyed = partition_sources(spark, raw_orders, raw_customers, config, partitions)
    schema = tag_schema(config, bundle, raw_customers is not None)
    if clusters is not None:
        # As the embedded batch adds them after the scenario tags (features.clusters.ClusterModel.columns).
        schema = pa.schema([*schema, pa.field("cluster", pa.int64()), pa.field("cluster_description", pa.string())])
    result = _tag_partitions(spark, keyed, schema, config, bundle, model_version, as_of, clusters)
    from pyspark import StorageLevel

    result = result.persist(StorageLevel.DISK_ONLY)
    try:
        reports = result.where("_report IS NOT NULL").select(*_EXTRAS).collect()
        sources, first_order, counts = _merge_reports(reports, keyed)
        check_bad_rows(sources, reports, quarantine, keyed.labels)
        require_first_order_before(first_order, as_of, str(orders))
        if not counts["buyers"]:
            raise ScoringError(f"{orders}: no customer has a purchase before as_of {as_of.date()}, so there "
                               "is nothing to score; check --as-of against the dates in the orders.")
        tags = result.where("_report IS NULL").drop(*_EXTRAS)
        replace_folder(spark, lambda path: tags.sortWithinPartitions("customer_id").write.parquet(path), out)
    finally:
        result.unpersist()
    by_segment, by_stage, scenario_counts = _summaries(out, config)
    notes = score_notes(sources, bundle, raw_customers is not None, counts["unmatched"])
    return ScoreResult(out, counts["buyers"] + counts["registered"], model_version, sources.orders, by_segment,
                       by_stage, scenario_counts, sources.customers, counts["registered"], counts["unmatched"], notes,
                       counts["seconds"])


def tag_schema(config: Config, bundle: Bundle, has_customers: bool) -> pa.Schema:
    """The output columns and their types, as the embedded batch writes them; checks, as it does, that the
    features can feed the bundle and that the scenario expressions are conditions over the scored columns."""
    con = connect(EngineConfig())
    try:
        for view, fields in (("orders", ORDER_FIELDS), ("customers", customer_fields(config))):
            empty_view(con, view, fields)
        table = "customers" if has_customers else None
        inputs = tag_inputs_relation(con, "orders", pd.Timestamp("2000-01-01"), config, bundle.rebuy_days or {}, table)
        check_feature_columns(inputs.columns, bundle, has_customers=has_customers)
        typed = scenario_columns(zip(inputs.columns, map(str, inputs.types)))
        check_scenarios(config.scoring.scenarios, typed)
        names = [*OUTPUT_DOCS, *(a for a in config.customers.attributes if a in inputs.columns)]
        casts = [f"CAST(NULL AS {typed[n]}) AS {repr_ident(n)}" for n in names]
        casts += [f"false AS {repr_ident(n)}" for n in config.scoring.scenarios]
        schema = con.sql(f"SELECT {', '.join(casts)}").to_arrow_table().schema
    finally:
        con.close()
    # Integer scores as the batch writes them (pandas' Int8), and plain field names without DuckDB's metadata.
    return pa.schema([pa.field(f.name, pa.int8() if f.name in ("rfm_r", "rfm_f", "rfm_m") else f.type)
                      for f in schema])


def _tag_partitions(spark: "SparkSession", keyed: PartitionedSources, schema: pa.Schema, config: Config,
                    bundle: Bundle, model_version: str, as_of: pd.Timestamp,
                    clusters: "ClusterModel | None" = None) -> "DataFrame":
    """One task per customer partition: intake, tag inputs and tags, plus one report row of the partition."""
    from pyspark.sql.pandas.types import from_arrow_schema

    out_schema = pa.schema([*schema, *(pa.field(n, t) for n, t in _EXTRAS.items())])
    shared = spark.sparkContext.broadcast(bundle)
    engine, labels, scopes = task_engine(config), keyed.labels, keyed.scope_types
    has_customers, batch = keyed.customers is not None, config.scoring.batch_customers

    @carry_errors
    def task(orders: pa.Table, customers: pa.Table | None) -> pa.Table:
        began = time.perf_counter()
        con, folder = connect(engine), task_folder()
        try:
            bad = folder / "bad.parquet"
            sources = open_partition(con, raw_tables(orders), config,
                                     raw_tables(customers) if customers is not None else None, labels, scopes, bad)
            table = "customers" if customers is not None else None
            parts, counts = [], {"buyers": 0, "registered": 0}
            for kind, rows in tag_customers(con, "orders", table, as_of, config, shared.value, model_version,
                                            bundle.rebuy_days or {}, batch, clusters=clusters):
                counts[kind] += len(rows)
                parts.append(_arrow_rows(rows, out_schema))
            first = con.execute("SELECT min(order_ts) FROM orders").fetchall()[0][0]
            counts["unmatched"] = unmatched_customers(con, "orders", table, as_of, config) if table else 0
            report = {"orders": dataclasses.asdict(sources.orders), "first_order": str(first) if first else None,
                      "customers": dataclasses.asdict(sources.customers) if sources.customers else None, **counts,
                      "seconds": time.perf_counter() - began}
            extras = {"_report": [json.dumps(report)], "_bad_orders": [quarantine_ipc(bad)],
                      "_bad_customers": [quarantine_ipc(customers_quarantine(bad))]}
            row = pa.table({f.name: pa.array(extras.get(f.name, [None]), f.type) for f in out_schema})
            return pa.concat_tables([*parts, row])
        finally:
            con.close()
            shutil.rmtree(folder, ignore_errors=True)

    spark_schema = from_arrow_schema(out_schema)
    if has_customers:
        grouped = keyed.orders.groupBy("_part").cogroup(keyed.customers.groupBy("_part"))
        return grouped.applyInArrow(lambda key, o, c: task(o, c), spark_schema)
    return keyed.orders.groupBy("_part").applyInArrow(lambda key, o: task(o, None), spark_schema)


def _arrow_rows(rows: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Tag rows in the output's columns and types (the report columns empty)."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    columns = [table.column(f.name).cast(f.type) if f.name in table.column_names
               else pa.nulls(len(rows), f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


# ---------------------------------------------------------------------------------------------
# The partitions' reports, added up


def _merge_reports(rows: list[Any], keyed: PartitionedSources) -> tuple[Intake, str | None, dict[str, Any]]:
    reports = [json.loads(r["_report"]) for r in rows]
    labels, orders_problems, customers_problems = keyed.labels, *keyed.problem_orders
    orders = merged_report([r["orders"] for r in reports], labels[0], orders_problems)
    customers = merged_report([r["customers"] for r in reports if r["customers"]], labels[1], customers_problems) \
        if keyed.customers is not None else None
    firsts = [r["first_order"] for r in reports if r["first_order"]]
    counts = {k: sum(int(r[k]) for r in reports) for k in ("buyers", "registered", "unmatched")}
    counts["seconds"] = [float(r["seconds"]) for r in reports]
    return Intake(orders, customers), min(firsts) if firsts else None, counts


def _summaries(out: str, config: Config) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """The batch's closing tables, read back from the part files (a local output; empty for a URI)."""
    if "://" in out and not out.startswith("file:"):
        return pd.DataFrame(), pd.DataFrame(), {}
    folder = out.removeprefix("file:")
    con = connect(EngineConfig())
    try:
        return summaries(con, os.path.join(folder, "*.parquet"), "parquet", config)
    finally:
        con.close()
