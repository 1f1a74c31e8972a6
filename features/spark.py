"""Spark for lifetag: a session, the sources read as raw rows numbered as intake numbers them (local CSV,
whitespace exports and DuckDB databases by intake's own reading, in tasks), and every customer's rows brought
to one hash partition of the customer id as intake reads it; the partitions' intake reports added up.

Spark only moves rows. Everything that decides a value runs the embedded engine's own code in DuckDB
inside each task: the intake rules (`features.intake.partition_keys` / `open_partition`), the feature and
label SQL and the tag function. So there is no second definition of any feature, rule or tag.

How the rows are numbered on Spark (for reports and `--quarantine`'s `source_row`): as intake numbers a
file or folder, from 1 in the order of the sorted files and of the rows in each file; the row numbers of
a catalog table follow Spark's read order.
"""
from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.errors import LifetagError
from configs.schema import Config, EngineConfig, SourceConfig
from features.engine import connect
from features.behaviour import require_orders_before
from features.intake import (Intake, IntakeError, IntakeReport, Problem, bad_rows_error, combine_scope_stats,
                             header_mismatch,
                             needs_scope_types, partition_keys, problem_order, raw_columns, read_part, scope_stats,
                             scope_types_from, source_files, source_parts)
from features.output import write_relation
from features.paths import DUCKDB_SUFFIXES, customers_quarantine

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = [
    "INSTALL", "KEYS", "PartitionedSources", "RawSource", "SparkError", "carry_errors", "check_bad_rows",
    "merged_problems", "merged_report", "partition_sources", "quarantine_ipc", "raw_tables", "read_source",
    "remove_stale_folders", "replace_folder", "require_first_order_before", "session", "task_engine",
    "task_errors_explained", "task_folder",
]

INSTALL = "pip install 'lifetag[spark]' (in a checkout: pip install '.[spark]')"
KEYS = ("_cid", "_oid", "_valid", "_part")  # what partition_keys adds to the raw rows
_HELPERS = ("_lifetag_file", "_lifetag_block", "_lifetag_mono")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){0,2}")


class SparkError(LifetagError):
    """Spark cannot run the job as asked (PySpark or Java missing, a source Spark cannot read)."""


def _pyspark() -> Any:
    try:
        import pyspark
    except ImportError:
        raise SparkError(f"--engine spark needs PySpark, which is not installed: {INSTALL}.") from None
    return pyspark


def session(master: str | None = None, shuffle_partitions: int | None = None) -> "SparkSession":
    """The Spark session: the one spark-submit started, or a new one on `master` (default local[*]).

    Timestamps are UTC, as everywhere in lifetag; Python workers run this interpreter when Spark runs
    locally (a cluster sets spark.pyspark.python itself).
    """
    _pyspark()
    # PySpark 4.3 warns about pandas 3 wherever it checks the pandas version; lifetag hands Spark Arrow
    # tables only (mapInArrow, applyInArrow), never pandas frames, and the tests run on pandas 3.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    from pyspark.sql import SparkSession

    if master is None and SparkSession.getActiveSession() is not None:
        spark = SparkSession.getActiveSession()
    else:
        # Started by spark-submit: its master and settings hold, nothing is set here.
        submitted = master is None and bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
        if not submitted and shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise SparkError("--engine spark needs Java 17 (Spark runs on the JVM) and there is no `java` here: "
                             "install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME.")
        builder = SparkSession.builder.appName("lifetag")
        local = not submitted and (master is None or master.startswith("local"))
        if not submitted:
            builder = builder.master(master or "local[*]")
        if local:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
        if local and not shuffle_partitions:
            # Spark's default of 200 shuffle partitions is for clusters; on one machine a few per core do.
            cores = re.fullmatch(r"local\[(\d+)(,\d+)?\]", master or "")
            shuffle_partitions = 2 * (int(cores.group(1)) if cores else os.cpu_count() or 1)
        if shuffle_partitions:
            builder = builder.config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    return spark


# ---------------------------------------------------------------------------------------------
# Errors of tasks: a LifetagError raised in a task reaches the driver as the same one-paragraph error


_MARK = "LIFETAG-ERROR["


def carry_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a task function (one that returns, or an iterator) so that a LifetagError it raises crosses to
    the driver intact; `task_errors_explained` raises it there again."""

    def carried(exc: LifetagError) -> RuntimeError:
        payload = json.dumps({"type": type(exc).__name__, "message": str(exc)})
        return RuntimeError(_MARK + base64.b64encode(payload.encode()).decode() + "]")

    @functools.wraps(function)
    def wrapper(*args: Any) -> Any:
        try:
            result = function(*args)
        except LifetagError as exc:
            raise carried(exc) from None
        if not isinstance(result, Iterator):
            return result

        def iterate() -> Iterator[Any]:
            try:
                yield from result
            except LifetagError as exc:
                raise carried(exc) from None

        return iterate()

    return wrapper


def _error_classes() -> dict[str, type[LifetagError]]:
    found, todo = {}, [LifetagError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


@contextmanager
def task_errors_explained() -> Iterator[None]:
    """Raise a LifetagError that a task raised (carry_errors) as itself, without Spark's traceback."""
    try:
        yield
    except LifetagError:
        raise
    except Exception as exc:  # Py4JJavaError, PythonException: the task's error is inside their text
        found = re.search(re.escape(_MARK) + r"([A-Za-z0-9+/=]+)\]", str(exc))
        if found is None:
            raise
        payload = json.loads(base64.b64decode(found.group(1)))
        cls = _error_classes().get(payload["type"], LifetagError)
        raise cls(payload["message"]) from None


def task_engine(config: Config) -> EngineConfig:
    """DuckDB inside a task: one thread (Spark runs a task per core), the configured memory limit."""
    return config.engine.model_copy(update={"threads": 1})


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass
class RawSource:
    """One source as Spark reads it: the raw rows (source columns, `_row`, `filename` for a folder)."""

    df: "DataFrame"
    label: str  # how reports name it: the path or table name as given
    kind: str  # orders / customers
    rows: int


def read_source(spark: "SparkSession", source: str, cfg: SourceConfig, kind: str, option: str) -> RawSource:
    """Read `source` (a Parquet or CSV file or folder, a whitespace-separated export, a DuckDB database, local or
    a URI Spark reads, or a catalog table name) as raw rows numbered as intake numbers them; IntakeError for
    what intake refuses too."""
    label = str(source)
    local = Path(source)
    is_database = any(label.endswith(s) or (s + ":") in label for s in DUCKDB_SUFFIXES)
    order: dict[str, int] | None
    if _SCHEME.match(label) and not is_database and _remote_text_file(label, cfg):
        # A CSV file (or whitespace export) on another file system: copied whole into the task that reads it
        # with intake's own reading, for the same line diagnoses and errors as a local file.
        df, order = _read_remote_text(spark, label, cfg, kind, option)
        folder = False
    elif _SCHEME.match(label) and not is_database:
        # Parquet (a file or a folder) on another file system: Spark's own reader.
        df, folder, order = _with_helpers(_read_parquet(spark, [label], not label.lower().endswith(".parquet"))), None, None
    elif is_database or local.exists():
        files = source_files(local) if not is_database else []
        if is_database or files[0].suffix.lower() != ".parquet":
            df, order = _read_parts(spark, label, cfg, kind, option)
            folder = False  # intake's own reading adds `filename` for a folder's files
        else:
            df = _with_helpers(_read_parquet(spark, [f.as_uri() for f in files], False))
            folder, order = local.is_dir(), {str(f): i for i, f in enumerate(files)}
    elif _TABLE_NAME.fullmatch(label) and spark.catalog.tableExists(label):
        df, folder, order = _with_helpers(spark.table(label)), None, None
    else:
        raise IntakeError(f"{label}: cannot read the {kind}: no such file or folder, nor a table of the Spark catalog. "
                          f"Check the path passed to {option}.")
    with task_errors_explained():
        df, rows = _numbered(spark, df, order, keep_filename=bool(folder))
    if not rows:
        raise IntakeError(f"{label}: the source has no rows. Check that it is the right file and that it was fully written.")
    return RawSource(df, label, kind, rows)


def _read_parts(spark: "SparkSession", source: str, cfg: SourceConfig, kind: str,
                option: str) -> tuple["DataFrame", dict[str, int]]:
    """A local CSV source (a file, a folder of files, a whitespace-separated export) or DuckDB database read
    in Spark tasks by intake's own reading (`features.intake.read_part`, DuckDB locked to the source), a task
    per part: the same columns, the same line-level diagnoses and errors, rows numbered within each part."""
    parts = source_parts(source, cfg)
    names = [str(part[0]) if part else source for part in parts]

    def read(index: int, con: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
        return read_part(con, source, cfg, kind, option, parts[index])

    def named(index: int) -> tuple[str, list[Path]]:
        return names[index], parts[index] or [Path(source)]

    items = spark.range(0, len(parts), 1, len(parts))
    df = _read_in_tasks(items, "id", read, named, names[0], f"{source}: cannot read the {kind}: it has no parts.")
    return df, {name: i for i, name in enumerate(names)}


def _remote_text_file(uri: str, cfg: SourceConfig) -> bool:
    """Whether `uri` names one CSV file (or a whitespace-separated export) rather than Parquet."""
    name = uri.lower().rstrip("/")
    return name.endswith((".csv", ".txt", ".tsv")) or (cfg.delimiter == "whitespace" and not name.endswith(".parquet"))


def _read_remote_text(spark: "SparkSession", uri: str, cfg: SourceConfig, kind: str,
                      option: str) -> tuple["DataFrame", dict[str, int]]:
    """A CSV file on another file system (a URI Spark reads) read as `_read_parts` reads a local one: Spark
    fetches its bytes (`binaryFile`) into one task, which writes them to its own disk and reads them with
    intake's own reading; errors name the URI. The whole file is one task (Spark's limit: 2 GB a file)."""
    try:
        files = spark.read.format("binaryFile").load(uri)
        files.schema  # noqa: B018 - resolving the source is what finds a missing path
    except Exception as exc:  # AnalysisException: the path does not exist, or cannot be listed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IntakeError(f"{uri}: cannot read the {kind} ({first}). Check the path passed to {option}.") from None

    def read_copy(content: bytes, con: duckdb.DuckDBPyConnection) -> Iterator[pa.RecordBatch]:
        folder = task_folder()
        copy = folder / (Path(urlparse(uri).path).name or "source.csv")
        try:
            copy.write_bytes(content)
            try:
                yield from read_part(con, copy, cfg, kind, option, [copy])
            except IntakeError as exc:
                raise IntakeError(str(exc).replace(str(copy), uri)) from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    df = _read_in_tasks(files.select("content"), "content", read_copy, lambda _: (uri, [Path(uri)]), uri,
                        f"{uri}: cannot read the {kind}: no such file. Check the path passed to {option}.")
    return df, {uri: 0}


def _read_in_tasks(items: "DataFrame", column: str,
                   read: Callable[[Any, duckdb.DuckDBPyConnection], Iterator[pa.RecordBatch]],
                   named: Callable[[Any], tuple[str, list[Path]]], first_name: str, missing: str) -> "DataFrame":
    """Raw rows read in Spark tasks, one item of `items` (its `column`) at a time: `read(item, con)` gives the
    item's Arrow batches (intake's own reading, on a fresh one-thread DuckDB), `named(item)` the name rows are
    numbered under and the files a header error names. The columns come from the first item in a one-task
    job first (`missing`: the IntakeError when there is none), so the driver itself opens no file."""
    from pyspark.sql.pandas.types import from_arrow_schema

    engine = EngineConfig(threads=1)

    @carry_errors
    def first_schema(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if not batch.num_rows:
                continue
            con = connect(engine)
            try:
                schema = next(read(batch.column(column)[0].as_py(), con)).schema
            finally:
                con.close()
            yield pa.record_batch({"schema": [schema.serialize().to_pybytes()]})

    with task_errors_explained():
        found = items.limit(1).mapInArrow(first_schema, "schema binary").collect()
    if not found:
        raise IntakeError(missing)
    source_schema = pa.ipc.read_schema(pa.py_buffer(found[0]["schema"]))
    schema = pa.schema([*(f for f in source_schema if f.name != "_row"), pa.field("_lifetag_file", pa.string()),
                        pa.field("_lifetag_block", pa.int64()), pa.field("_lifetag_mono", pa.int64())])

    @carry_errors
    def rows(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for item in batch.column(column).to_pylist():
                name, files = named(item)
                con = connect(engine)
                try:
                    for part in read(item, con):
                        yield _part_batch(part, schema, name, files, first_name)
                finally:
                    con.close()

    return items.mapInArrow(rows, from_arrow_schema(schema))


def _part_batch(batch: pa.RecordBatch, schema: pa.Schema, name: str, files: list[Path],
                first: Path | str) -> pa.RecordBatch:
    """A batch of a part in the columns its first part showed, with the numbering helpers; a file whose header
    names other columns than the first file's is refused, as a folder must be one table."""
    columns = [f.name for f in schema if not f.name.startswith("_lifetag_")]
    error = header_mismatch(first, columns, files[0], [n for n in batch.schema.names if n != "_row"])
    if error is not None:
        raise error
    n = batch.num_rows
    helpers = {"_lifetag_file": pa.array([name] * n, pa.string()), "_lifetag_block": pa.array([0] * n, pa.int64()),
               "_lifetag_mono": batch.column("_row").cast(pa.int64())}
    return pa.RecordBatch.from_arrays([helpers[f.name] if f.name in helpers else batch.column(f.name).cast(f.type)
                                       for f in schema], schema=schema)


def _read_parquet(spark: "SparkSession", paths: list[str], folder: bool) -> "DataFrame":
    """Parquet files (or every Parquet file under a folder) read by Spark's own reader."""
    reader = spark.read
    if folder:
        reader = reader.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet")
    return reader.parquet(*paths)


def _local_path(uri: str) -> str:
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme in ("", "file") else uri


def _with_helpers(df: "DataFrame") -> "DataFrame":
    """`df` with the columns `_numbered` counts rows by: the file, the split of it, and a monotonically
    increasing id (rows of one split are read one after another, so within a split it counts them)."""
    from pyspark.sql import functions as F

    try:
        df.select("_metadata.file_path", "_metadata.file_block_start").schema
        file_col, block_col = F.col("_metadata.file_path"), F.col("_metadata.file_block_start")
    except Exception:  # a table that is not read from files
        file_col, block_col = F.lit(""), F.spark_partition_id().cast("long")
    return (df.withColumn("_lifetag_file", file_col).withColumn("_lifetag_block", block_col)
            .withColumn("_lifetag_mono", F.monotonically_increasing_id()))


def _numbered(spark: "SparkSession", df: "DataFrame", order: dict[str, int] | None,
              keep_filename: bool) -> tuple["DataFrame", int]:
    """`df` (with `_with_helpers`' columns) with `_row`: 1, 2, ... in file order (`order`: local file -> rank;
    else by name) and row order; the splits' sizes (one small aggregation) give where each split starts."""
    from pyspark.sql import functions as F

    chunks = (df.groupBy("_lifetag_file", "_lifetag_block")
              .agg(F.count(F.lit(1)).alias("n"), F.min("_lifetag_mono").alias("first")).collect())

    def rank(row: Any) -> tuple[Any, ...]:
        path = _local_path(row["_lifetag_file"])
        return (order.get(path, len(order)) if order else 0, Path(path) if order else path, row["_lifetag_block"])

    offsets, start = [], 0
    for row in sorted(chunks, key=rank):
        offsets.append((row["_lifetag_file"], row["_lifetag_block"], start - row["first"] + 1))
        start += row["n"]
    table = spark.createDataFrame(offsets, "_lifetag_file string, _lifetag_block long, _lifetag_offset long")
    numbered = (df.join(F.broadcast(table), ["_lifetag_file", "_lifetag_block"])
                .withColumn("_row", F.col("_lifetag_mono") + F.col("_lifetag_offset")))
    if keep_filename:
        path_of = F.udf(lambda uri: _local_path(uri), "string")
        numbered = numbered.withColumn("filename", path_of(F.col("_lifetag_file")))
    return numbered.drop(*_HELPERS, "_lifetag_offset"), start


# ---------------------------------------------------------------------------------------------
# Partitioning: every customer's rows in one partition


@dataclass
class PartitionedSources:
    """The sources keyed for grouping by `_part`, with what each task needs to validate its rows alike."""

    orders: "DataFrame"
    customers: "DataFrame | None"
    labels: tuple[str, str]
    scope_types: tuple[dict[str, str] | None, dict[str, str] | None]
    partitions: int
    rows: tuple[int, int]
    problem_orders: tuple[list[tuple[str, str]], list[tuple[str, str]]]  # intake.problem_order of each source


def partition_sources(spark: "SparkSession", orders: RawSource, customers: RawSource | None, config: Config,
                      partitions: int) -> PartitionedSources:
    """Key both sources by the customer id as intake reads it, and send the lines of an order that names two
    customers to one partition, where intake sees the whole order and refuses it as a file run does."""
    scopes = (_scope_types(orders, config), _scope_types(customers, config) if customers else None)
    keyed_orders = _route_orders_across_customers(spark, _keyed(orders, config, scopes[0], partitions), partitions)
    keyed_customers = _keyed(customers, config, scopes[1], partitions) if customers else None
    labels = (orders.label, customers.label if customers else "customers")
    con = connect(EngineConfig())
    try:
        orders_problems = problem_order(con, "orders", _arrow_schema(orders.df), config, scopes[0])
        customers_problems = problem_order(con, "customers", _arrow_schema(customers.df), config, scopes[1]) \
            if customers else []
    finally:
        con.close()
    return PartitionedSources(keyed_orders, keyed_customers, labels, scopes, partitions,
                              (orders.rows, customers.rows if customers else 0), (orders_problems, customers_problems))


def _arrow_schema(df: "DataFrame") -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


def _scope_types(raw: RawSource, config: Config) -> dict[str, str] | None:
    """The source's column types as mapping expressions see them, from every row (None: no expression)."""
    schema = _arrow_schema(raw.df)
    types = raw_columns(schema)
    if not needs_scope_types(raw.kind, types, config):
        return None
    engine = task_engine(config)

    @carry_errors
    def stats(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        con = connect(engine)
        try:
            table = pa.Table.from_batches(list(batches), schema=schema)
            yield pa.record_batch({"stats": [json.dumps(scope_stats(con, table))]})
        finally:
            con.close()

    with task_errors_explained():
        parts = [json.loads(r["stats"]) for r in raw.df.mapInArrow(stats, "stats string").collect()]
    return scope_types_from(types, combine_scope_stats([{c: tuple(v) for c, v in p.items()} for p in parts]))


def _keyed(raw: RawSource, config: Config, scope: dict[str, str] | None, partitions: int) -> "DataFrame":
    """The raw rows with intake's `_cid`, `_oid`, `_valid` and `_part` (features.intake.partition_keys)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = _arrow_schema(raw.df)
    con = connect(EngineConfig())
    try:
        # On the driver, over no rows: a missing column or a bad expression stops the job before it starts.
        keyed_schema = partition_keys(con, raw.kind, schema.empty_table(), config, raw.label, scope, partitions).schema
    finally:
        con.close()
    out_schema = pa.schema([*schema, *(keyed_schema.field(k) for k in KEYS)])
    engine, kind, label = task_engine(config), raw.kind, raw.label

    @carry_errors
    def keys(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(batches), schema=schema)
        if not table.num_rows:
            return
        con = connect(engine)
        try:
            keyed = partition_keys(con, kind, table, config, label, scope, partitions)
        finally:
            con.close()
        yield from keyed.select(out_schema.names).cast(out_schema).to_batches()

    return raw.df.mapInArrow(keys, from_arrow_schema(out_schema))


def _route_orders_across_customers(spark: "SparkSession", keyed: "DataFrame", partitions: int) -> "DataFrame":
    """Lines of an order whose valid lines name two customers all go to the partition of the first of them."""
    from pyspark.sql import functions as F

    with task_errors_explained():
        split = (keyed.where("_valid AND _oid IS NOT NULL AND _cid IS NOT NULL").groupBy("_oid")
                 .agg(F.min("_cid").alias("first"), F.max("_cid").alias("last")).where("first <> last")
                 .select("_oid", "first").collect())
    if not split:
        return keyed
    con = duckdb.connect(":memory:")
    try:
        con.register("_split", pa.table({"_oid": [r["_oid"] for r in split], "first": [r["first"] for r in split]}))
        routed = con.execute(f"SELECT _oid, CAST(hash(first) % {int(partitions)} AS INTEGER) AS _route FROM _split"
                             ).fetchall()
    finally:
        con.close()
    table = spark.createDataFrame(routed, "_oid string, _route int")
    return (keyed.join(F.broadcast(table), "_oid", "left")
            .withColumn("_part", F.coalesce(F.col("_route"), F.col("_part"))).drop("_route"))


def raw_tables(table: pa.Table) -> pa.Table:
    """A task's rows without the partitioning keys: what intake validates."""
    return table.drop_columns([k for k in KEYS if k in table.column_names])


# ---------------------------------------------------------------------------------------------
# The partitions' intake reports and quarantined rows, added up


def quarantine_ipc(path: Path) -> bytes | None:
    """A task's quarantined rows as Arrow IPC bytes (types kept), or None when it had none."""
    if not path.exists():
        return None
    sink = pa.BufferOutputStream()
    table = pq.read_table(path)
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def merged_report(parts: list[dict[str, Any]], label: str, order: list[tuple[str, str]]) -> IntakeReport:
    """One source's report from its partitions' reports: counts added, the widest spread, examples of the
    first rows of each problem, the optional fields and columns as the partitions with rows saw them."""
    report = IntakeReport(source=label)
    for name in ("rows_read", "rows_quarantined", "duplicates_merged", "lines_repeated", "rows_dropped",
                 "orders_spread", "ids_trimmed", "lines_without_status"):
        setattr(report, name, sum(int(p[name]) for p in parts))
    report.spread_seconds = max([float(p["spread_seconds"]) for p in parts], default=0.0)
    read = [p for p in parts if p["rows_read"]] or parts
    report.missing_optional = list(read[0]["missing_optional"]) if read else []
    report.ignored_columns = list(read[0]["ignored_columns"]) if read else []
    report.problems = merged_problems([p["problems"] for p in parts], order)
    return report


def merged_problems(lists: list[list[dict[str, Any]]], order: list[tuple[str, str]]) -> list[Problem]:
    """Problems of all partitions by kind (check and column), in the order intake lists them (`order`)."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for problems in lists:
        for problem in problems:
            found.setdefault((problem["check"], problem["column"]), []).append(problem)
    merged = []
    for key in sorted(found, key=lambda k: order.index(k) if k in order else len(order)):
        examples = sorted((tuple(e) for p in found[key] for e in p["examples"]), key=lambda e: e[0])
        merged.append(Problem(check=key[0], column=key[1], count=sum(int(p["count"]) for p in found[key]),
                              examples=tuple((int(r), v) for r, v in examples[:3])))
    return merged


def check_bad_rows(sources: Intake, rows: list[Any], quarantine: str | os.PathLike[str] | None,
                    labels: tuple[str, str]) -> None:
    """Stop with intake's one paragraph, or write the bad rows to --quarantine (customers' beside it)."""
    reports = [(sources.orders, "_bad_orders", quarantine)]
    if sources.customers is not None:
        reports.append((sources.customers, "_bad_customers",
                        customers_quarantine(quarantine) if quarantine is not None else None))
    for report, column, path in reports:
        if not report.rows_quarantined:
            continue
        if path is None:
            raise bad_rows_error(report.source, report.problems)
        _write_quarantine([r[column] for r in rows if r[column] is not None], Path(path))
        report.quarantine_path = str(path)


def _write_quarantine(chunks: list[bytes], path: Path) -> None:
    tables = [pa.ipc.open_stream(pa.py_buffer(c)).read_all() for c in chunks]
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("_bad", pa.concat_tables(tables, promote_options="permissive"))
        write_relation(con, con.sql("SELECT * FROM _bad ORDER BY source_row"), path)
    finally:
        con.close()


def require_first_order_before(first_order: str | None, as_of: pd.Timestamp, label: str) -> None:
    """The embedded batch's check (features.behaviour.require_orders_before), on the partitions' first orders."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("CREATE TABLE first (order_ts TIMESTAMP)")
        if first_order is not None:
            con.execute("INSERT INTO first VALUES (CAST(? AS TIMESTAMP))", [first_order])
        require_orders_before(con, "first", as_of, label)
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# Output: a folder of Parquet part files, replaced whole


def replace_folder(spark: "SparkSession", write: Callable[[str], None], target: str) -> None:
    """Write a folder with `write(path)` beside `target`, then put it in place: a failed write leaves the
    previous output as it was (works on any file system Spark writes, through Hadoop's FileSystem)."""
    jvm = spark.sparkContext._jvm
    Path_ = jvm.org.apache.hadoop.fs.Path
    final = Path_(target)
    fs = final.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    parent, name = final.getParent(), final.getName()
    token = uuid.uuid4().hex[:12]
    tmp, old = Path_(parent, f".{name}.{token}.sparktmp"), Path_(parent, f".{name}.{token}.sparkold")
    try:
        write(tmp.toString())
        had = fs.exists(final)
        if had and not fs.rename(final, old):
            raise SparkError(f"{target}: cannot move the previous output aside; it is unchanged.")
        if not fs.rename(tmp, final):
            if had:
                fs.rename(old, final)
            raise SparkError(f"{target}: cannot put the new output in place; the previous one is unchanged.")
        if had:
            fs.delete(old, True)
    finally:
        if fs.exists(tmp):
            fs.delete(tmp, True)


def remove_stale_folders(target: str) -> None:
    """A killed run's temporary folders beside a local `target` (call with the output's lock held)."""
    path = Path(target)
    for stale in path.parent.glob(f".{path.name}.*.spark*") if path.parent.is_dir() else []:
        shutil.rmtree(stale, ignore_errors=True)


def task_folder() -> Path:
    """A private temporary folder for one task's files (quarantined rows); remove it when done."""
    return Path(tempfile.mkdtemp(prefix="lifetag-task-"))
