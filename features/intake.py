"""Intake: read an order history (and an optional customers table), map its columns, validate every row.

Each row read is either used or reported: bad rows stop the run with one paragraph naming the file,
column, count and example rows, or (with a quarantine path) are written there with a `reason`.
A mapping value is a source column or a SQL expression over the source columns (`amount:
"Quantity * UnitPrice"`); expressions are checked before anything runs, and run on a connection
whose access to files and network is off except for the inputs themselves.

The valid order rows are exposed to the feature engine as the canonical `orders` view:

| column      | type      | meaning                                                       |
|-------------|-----------|---------------------------------------------------------------|
| customer_id | VARCHAR   | customer identifier, exactly as in the source                  |
| order_id    | VARCHAR   | order identifier (NULL: the customer's lines at one timestamp are one order) |
| order_ts    | TIMESTAMP | order time in UTC                                             |
| amount      | DOUBLE    | money paid for the line after discounts (negative = money back) |
| quantity    | DOUBLE    | units on the line                                             |
| category    | VARCHAR   | product category                                              |
| product_id  | VARCHAR   | product identifier                                            |
| discount    | DOUBLE    | money off on the line                                         |
| channel     | VARCHAR   | sales channel                                                 |
| status      | VARCHAR   | line status; configured return statuses are netted out of spend |

and the customers table as the `customers` view, one row per customer: `customer_id` (VARCHAR),
`signup_ts` (TIMESTAMP, UTC) and one column per declared attribute (VARCHAR or DOUBLE).
"""
from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from configs.errors import LifetagError
from configs.schema import Config, ConfigError, SourceConfig
from features.engine import connect, is_locked, lock_external_access, repr_ident, repr_sql
from features.expressions import ExpressionRefused, ExpressionSyntaxError, check_expression, sandbox
from features.output import write_relation
from features.paths import DUCKDB_SUFFIXES, customers_quarantine

__all__ = [
    "CANONICAL_TYPES",
    "ORDER_FIELDS",
    "Intake",
    "IntakeError",
    "IntakeReport",
    "Problem",
    "bad_rows_error",
    "combine_scope_stats",
    "csv_delimiter",
    "customer_fields",
    "empty_view",
    "needs_scope_types",
    "open_customers",
    "open_orders",
    "open_sources",
    "open_partition",
    "open_tables",
    "partition_keys",
    "problem_order",
    "header_mismatch",
    "read_part",
    "source_parts",
    "raw_columns",
    "read_customers",
    "read_orders",
    "scope_stats",
    "source_files",
    "scope_types_from",
]

CANONICAL_TYPES: dict[str, str] = {
    "customer_id": "VARCHAR",
    "order_id": "VARCHAR",
    "order_ts": "TIMESTAMP",
    "amount": "DOUBLE",
    "quantity": "DOUBLE",
    "category": "VARCHAR",
    "product_id": "VARCHAR",
    "discount": "DOUBLE",
    "channel": "VARCHAR",
    "status": "VARCHAR",
}
# Source types whose values convert to DOUBLE, and (with the time types) never print as blank text.
_NUMBER_TYPES = re.compile(r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))")
_TIME_TYPES = re.compile(r"(DATE|TIMESTAMP(_S|_MS|_NS| WITH TIME ZONE)?)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*")
_EXAMPLES = 3
# DuckDB's CSV reader refuses lines longer than this (its max_line_size default), in bytes.
_MAX_LINE_BYTES = 2_097_152
_DELIMITERS = (",", ";", "\t", "|")


class IntakeError(LifetagError):
    """Input that cannot be used as it is; the message is one paragraph for the person who supplied it."""


@dataclass(frozen=True)
class FieldSpec:
    """One canonical field: its SQL type, whether every row needs it, and what makes a value bad."""

    sql_type: str
    required: bool = False
    # "id": trimmed of surrounding spaces; blank or a null word (orders.null_ids) is bad. "key":
    # trimmed, blank is NULL. "timestamp" / "number": a non-blank value that does not parse is bad
    # (and, when required, a blank one too); "finite_number" also rejects inf and NaN. "status":
    # trimmed and lower-cased; a value in neither orders.purchase_statuses nor return_statuses is bad.
    check: str | None = None
    # A timestamp outside 1970 .. a day from now, or money beyond ±_MONEY_LIMIT, is bad.
    bounded: bool = False


ORDER_FIELDS: dict[str, FieldSpec] = {
    "customer_id": FieldSpec("VARCHAR", True, "id"),
    "order_id": FieldSpec("VARCHAR", False, "key"),
    "order_ts": FieldSpec("TIMESTAMP", True, "timestamp", bounded=True),
    "amount": FieldSpec("DOUBLE", True, "finite_number", bounded=True),
    "quantity": FieldSpec("DOUBLE", False, "number"),
    "category": FieldSpec("VARCHAR"),
    "product_id": FieldSpec("VARCHAR"),
    "discount": FieldSpec("DOUBLE", False, "finite_number", bounded=True),
    "channel": FieldSpec("VARCHAR"),
    "status": FieldSpec("VARCHAR", False, "status"),
}


def customer_fields(config: Config) -> dict[str, FieldSpec]:
    """The customers view's fields: customer_id, signup_ts and the declared attributes."""
    fields = {"customer_id": FieldSpec("VARCHAR", True, "id"), "signup_ts": FieldSpec("TIMESTAMP", False, "timestamp")}
    for name, attribute in config.customers.attributes.items():
        fields[name] = FieldSpec("DOUBLE", False, "number") if attribute.type == "numeric" else FieldSpec("VARCHAR")
    return fields


@dataclass(frozen=True)
class Problem:
    """One kind of bad row: which check, which source column, how many, example (row, value) pairs."""

    check: str
    column: str
    count: int
    examples: tuple[tuple[int, str], ...]

    def describe(self) -> str:
        """'column 'amount' has 2 values that are not numbers (rows 17, 204: 'abc', 'N/A')'."""
        rows = ", ".join(str(r) for r, _ in self.examples)
        values = ", ".join(repr(v if v is not None else "") for _, v in self.examples)
        noun = "row" if self.count == 1 else "rows"
        more = ", ..." if self.count > len(self.examples) else ""
        return f"column '{self.column}' has {self.count:,} {noun} {self.check} ({noun} {rows}{more}: {values}{more})"


@dataclass
class IntakeReport:
    """What happened to the rows of one source."""

    source: str
    rows_read: int = 0
    rows_quarantined: int = 0
    problems: list[Problem] = field(default_factory=list)
    missing_optional: list[str] = field(default_factory=list)
    quarantine_path: str | None = None
    ignored_columns: list[str] = field(default_factory=list)  # customers: source columns not declared
    duplicates_merged: int = 0  # customers: identical repeated rows of one customer, kept once
    lines_repeated: int = 0  # orders: lines identical in every source column to another line
    rows_dropped: int = 0  # orders: of those, dropped (orders.duplicate_lines: drop)
    orders_spread: int = 0  # orders whose lines' times differ within the tolerance, taken at the first
    spread_seconds: float = 0.0  # the widest such difference
    ids_trimmed: int = 0  # used rows whose ids had surrounding spaces, trimmed
    lines_without_status: int = 0  # used lines with an empty status, taken as purchases

    @property
    def rows_used(self) -> int:
        """Rows that reach the feature engine."""
        return self.rows_read - self.rows_quarantined - self.rows_dropped

    def summary(self) -> str:
        """'read 1,000 = used 990 + quarantined 10 (-> bad.csv)', then what was merged or changed."""
        text = f"read {self.rows_read:,} = used {self.rows_used:,} + quarantined {self.rows_quarantined:,}"
        if self.rows_dropped:
            text += f" + dropped {self.rows_dropped:,} repeats"
        if self.quarantine_path and self.rows_quarantined:
            text += f" (-> {self.quarantine_path})"
        return "; ".join([text, *self.adjustments()])

    def adjustments(self) -> list[str]:
        """What intake merged or changed in the rows it used, one clause each (nothing is changed silently)."""
        said = []
        if self.duplicates_merged:
            said.append(f"{self.duplicates_merged:,} repeated identical rows of a customer kept once")
        if self.lines_repeated:
            n = self.lines_repeated
            what = ("dropped (orders.duplicate_lines: drop)" if self.rows_dropped
                    else "kept (orders.duplicate_lines: drop keeps one)")
            said.append(f"{_count(n, 'line')} {'repeats' if n == 1 else 'repeat'} an earlier line exactly, {what}")
        if self.orders_spread:
            n = self.orders_spread
            said.append(f"{_count(n, 'order')} had lines up to {_duration(self.spread_seconds)} apart, taken at "
                        f"{'its' if n == 1 else 'their'} first line's time (orders.order_time_tolerance_minutes)")
        if self.ids_trimmed:
            said.append(f"{_count(self.ids_trimmed, 'row')} had ids with surrounding spaces, trimmed")
        if self.lines_without_status:
            n = self.lines_without_status
            said.append(f"{_count(n, 'line')} {'has' if n == 1 else 'have'} an empty status, taken as "
                        f"{'a purchase' if n == 1 else 'purchases'} (money back when the amount is negative)")
        return said


def _count(n: int, noun: str) -> str:
    """'1 order', '2,000 orders'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    """'45 seconds', '1 minute', '59 minutes' (whole minutes from one minute on)."""
    if seconds < 60:
        whole = int(seconds)
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = int(seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@dataclass
class Intake:
    """The reports of one job's sources: orders, and the customers table when there is one."""

    orders: IntakeReport
    customers: IntakeReport | None = None

    def notes(self) -> list[str]:
        """One line per thing a person should know: optional fields missing, columns ignored, customers unmatched."""
        lines = []
        if self.orders.missing_optional:
            lines.append(f"orders: optional fields not in the source: {', '.join(self.orders.missing_optional)}")
        if self.customers is not None:
            missing = self.customers.missing_optional
            if "signup_ts" in missing:
                lines.append("customers: no sign-up date column (customers.columns.signup_ts), so "
                             "first_purchase_prob cannot be learned and signup_days stays empty")
            if [m for m in missing if m != "signup_ts"]:
                lines.append("customers: declared attributes not in the source (skipped): "
                             + ", ".join(m for m in missing if m != "signup_ts"))
            if self.customers.ignored_columns:
                lines.append("customers: columns not declared under customers.attributes (ignored): "
                             + ", ".join(self.customers.ignored_columns))
        return lines


@dataclass
class _Source:
    """One source between reading and validating: where it is, its columns, and how fields map to it."""

    kind: str  # "orders" / "customers"
    label: str
    prefix: str  # names of this source's views in the connection
    fields: dict[str, FieldSpec]
    mapping: dict[str, "_Mapped"]
    types: dict[str, str]
    report: IntakeReport
    scope_types: dict[str, str]  # what an expression sees: text columns that are all numbers become numbers
    in_memory: bool = False  # a request's table (open_tables), not a file

    @property
    def conflict_key(self) -> str:
        """The key whose rows must agree: an order's lines, a customer's rows."""
        return _CONFLICTS[self.kind][0]

    @property
    def has_expressions(self) -> bool:
        """Whether some field is computed by a SQL expression from the config."""
        return any(m.is_expression for m in self.mapping.values())


@dataclass(frozen=True)
class _Mapped:
    text: str  # the source column, or the expression
    is_expression: bool
    entry: str  # where it is configured, e.g. "orders.columns.amount"
    sql_type: str | None = None  # an expression's result type over the source columns

    def shown(self) -> str:
        """How a report names it: the column, or the config entry of an expression."""
        return self.entry if self.is_expression else self.text


def open_sources(
    con: duckdb.DuckDBPyConnection,
    orders: str | os.PathLike[str],
    config: Config,
    customers: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
) -> Intake:
    """Validate the orders (and the customers table, if any) and create the `orders` (and `customers`) views.

    Raises IntakeError for an unreadable or empty source, a missing required column, or (without
    `quarantine`) any bad row; with `quarantine`, bad rows go to that file with a `reason` column
    (the customers table's to the same name with `.customers` before the extension). Raises
    ConfigError for a mapping expression that does not compile over the source columns.
    """
    _lock_to_inputs(con, [(Path(orders), config.orders)]
                    + ([(Path(customers), config.customers)] if customers is not None else []))
    read = [(Path(orders), config.orders, "orders")]
    if customers is not None:
        read.append((Path(customers), config.customers, "customers"))
    with _scan_errors_explained(read):
        sources = [_prepare_orders(con, Path(orders), config)]
        if customers is not None:
            sources.append(_prepare_customers(con, Path(customers), config))
        quarantines = [quarantine, customers_quarantine(quarantine) if quarantine is not None else None]
        reports = _validate(con, sources, config, quarantines)
    return Intake(reports[0], reports[1] if len(reports) > 1 else None)


def open_orders(
    con: duckdb.DuckDBPyConnection,
    source: str | os.PathLike[str],
    config: Config,
    quarantine: str | os.PathLike[str] | None = None,
) -> IntakeReport:
    """Validate `source` and create the canonical `orders` view of its valid rows in `con`."""
    return open_sources(con, source, config, None, quarantine).orders


def open_customers(
    con: duckdb.DuckDBPyConnection,
    source: str | os.PathLike[str],
    config: Config,
    quarantine: str | os.PathLike[str] | None = None,
) -> IntakeReport:
    """Validate a customers table and create the `customers` view (one row per customer) in `con`."""
    _lock_to_inputs(con, [(Path(source), config.customers)])
    with _scan_errors_explained([(Path(source), config.customers, "customers")]):
        return _validate(con, [_prepare_customers(con, Path(source), config)], config, [quarantine])[0]


def open_tables(
    con: duckdb.DuckDBPyConnection,
    orders: pa.Table,
    config: Config,
    customers: pa.Table | None = None,
    label: str = "request",
) -> Intake:
    """Validate in-memory tables of canonical columns (a service request's orders and customers) by the
    rules a file meets, and create the `orders` (and `customers`) views.

    Columns are the canonical fields themselves (no mapping: `orders.columns` describes the shop's
    files, not a request); a `_row` column numbers the rows for the reports. Bad rows raise the same
    one-paragraph IntakeError as a file's, with `label` naming the source. Orders with no rows give an
    empty `orders` view (a request may carry only customers who have not ordered yet). `con` reads no
    file: its external access is switched off first, if it is not already.
    """
    _lock_to_inputs(con, [])
    prepared = [_prepare_table(con, "orders", orders, ORDER_FIELDS, f"{label} orders") if orders.num_rows else None,
                _prepare_table(con, "customers", customers, customer_fields(config), f"{label} customers")
                if customers is not None else None]
    return _validate_parts(con, config, prepared, f"{label} orders", [None, None])


# ---------------------------------------------------------------------------------------------
# A source read by another engine (Spark): its raw rows arrive as Arrow tables, in parts, and each part
# is validated here by the very rules a file meets. The rows carry `_row`, their row number in the
# whole source (and `filename` for a folder), so reports name the rows a file run would name.


def raw_columns(table: pa.Table | pa.Schema) -> dict[str, str]:
    """Source column -> DuckDB type of raw rows as another engine hands them over (`_row` left out)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    known = _arrow_columns(schema)
    if known is not None:
        return known
    con = duckdb.connect(":memory:")
    try:
        con.register("_lifetag_schema", schema.empty_table())
        return _source_columns(con, "_lifetag_schema")
    finally:
        con.close()


def needs_scope_types(kind: str, types: dict[str, str], config: Config) -> bool:
    """Whether some mapping of `kind` may be an expression, so its columns' types as expressions see them
    (`scope_stats` over every row) are needed."""
    return any(m.text not in types and not _IDENTIFIER.fullmatch(m.text) for m in _wanted(kind, config).values())


def scope_stats(con: duckdb.DuckDBPyConnection, table: pa.Table) -> dict[str, tuple[bool, bool, int]]:
    """`_scope_stats` of one part of a source: combine the parts' with `combine_scope_stats`, then
    `scope_types_from` gives the whole source's types as expressions see them."""
    _lock_to_inputs(con, [])
    con.register("_lifetag_scope_part", table)
    types = _source_columns(con, "_lifetag_scope_part")
    return _scope_stats(con, "_lifetag_scope_part", types)


def combine_scope_stats(parts: list[dict[str, tuple[bool, bool, int]]]) -> dict[str, tuple[bool, bool, int]]:
    """The stats of a whole source from those of its parts (every value an integer in every part, ...)."""
    combined: dict[str, tuple[bool, bool, int]] = {}
    for part in parts:
        for column, (integers, numbers, non_blank) in part.items():
            i, n, b = combined.get(column, (True, True, 0))
            combined[column] = (i and integers, n and numbers, b + non_blank)
    return combined


def partition_keys(con: duckdb.DuckDBPyConnection, kind: str, table: pa.Table, config: Config, label: str,
                   scope_types: dict[str, str] | None, partitions: int) -> pa.Table:
    """The raw rows of `table` plus what partitions them: `_cid` (the customer id as intake reads it,
    trimmed; NULL when unusable), `_oid` (orders: the order id as intake reads it), `_valid` (the row
    passes its own checks) and `_part` (hash of the customer id modulo `partitions`, as the embedded
    batch splits customers). A config expression that fails on a row raises its IntakeError."""
    _lock_to_inputs(con, [])
    source = _prepare_raw_table(con, kind, table, config, label, scope_types)
    _create_parsed_view(con, source, config)
    if source.has_expressions:
        _evaluate_expressions(con, source)
    order_id = "order_id" if kind == "orders" else "CAST(NULL AS VARCHAR)"
    return con.sql(
        f"SELECT _src.*, customer_id AS _cid, {order_id} AS _oid, reason IS NULL AS _valid, "
        f"CAST(coalesce(hash(customer_id) % {int(partitions)}, 0) AS INTEGER) AS _part "
        f"FROM {source.prefix}_parsed").to_arrow_table()


def open_partition(
    con: duckdb.DuckDBPyConnection,
    orders: pa.Table,
    config: Config,
    customers: pa.Table | None = None,
    labels: tuple[str, str] = ("orders", "customers"),
    scope_types: tuple[dict[str, str] | None, dict[str, str] | None] = (None, None),
    quarantine: str | os.PathLike[str] | None = None,
) -> Intake:
    """Validate one part of the sources, given as raw Arrow rows (source columns, `_row`, and `filename` for a
    folder) of whole customers, by the rules a file meets, and create the `orders` (and `customers`) views.

    Columns are mapped by the config as for files; `scope_types` are the whole sources' column types as
    expressions see them (`scope_types_from`), so an expression computes alike in every part. Bad rows
    raise the one-paragraph IntakeError naming `labels`, or with `quarantine` are written there. A part
    with no order rows gets an empty `orders` view (its customers have not ordered). `con` reads no file.
    """
    _lock_to_inputs(con, [])
    prepared = [_prepare_raw_table(con, "orders", orders, config, labels[0], scope_types[0])
                if orders.num_rows else None,
                _prepare_raw_table(con, "customers", customers, config, labels[1], scope_types[1])
                if customers is not None else None]
    targets = [quarantine, customers_quarantine(quarantine) if quarantine is not None else None]
    return _validate_parts(con, config, prepared, labels[0], targets)


def empty_view(con: duckdb.DuckDBPyConnection, name: str, fields: dict[str, FieldSpec]) -> None:
    """Create the view `name` with the columns and types of `fields` and no rows."""
    columns = ", ".join(f"CAST(NULL AS {spec.sql_type}) AS {field}" for field, spec in fields.items())
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {columns} WHERE false")


def source_parts(source: str | os.PathLike[str], cfg: SourceConfig) -> list[list[Path]]:
    """How another engine may read a local CSV or DuckDB source in parts that read exactly as intake reads the
    whole (`read_part`), in row order: each CSV file of a folder alone (the file's header names its columns);
    a whitespace-separated export or a DuckDB database as one part (`[]` for a database)."""
    path = Path(source)
    db_path, _ = _split_duckdb_source(path, cfg)
    if db_path is not None:
        return [[]]
    if not path.exists():
        return [[path]]  # read_part says that it does not exist, as intake does
    files = _source_files(path)
    # A whitespace export's header is the first line of the whole source: it is read whole.
    return [files] if cfg.delimiter == "whitespace" else [[f] for f in files]


def read_part(con: duckdb.DuckDBPyConnection, source: str | os.PathLike[str], cfg: SourceConfig, kind: str,
              option: str, part: list[Path], rows_per_batch: int = 100_000) -> Iterator[pa.RecordBatch]:
    """The raw rows of one part (`source_parts`) of a local source, as intake reads them: the source columns
    (`filename` for a folder's files) and `_row`, the row's number within the part (1, 2, ...), as Arrow
    batches (at least one, empty when the part has no rows). A source intake cannot read raises intake's own one-paragraph IntakeError (a CSV line too long,
    bytes that are not UTF-8, a blank header line, rows that do not split, ...). `con` is locked to the
    source first, as intake locks it."""
    path = Path(source)
    label = str(path)
    _lock_to_inputs(con, [(path, cfg)])
    db_path, table = _split_duckdb_source(path, cfg)
    if db_path is None and not path.exists():
        raise IntakeError(f"{label}: cannot read the {kind}: no such file or folder. Check the path passed to {option}.")
    files = _source_files(path) if db_path is None else []
    try:
        reader = con.sql(_raw_sql(con, path, cfg, db_path, table, f"_lifetag_{kind}", kind, part or files)
                         ).fetch_record_batch(rows_per_batch)
        read_any = False
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            read_any = True
            yield batch
        if not read_any:  # no rows: still the part's columns
            yield pa.RecordBatch.from_pylist([], schema=reader.schema)
    except (duckdb.Error, pa.ArrowInvalid) as exc:
        error = exc if isinstance(exc, duckdb.Error) else duckdb.Error(str(exc))
        raise read_error(label, kind, cfg, files, error) from None


def _validate_parts(con: duckdb.DuckDBPyConnection, config: Config, prepared: list[_Source | None],
                    orders_label: str, quarantines: list[str | os.PathLike[str] | None]) -> Intake:
    """Validate in-memory sources prepared as [orders or None, customers or None] (each with its quarantine).
    No order rows (None): an empty `orders` view and an empty report for it, as a part whose customers have
    not ordered has."""
    if prepared[0] is None:
        empty_view(con, "orders", ORDER_FIELDS)
    sources = [(source, target) for source, target in zip(prepared, quarantines) if source is not None]
    reports = _validate(con, [source for source, _ in sources], config, [target for _, target in sources])
    if prepared[0] is None:
        reports.insert(0, IntakeReport(source=orders_label))
    return Intake(reports[0], reports[1] if len(reports) > 1 else None)


def _prepare_raw_table(con: duckdb.DuckDBPyConnection, kind: str, table: pa.Table, config: Config, label: str,
                       scope_types: dict[str, str] | None) -> _Source:
    """Register raw rows (source columns and `_row`) as `<prefix>_raw` and map them as `_prepare` maps a file."""
    prefix = f"_lifetag_{kind}"
    raw = f"{prefix}_raw"
    con.register(raw, table)
    types = _source_columns(con, raw)
    fields = ORDER_FIELDS if kind == "orders" else customer_fields(config)
    if scope_types is None:
        scope_types = _expression_scope_types(con, raw, types) if needs_scope_types(kind, types, config) else types
    mapping, missing_optional = _resolve_mapping(fields, _wanted(kind, config), types, scope_types, label)
    if any(m.is_expression for m in mapping.values()):
        con.execute("SET old_implicit_casting = true")
    source = _Source(kind, label, prefix, fields, mapping, types, IntakeReport(source=label, missing_optional=missing_optional),
                     scope_types)
    if kind == "customers":
        _list_ignored_columns(source)
    return source


def _prepare_table(con: duckdb.DuckDBPyConnection, kind: str, table: pa.Table, fields: dict[str, FieldSpec],
                   label: str) -> _Source:
    """Register an in-memory table of canonical columns as a raw source, mapped field to itself."""
    prefix = f"_lifetag_{kind}"
    if "_row" not in table.column_names:
        table = table.append_column("_row", pa.array(range(1, table.num_rows + 1), pa.int64()))
    raw = f"{prefix}_raw"
    con.register(raw, table)
    types = _arrow_columns(table.schema) or _source_columns(con, raw)
    wanted = {name: _Mapped(name, False, f"{label}: {name}") for name in fields}
    mapping, missing_optional = _resolve_mapping(fields, wanted, types, types, label)
    return _Source(kind, label, prefix, fields, mapping, types, IntakeReport(source=label, missing_optional=missing_optional),
                   types, in_memory=True)


@contextmanager
def _scan_errors_explained(sources: list[tuple[Path, SourceConfig, str]]) -> Iterator[None]:
    """Turn a CSV reading error met while validating `sources` (path, config, kind) into its one-paragraph IntakeError."""
    try:
        yield
    except duckdb.Error as exc:
        error = scan_error(exc, sources)
        if error is None:
            raise
        raise error from None


def _validate(con: duckdb.DuckDBPyConnection, sources: list["_Source"], config: Config,
              quarantines: list[str | os.PathLike[str] | None]) -> list[IntakeReport]:
    """Check every row of the prepared sources (each with its quarantine path) and create their views."""
    # The connection already reads nothing but the inputs (_lock_to_inputs); from here on no setting
    # changes either, whatever the expressions and views evaluated on it hold.
    if not con.execute("SELECT current_setting('lock_configuration')").fetchall()[0][0]:
        con.execute("SET lock_configuration = true")
    return [_finish(con, source, config, target) for source, target in zip(sources, quarantines)]


def _lock_to_inputs(con: duckdb.DuckDBPyConnection, sources: list[tuple[Path, SourceConfig]]) -> None:
    """Switch off file and network access on `con` except for reading the sources, before anything reads them.

    Always, not only for mapping expressions: a DuckDB database given as input can hold a view
    that reads any file. A connection that is already locked stays as it is (it reads no more).
    """
    if is_locked(con):
        return
    inputs, patterns = [], []
    for path, cfg in sources:
        db_path, _ = _split_duckdb_source(path, cfg)
        # DuckDB looks for a database's write-ahead log beside it, even read-only.
        inputs += [path] if db_path is None else [db_path, db_path.with_name(db_path.name + ".wal")]
        if db_path is None and _literal_path(path.resolve()) != str(path.resolve()):
            # DuckDB checks the escaped pattern it is given for a name with glob characters (_literal_path).
            patterns.append((_literal_path(path.resolve()), path.is_dir()))
    lock_external_access(con, inputs, patterns)


def read_orders(
    source: str | os.PathLike[str], config: Config, quarantine: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, IntakeReport]:
    """The valid rows of `source` as a canonical pandas frame, with the intake report."""
    return _read(open_orders, "SELECT * FROM orders", source, config, quarantine)


def read_customers(
    source: str | os.PathLike[str], config: Config, quarantine: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, IntakeReport]:
    """The customers table as a canonical pandas frame (one row per customer), with the intake report."""
    return _read(open_customers, "SELECT * FROM customers ORDER BY customer_id", source, config, quarantine)


def _read(opener: Callable[..., IntakeReport], query: str, source: str | os.PathLike[str], config: Config,
          quarantine: str | os.PathLike[str] | None) -> tuple[pd.DataFrame, IntakeReport]:
    con = connect(config.engine)
    try:
        report = opener(con, source, config, quarantine)
        return con.sql(query).df(), report
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# Reading and mapping


def _prepare_orders(con: duckdb.DuckDBPyConnection, path: Path, config: Config) -> _Source:
    return _prepare(con, "orders", path, config.orders, ORDER_FIELDS, _wanted("orders", config), "--orders")


def _prepare_customers(con: duckdb.DuckDBPyConnection, path: Path, config: Config) -> _Source:
    source = _prepare(con, "customers", path, config.customers, customer_fields(config), _wanted("customers", config),
                      "--customers")
    _list_ignored_columns(source)
    return source


def _wanted(kind: str, config: Config) -> dict[str, "_Mapped"]:
    """Field -> the configured column or expression of the orders or the customers table."""
    cfg = config.orders if kind == "orders" else config.customers
    wanted = {name: _Mapped(text, False, f"{kind}.columns.{name}") for name, text in cfg.columns.mapped().items()}
    if kind == "customers":
        for name in config.customers.attributes:
            entry = f"customers.attributes.{name}" + (".column" if config.customers.attributes[name].column else "")
            wanted[name] = _Mapped(config.customers.source_column(name), False, entry)
    return wanted


def _list_ignored_columns(source: _Source) -> None:
    """Customers: the source columns no field reads, for the notes."""
    used = {m.text for m in source.mapping.values() if not m.is_expression}
    used |= {c for m in source.mapping.values() if m.is_expression for c in _referenced(m.text, list(source.types))}
    source.report.ignored_columns = [c for c in source.types if c not in used and c != "filename"]


def _prepare(con: duckdb.DuckDBPyConnection, kind: str, path: Path, cfg: SourceConfig, fields: dict[str, FieldSpec],
             wanted: dict[str, _Mapped], option: str) -> _Source:
    """Register the raw source, resolve the mapping (columns and checked expressions)."""
    label = str(path)
    prefix = f"_lifetag_{kind}"
    raw = _register_raw(con, path, cfg, label, prefix, kind, option)
    types = _source_columns(con, raw)
    # Only a value that is neither a column nor a bare name can be an expression; the scan that
    # types its inputs runs only then.
    maybe_expressions = [m for m in wanted.values() if m.text not in types and not _IDENTIFIER.fullmatch(m.text)]
    scope_types = _expression_scope_types(con, raw, types) if maybe_expressions else types
    mapping, missing_optional = _resolve_mapping(fields, wanted, types, scope_types, label)
    if any(m.is_expression for m in mapping.values()):
        # Expressions compute like the sandbox that checked them: numbers print as text where text is needed.
        con.execute("SET old_implicit_casting = true")
    report = IntakeReport(source=label, missing_optional=missing_optional)
    return _Source(kind, label, prefix, fields, mapping, types, report, scope_types)


def _register_raw(con: duckdb.DuckDBPyConnection, path: Path, cfg: SourceConfig, label: str, prefix: str,
                  kind: str, option: str) -> str:
    """Create the `<prefix>_raw` view (source columns plus `_row`, the 1-based data row); its name.

    The connection is already locked to the inputs (_lock_to_inputs allows the escaped patterns of
    file names with glob characters too).
    """
    db_path, table = _split_duckdb_source(path, cfg)
    if db_path is None and not path.exists():
        raise IntakeError(f"{label}: cannot read the {kind}: no such file or folder. Check the path passed to {option}.")
    files = _source_files(path) if db_path is None else []
    raw = f"{prefix}_raw"
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {raw} AS {_raw_sql(con, path, cfg, db_path, table, prefix, kind, files)}")
        # Nothing is fetched into Python here: a time-zone-aware column would need pytz to convert.
        has_rows = con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {raw} LIMIT 1)").fetchall()[0][0]
    except duckdb.Error as exc:
        raise read_error(label, kind, cfg, files, exc) from None
    if not has_rows:
        raise IntakeError(f"{label}: the source has no rows. Check that it is the right file and that it was fully written.")
    return raw


def _split_duckdb_source(path: Path, cfg: SourceConfig) -> tuple[Path | None, str]:
    """`shop.duckdb` (table from config) or `shop.duckdb:table`; (None, '') for other sources."""
    text = str(path)
    for suffix in DUCKDB_SUFFIXES:
        if text.endswith(suffix):
            return path, cfg.table
        marker = suffix + ":"
        if marker in text:
            head, _, table = text.rpartition(":")
            return Path(head), table
    return None, ""


def _source_files(path: Path) -> list[Path]:
    """The files a CSV or Parquet source names: the file itself, or a folder's .parquet or .csv files, sorted.

    A folder holding both kinds is an error: reading one kind would silently skip the other.
    """
    path = path.resolve()
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".parquet", ".csv") and p.is_file())
    parquet = [p for p in found if p.suffix.lower() == ".parquet"]
    csv_files = [p for p in found if p.suffix.lower() == ".csv"]
    if parquet and csv_files:
        def some(files: list[Path]) -> str:
            return ", ".join(str(p.relative_to(path)) for p in files[:_EXAMPLES]) + (", ..." if len(files) > _EXAMPLES else "")
        raise IntakeError(
            f"{path}: the folder holds both Parquet files ({len(parquet):,}: {some(parquet)}) and CSV files "
            f"({len(csv_files):,}: {some(csv_files)}). A folder source is read as one table of one kind: move "
            "one kind elsewhere, or pass a single file."
        )
    if not found:
        raise IntakeError(f"{path}: the folder holds no .parquet or .csv files.")
    return found


def source_files(path: Path) -> list[Path]:
    """The files a local CSV or Parquet source names, as intake reads them (sorted; IntakeError for a folder
    holding both kinds or neither): another engine reading the source reads these, in this order."""
    return _source_files(path)


def csv_delimiter(path: Path, cfg: SourceConfig) -> str | None:
    """The configured CSV delimiter, else the one the file's header evidently uses (None: one column)."""
    return cfg.delimiter or _header_delimiter(_first_line(path, cfg))


def _literal_path(path: Path) -> str:
    """`path` as a DuckDB file pattern that matches exactly that file.

    DuckDB expands `*`, `?` and `[...]` in every path it reads, so `x[1].csv` would read `x1.csv`;
    a glob character inside brackets stands for itself (`[[]`), and DuckDB then opens the file
    without listing the folder.
    """
    return re.sub(r"[*?\[{]", lambda m: f"[{m.group(0)}]", str(path))


def _files_sql(files: list[Path]) -> str:
    """A DuckDB list literal of the exact files to read."""
    return "[" + ", ".join(repr_sql(_literal_path(f)) for f in files) + "]"


def _raw_sql(con: duckdb.DuckDBPyConnection, path: Path, cfg: SourceConfig, db_path: Path | None, table: str,
             prefix: str, kind: str, files: list[Path]) -> str:
    if db_path is not None:
        if not db_path.exists():
            raise IntakeError(f"{db_path}: cannot read the {kind}: no such DuckDB database.")
        alias = f"{prefix}_src"
        # The path is a bound parameter: no file name becomes SQL text.
        con.execute(f"ATTACH IF NOT EXISTS ? AS {alias} (READ_ONLY)", [str(db_path)])
        source = f"{alias}.{repr_ident(table)}"
        _check_reads_nothing_else(con, source, db_path, table, kind)
        return f"SELECT *, row_number() OVER () AS _row FROM {source}"
    folder = path.is_dir()
    if files[0].suffix.lower() == ".parquet":
        if folder:
            # Rows are numbered across the folder; `filename` tells which file a reported row is in.
            return f"SELECT *, row_number() OVER () AS _row FROM read_parquet({_files_sql(files)}, filename = true)"
        return (f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row FROM "
                f"read_parquet({_files_sql(files)}, file_row_number = true)")
    if not folder and files[0].stat().st_size == 0:
        raise IntakeError(f"{path}: the file is empty (0 bytes). Check that the export finished writing.")
    return _csv_sql(con, files, cfg, folder, files[0] if folder else path)


def _check_reads_nothing_else(con: duckdb.DuckDBPyConnection, source: str, db_path: Path, table: str, kind: str) -> None:
    """Refuse a table of an input database that is a view reading other files (the locked connection stops it)."""
    try:
        con.execute(f"SELECT * FROM {source} LIMIT 0")
    except duckdb.PermissionException as exc:
        detail = str(exc).strip().splitlines()[0]
        raise IntakeError(
            f"{db_path}: the {kind} table '{table}' cannot be read: it is a view that reads another file "
            f"({detail}), and lifetag reads nothing but the inputs it is given. Store the rows in the database "
            f"as a table (in DuckDB: CREATE TABLE {kind}_rows AS SELECT * FROM {repr_ident(table)}; then name "
            f"that table), or pass the file the view reads as the input itself."
        ) from None
    except duckdb.Error:
        pass  # any other problem (no such table, ...) is reported where the source is first read


def _whitespace_sql(path_sql: str, header: list[str], cfg: SourceConfig) -> str:
    """Fixed-width style exports (CDNOW): whole lines split on runs of blanks, named by the header."""
    fields = ", ".join(f"f[{i + 1}] AS {repr_ident(name)}" for i, name in enumerate(header))
    lines = (
        f"SELECT regexp_split_to_array(trim(line), '\\s+') AS f, row_number() OVER () - 1 AS _row FROM "
        f"read_csv({path_sql}, columns = {{'line': 'VARCHAR'}}, delim = '\\x1f', header = false, "
        f"quote = '', escape = '', auto_detect = false, encoding = {repr_sql(cfg.encoding)}) WHERE trim(line) <> ''"
    )
    return f"SELECT {fields}, _row FROM ({lines}) WHERE _row > 0"


def _first_line_fields(path: Path, cfg: SourceConfig) -> list[str]:
    with path.open(encoding=cfg.encoding, errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.split()
    return []


def _first_line(path: Path, cfg: SourceConfig) -> str:
    """The file's first line (the header), without a byte-order mark or line end."""
    with path.open(encoding="utf-8-sig" if cfg.encoding == "utf-8" else cfg.encoding, errors="replace",
                   newline="") as handle:
        return handle.readline(_MAX_LINE_BYTES).rstrip("\r\n")


def header_fields(header: str, cfg: SourceConfig) -> list[str]:
    """The column names of a CSV header line (quotes as CSV writes them)."""
    import csv

    delimiter = cfg.delimiter if cfg.delimiter and cfg.delimiter != "whitespace" else _header_delimiter(header) or ","
    return next(csv.reader([header], delimiter=delimiter), [])


def header_mismatch(first: Path | str, columns: list[str], other: Path | str, others: list[str]) -> IntakeError | None:
    """The one-paragraph error for a file of a folder whose header names other columns than the folder's first
    file (None when they name the same): a folder is one table, and a column only some files have would be
    dropped from the others or read as empty in them."""
    missing = [c for c in columns if c not in others]
    extra = [c for c in others if c not in columns]
    if not missing and not extra:
        return None
    said = "; ".join(part for part in (
        f"it has no column {', '.join(map(repr, missing))}" if missing else "",
        f"it has {', '.join(map(repr, extra))}, which the first file does not" if extra else "") if part)
    return IntakeError(f"{other}: the header names other columns than the folder's first file {Path(str(first)).name} "
                       f"({said}). A folder is read as one table: give every file the same header, or read the "
                       "files as separate sources.")


def _check_same_header(first: Path, header: str, other: Path, cfg: SourceConfig) -> None:
    """Refuse a file of a folder whose header differs from the first file's (header_mismatch)."""
    error = header_mismatch(first, header_fields(header, cfg), other, header_fields(_first_line(other, cfg), cfg))
    if error is not None:
        raise error


def _header_delimiter(header: str) -> str | None:
    """The separator a header line evidently uses (the most frequent of , ; tab |), or None."""
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _csv_options(cfg: SourceConfig, delimiter: str | None) -> str:
    delim = f", delim = {repr_sql(delimiter)}" if delimiter else ""
    # skip = 0: the sniffer would otherwise skip leading lines it dislikes, and with them rows.
    return f"all_varchar = true, header = true, skip = 0, encoding = {repr_sql(cfg.encoding)}{delim}"


def _csv_sql(con: duckdb.DuckDBPyConnection, files: list[Path], cfg: SourceConfig, folder: bool, shown: Path) -> str:
    """SQL reading CSV `files` as text columns named by the header (a folder's rows also carry `filename`).

    `shown`: how errors name the file, the path as given for a single file.
    """
    if cfg.delimiter == "whitespace":
        return _whitespace_sql(_files_sql(files), _first_line_fields(files[0], cfg), cfg)
    header = _first_line(files[0], cfg)
    if not header.strip():
        raise IntakeError(
            f"{shown}: the first line is blank, but lifetag reads the column names from the first line. Remove "
            "the blank line(s) above the header, or add a header line naming the columns."
        )
    for other in files[1:] if folder else []:
        _check_same_header(files[0], header, other, cfg)
    extra = ", filename = true" if folder else ""

    def sql(delimiter: str | None) -> str:
        return (f"SELECT *, row_number() OVER () AS _row FROM read_csv({_files_sql(files)}, "
                f"{_csv_options(cfg, delimiter)}{extra})")

    if cfg.delimiter:
        return sql(cfg.delimiter)
    columns = [c for c, in con.execute(f"SELECT column_name FROM (DESCRIBE {sql(None)})").fetchall()]
    guessed = _header_delimiter(header)
    if len([c for c in columns if c not in ("filename", "_row")]) == 1 and guessed:
        # The sniffer settles on one column when rows have different field counts; reading with the
        # header's separator makes DuckDB stop at the first such row, so it can be reported.
        return sql(guessed)
    return sql(None)


def read_error(label: str, kind: str, cfg: SourceConfig, files: list[Path], exc: duckdb.Error) -> IntakeError:
    """The one-paragraph error for a source DuckDB could not read: what is wrong on which line, when it can tell."""
    csv_files = [f for f in files if f.suffix.lower() != ".parquet"]
    problem = _csv_problem(csv_files, cfg, kind) if csv_files else None
    if problem is not None:
        return IntakeError(f"{label}: {problem}")
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return IntakeError(
        f"{label}: cannot read the {kind} ({first_line}). Check that the file is a complete "
        "CSV, Parquet or DuckDB file and that lifetag may read it."
    )


def scan_error(exc: duckdb.Error, sources: list[tuple[Path, SourceConfig, str]]) -> IntakeError | None:
    """The one-paragraph error for a CSV reading error met past the first rows (path, config, kind per source).

    DuckDB reads a CSV lazily, so a bad line deep in the file stops whichever query reaches it
    first. None when `exc` is not a CSV reading error.
    """
    if "CSV Error on Line" not in str(exc):
        return None
    for path, cfg, kind in sources:
        if _split_duckdb_source(path, cfg)[0] is not None or not path.exists():
            continue
        csv_files = [f for f in _source_files(path) if f.suffix.lower() != ".parquet"]
        if csv_files:
            return read_error(str(path), kind, cfg, csv_files, exc)
    return None


def _csv_problem(files: list[Path], cfg: SourceConfig, kind: str) -> str | None:
    """What makes these CSV files unreadable, naming the file and line(s); None when it cannot tell."""
    for path in files:
        problem = _line_problem(path, cfg, kind) or _ragged_rows(path, cfg)
        if problem is not None:
            return problem if len(files) == 1 else f"{path}: {problem}"
    return None


def _line_problem(path: Path, cfg: SourceConfig, kind: str) -> str | None:
    """The first line that is too long to read, or (UTF-8) not valid text; read in bounded pieces."""
    if cfg.encoding == "utf-16":
        return None  # its line ends are two bytes; DuckDB's own message has to do
    with path.open("rb") as handle:
        number = 0
        while True:
            line = handle.readline(_MAX_LINE_BYTES + 1)
            if not line:
                return None
            number += 1
            if len(line) > _MAX_LINE_BYTES:
                size = len(line)
                while not line.endswith(b"\n"):
                    line = handle.readline(1 << 24)
                    if not line:
                        break
                    size += len(line)
                return (f"line {number:,} is {size / 1e6:,.1f} MB long, more than the {_MAX_LINE_BYTES:,} bytes "
                        "a CSV line may have: a field is far too long, or a quote is never closed. Fix that line.")
            if cfg.encoding == "utf-8":
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    shown = line[max(0, exc.start - 10):exc.start + 10].decode("latin-1")
                    return (f"line {number:,} is not UTF-8 text (byte 0x{line[exc.start]:02x} in {shown!r}). If the "
                            f"file was saved as Latin-1 (e.g. by Excel on Windows), set `{kind}.encoding: latin-1` "
                            f"in your config (or `utf-16` for UTF-16); otherwise save the file as UTF-8.")


def _ragged_rows(path: Path, cfg: SourceConfig) -> str | None:
    """Rows whose field count differs from the header's, read with Python's csv module.

    DuckDB's sniffer gives up on such files (or takes a later row for the header), so they are
    counted here, on the error path only.
    """
    delimiter = cfg.delimiter or _header_delimiter(_first_line(path, cfg))
    if delimiter is None or len(delimiter) != 1:
        return None
    csv.field_size_limit(max(csv.field_size_limit(), _MAX_LINE_BYTES + 1))
    found: list[tuple[int, int]] = []
    count = 0
    encoding = "utf-8-sig" if cfg.encoding == "utf-8" else cfg.encoding
    try:
        with path.open(encoding=encoding, errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            width = len(next(reader, []))
            for row in reader:
                if row and len(row) != width:
                    count += 1
                    if len(found) < _EXAMPLES:
                        found.append((reader.line_num, len(row)))
    except csv.Error:
        return None
    if not count:
        return None
    more = ", ..." if count > len(found) else ""
    details = ", ".join(f"{line:,} ({fields} fields)" for line, fields in found)
    noun = "line" if count == 1 else "lines"
    return (f"{count:,} {noun} cannot be split into the header's {width} columns ({noun} {details}{more}). A field "
            "that holds the separator must be in double quotes; fix the export (or set the right delimiter in your config).")


def _resolve_mapping(fields: dict[str, FieldSpec], wanted: dict[str, _Mapped], types: dict[str, str],
                     scope_types: dict[str, str], label: str) -> tuple[dict[str, _Mapped], list[str]]:
    """Field -> source column or expression; required columns must be there, missing optional ones are listed.

    A value naming a source column is that column; a value that compiles as SQL over the source
    columns is an expression; a plain name that is neither is a missing column; anything else is
    a config error naming the entry.
    """
    available = [c for c in types if c != "filename"]
    mapping, missing = {}, []
    for name, mapped in wanted.items():
        if mapped.text in available:
            mapping[name] = mapped
        elif _IDENTIFIER.fullmatch(mapped.text):
            missing.append(name)
        else:
            try:
                sql_type, error = _compile_expression(mapped.text, scope_types)
            except ExpressionRefused as refused:
                _raise_expression_error(mapped, str(refused), scope_types, refused=True)
            if error is None:
                mapping[name] = _Mapped(mapped.text, True, mapped.entry, sql_type)
            elif _PLAIN_NAME.fullmatch(mapped.text) and error.startswith("Parser Error"):
                missing.append(name)  # a column name with spaces, e.g. 'Customer ID', that the source lacks
            else:
                _raise_expression_error(mapped, error, scope_types)
    missing_required = [f for f in missing if fields[f].required]
    if missing_required:
        field_name = missing_required[0]
        entry = wanted[field_name].entry
        raise IntakeError(
            f"{label}: required column '{wanted[field_name].text}' (for {field_name}) is missing. "
            f"The source has columns: {', '.join(available)}. Map the right one (or a SQL expression over "
            f"those columns) in your config under {entry}."
            + (f" Also missing: {', '.join(repr(wanted[f].text) for f in missing_required[1:])}."
               if len(missing_required) > 1 else "")
        )
    return mapping, missing


def _source_columns(con: duckdb.DuckDBPyConnection, raw: str) -> dict[str, str]:
    """Source column name -> DuckDB type."""
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {raw})").fetchall())
    types.pop("_row", None)
    return types


# Arrow types of in-memory tables and the DuckDB types DuckDB reads them as.
_ARROW_TYPES = {pa.string(): "VARCHAR", pa.large_string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT",
                pa.timestamp("us"): "TIMESTAMP", pa.bool_(): "BOOLEAN"}


def _arrow_columns(schema: pa.Schema) -> dict[str, str] | None:
    """`_source_columns` of an in-memory table whose columns are all of the plain types above, without asking
    the engine (a request's tables are; None otherwise)."""
    types = {}
    for column in schema:
        if column.name == "_row":
            continue
        if column.type not in _ARROW_TYPES:
            return None
        types[column.name] = _ARROW_TYPES[column.type]
    return types


def _expression_scope_types(con: duckdb.DuckDBPyConnection, raw: str, types: dict[str, str]) -> dict[str, str]:
    """Column types as expressions see them: a text column whose every non-blank value is a number is a number.

    CSV columns are read as text (ids keep their leading zeros, bad values can be reported), but
    `Quantity * UnitPrice` needs numbers. Every row is checked, not a sample: one invoice number
    starting with 'C' must keep `Invoice LIKE 'C%'` working on text.
    """
    return scope_types_from(types, _scope_stats(con, raw, types))


def _scope_stats(con: duckdb.DuckDBPyConnection, raw: str, types: dict[str, str]) -> dict[str, tuple[bool, bool, int]]:
    """Per text column of `raw`: (every non-blank value is an integer, ... is a number, non-blank values)."""
    text_columns = [c for c, t in types.items() if t == "VARCHAR" and c != "filename"]
    if not text_columns:
        return {}
    checks = []
    for column in text_columns:
        value = f"NULLIF(trim({repr_ident(column)}), '')"
        # Not TRY_CAST to BIGINT: it rounds '6.95' to 7.
        checks.append(f"bool_and({value} IS NULL OR (regexp_full_match({value}, '[+-]?[0-9]{{1,18}}')))")
        checks.append(f"bool_and({value} IS NULL OR TRY_CAST({value} AS DOUBLE) IS NOT NULL)")
        checks.append(f"count({value})")
    row = con.execute(f"SELECT {', '.join(checks)} FROM {raw}").fetchall()[0]
    return {c: (row[3 * i] is not False, row[3 * i + 1] is not False, int(row[3 * i + 2]))
            for i, c in enumerate(text_columns)}


def scope_types_from(types: dict[str, str], stats: dict[str, tuple[bool, bool, int]]) -> dict[str, str]:
    """Column types as expressions see them, from `_scope_stats` (of the whole source, or combined over its parts
    with `combine_scope_stats`): a text column whose every non-blank value is a number is a number."""
    scope = dict(types)
    for column, (integers, numbers, non_blank) in stats.items():
        if non_blank:
            scope[column] = "BIGINT" if integers else "DOUBLE" if numbers else "VARCHAR"
    return scope


def _referenced(expression: str, columns: list[str]) -> list[str]:
    """Source columns an expression mentions (by name, quoted or not)."""
    found = []
    for column in columns:
        bare = re.search(r"(?<![\w\"'])" + re.escape(column) + r"(?![\w\"'])", expression)
        if bare or repr_ident(column) in expression:
            found.append(column)
    return found


def _compile_expression(expression: str, scope_types: dict[str, str]) -> tuple[str | None, str | None]:
    """(result type, None) when `expression` compiles over the source columns; else (None, the engine's
    first line of error).

    First the parsed expression is checked (features.expressions: only the row's own columns,
    constants, operators and plain functions; ExpressionRefused otherwise); only then is it bound,
    never run, over an empty table in a sandbox with file and network access off.
    """
    columns = {c: t for c, t in scope_types.items() if c != "filename"}
    try:
        check_expression(expression, columns)
    except ExpressionSyntaxError as exc:
        return None, str(exc)
    con = sandbox(old_implicit_casting=True)
    try:
        con.execute(f"CREATE TABLE source ({', '.join(f'{repr_ident(c)} {t}' for c, t in columns.items())})")
        try:
            # Bound, not executed: the relation gives the result type without reading a row.
            return str(con.sql(f"SELECT ({expression}) FROM source").types[0]), None
        except duckdb.Error as exc:
            return None, str(exc).strip().splitlines()[0]
    finally:
        con.close()


def _raise_expression_error(mapped: _Mapped, message: str, scope_types: dict[str, str], refused: bool = False) -> None:
    if refused:
        why = message  # what the expression may not do, and the rule (features.expressions)
    elif "disabled by configuration" in message or "Permission Error" in message:
        why = ("it tries to read a file or the network, which mapping expressions may not do: they can only "
               "compute values from the source's own columns")
    else:
        why = f"it does not compile over the source columns ({message})"
    listed = ", ".join(f"{c} ({t})" for c, t in scope_types.items() if c != "filename")
    raise ConfigError(
        f"{mapped.entry}: the expression {mapped.text!r} cannot be used: {why.rstrip('.')}. The source columns (as "
        f"expressions see them) are: {listed}. Write a column name or a SQL expression over those columns, "
        "e.g. \"Quantity * UnitPrice\"."
    )


# ---------------------------------------------------------------------------------------------
# Validating


def _finish(con: duckdb.DuckDBPyConnection, source: _Source, config: Config,
            quarantine: str | os.PathLike[str] | None) -> IntakeReport:
    """Parse and check every row, report or quarantine the bad ones, create the canonical view."""
    report = source.report
    if source.kind == "orders":
        report.lines_repeated = _count_repeats(con, source)
    drop = report.lines_repeated > 0 and config.orders.duplicate_lines == "drop"
    _create_parsed_view(con, source, config, drop_repeats=drop)
    if source.has_expressions:
        _evaluate_expressions(con, source)
    tolerance_us = round(config.orders.order_time_tolerance_minutes * 60_000_000)
    counts = _count_rows(con, source, tolerance_us)
    if drop:
        read = con.execute(f"SELECT count(*) FROM {source.prefix}_raw").fetchall()[0][0]
        report.rows_dropped = int(read) - counts.rows
    report.rows_read, report.rows_quarantined = counts.rows + report.rows_dropped, counts.bad
    report.orders_spread, report.spread_seconds = counts.spread_orders, counts.spread_us / 1_000_000
    report.ids_trimmed, report.lines_without_status = counts.trimmed, counts.no_status
    view = source.kind
    good = f"{source.prefix}_parsed"
    if report.rows_quarantined:
        _create_typed_view(con, source, counts.conflicts, tolerance_us)
        report.problems = _describe_problems(con, source, config)
        if quarantine is None:
            raise IntakeError(_bad_rows_message(source.label, report.problems, source.in_memory))
        _write_quarantine(con, source, Path(quarantine))
        report.quarantine_path = str(quarantine)
        good = f"(SELECT * FROM {source.prefix}_typed WHERE reason IS NULL)"
    if source.kind == "customers":
        # One row per customer: repeated rows of a customer agree (others are conflicts), so any
        # row's values will do; max() also fills a value one row left blank.
        merged = ", ".join(f"max({c}) AS {c}" for c in source.fields if c != "customer_id")
        con.execute(f"CREATE OR REPLACE TEMP {_object(source)} {view} AS SELECT customer_id, {merged} FROM {good} "
                    "GROUP BY customer_id")
        distinct = con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
        report.duplicates_merged = report.rows_used - int(distinct)
    else:
        con.execute(f"CREATE OR REPLACE TEMP {_object(source)} {view} AS {_orders_sql(con, source, good, counts.spread_orders)}")
    return report


def _object(source: _Source) -> str:
    """What the parsed and canonical rows of `source` are created as: a request's few rows a table, a file's
    a view."""
    return "TABLE" if source.in_memory else "VIEW"


def _orders_sql(con: duckdb.DuckDBPyConnection, source: _Source, good: str, spread_orders: int) -> str:
    """The canonical orders over the valid rows `good`: every line of an order at the order's one time.

    When no order has lines at different times (the common case) the view reads the rows as they
    are, without per-row reasons or joins; otherwise the few such orders are joined for their first time.
    """
    columns = ", ".join(source.fields)
    if not spread_orders:
        return f"SELECT {columns} FROM {good}"
    first = f"{source.prefix}_first_ts"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {first} AS SELECT order_id, min(order_ts) AS first_ts FROM {good} "
                "WHERE order_id IS NOT NULL GROUP BY order_id HAVING min(order_ts) <> max(order_ts)")
    picked = ", ".join("coalesce(f.first_ts, p.order_ts) AS order_ts" if c == "order_ts" else f"p.{c}"
                       for c in source.fields)
    return f"SELECT {picked} FROM {good} p LEFT JOIN {first} f ON p.order_id = f.order_id"


def _count_repeats(con: duckdb.DuckDBPyConnection, source: _Source) -> int:
    """Rows identical in every source column to another row (each group's rows beyond its first).

    Grouped by a 64-bit hash of the row, which costs half of grouping by every column; two different
    rows share a hash about once in four billion rows, far beyond what one intake holds.
    """
    columns = ", ".join(repr_ident(c) for c in _row_columns(source))
    return int(con.execute(
        f"SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM {source.prefix}_raw "
        f"GROUP BY hash({columns}) HAVING count(*) > 1)"
    ).fetchall()[0][0])


def _row_columns(source: _Source) -> list[str]:
    """The source's own columns: what makes two rows the same row (not which file of a folder it came from)."""
    return [c for c in source.types if c != "filename"]


def _evaluate_expressions(con: duckdb.DuckDBPyConnection, source: _Source) -> None:
    """Compute every expression on every row once, so one that fails on some value stops here, named."""
    computed = [name for name, m in source.mapping.items() if m.is_expression]
    try:
        con.execute(f"SELECT {', '.join(f'count({n})' for n in computed)} FROM {source.prefix}_parsed").fetchall()
    except duckdb.Error:
        for name in computed:
            try:
                con.execute(f"SELECT count({name}) FROM {source.prefix}_parsed").fetchall()
            except duckdb.Error as exc:
                mapped = source.mapping[name]
                raise IntakeError(
                    f"{source.label}: the expression {mapped.text!r} ({mapped.entry}) fails on some rows: "
                    f"{str(exc).strip().splitlines()[0]}. Make it tolerate them (e.g. try_strptime or TRY_CAST: a "
                    "value it cannot compute is then a reported bad row, or quarantined with --quarantine), or fix "
                    "the source."
                ) from None
        raise


# Money is summed as integer cents (features/behaviour.py): no real line comes near this, and a
# value beyond it (a typo, a broken export) would overflow the sums.
_MONEY_LIMIT = 1e12
_STATUS_LISTS = "orders.purchase_statuses or orders.return_statuses"


@dataclass(frozen=True)
class _Check:
    """One way a row can be bad: SQL true for such a row, its reason, and how a report says it."""

    field: str
    condition: str
    tag: str  # the reason, or (when it names the value) its fixed start; also finds the rows of this check
    text: str  # e.g. 'that are not numbers', after "column 'amount' has 2 rows"
    reason_sql: str | None = None  # SQL for a reason that names the value

    @property
    def reason(self) -> str:
        """SQL for the reason a bad row gets."""
        return self.reason_sql or repr_sql(self.tag)


def _typed_expr(name: str, spec: FieldSpec, source: str, source_type: str, cfg: SourceConfig) -> str:
    if spec.check in ("id", "key"):
        text = f"CAST({source} AS VARCHAR)"
        if _never_blank(source_type):
            return text
        # Only a value that starts or ends with a space is trimmed: trimming every id cost a fifth of the check.
        return f"NULLIF(CASE WHEN {_spaced_sql(text)} THEN trim({text}) ELSE {text} END, '')"
    if spec.check == "status":
        return f"NULLIF(lower(trim(CAST({source} AS VARCHAR))), '')"
    if spec.sql_type == "DOUBLE":
        return f"TRY_CAST({source} AS DOUBLE)"
    if spec.sql_type == "TIMESTAMP":
        if source_type.startswith(("TIMESTAMP", "DATE")):
            return f"CAST({source} AS TIMESTAMP)"
        text = f"NULLIF(trim(CAST({source} AS VARCHAR)), '')"
        if cfg.timestamp_format:
            # strptime yields TIMESTAMPTZ for formats with %z; normalise both kinds to UTC wall time.
            return f"CAST(CAST(try_strptime({text}, {repr_sql(cfg.timestamp_format)}) AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    return f"CAST({source} AS VARCHAR)"


def _never_blank(source_type: str) -> bool:
    """Numbers and times: their values are never blank text (only NULL)."""
    return _NUMBER_TYPES.fullmatch(source_type) is not None or _TIME_TYPES.fullmatch(source_type) is not None


def _spaced_sql(text: str) -> str:
    return f"(starts_with({text}, ' ') OR ends_with({text}, ' '))"


def _bad_row_condition(spec: FieldSpec, source: str, source_type: str, typed: str, null_ids: list[str]) -> str | None:
    """SQL that is true for a row this field makes unusable; None when no row can fail.

    Typed sources (Parquet, DuckDB) skip the text tests their values cannot fail, which saves a
    cast to text per row: a number or time is never blank, and a number always converts to DOUBLE.
    """
    if spec.check in (None, "key", "status"):
        return None
    is_number = _NUMBER_TYPES.fullmatch(source_type) is not None
    never_blank = _never_blank(source_type)
    if spec.check == "id":
        return f"{source} IS NULL" if never_blank else f"{typed} IS NULL OR {_null_word_sql(typed, null_ids)}"
    is_blank = f"{source} IS NULL" if never_blank else _blank_sql(f"CAST({source} AS VARCHAR)")
    not_finite = f"isinf({typed}) OR isnan({typed})" if spec.check == "finite_number" else None
    if spec.required:
        return f"{typed} IS NULL" + (f" OR {not_finite}" if not_finite else "")
    if is_number:
        return not_finite
    return f"(NOT {is_blank} AND {typed} IS NULL)" + (f" OR {not_finite}" if not_finite else "")


def _null_word_sql(typed: str, null_ids: list[str]) -> str:
    """SQL true when an id is one of the words that mean "no id" (any case); ids longer than them skip lower()."""
    words = [w for w in null_ids if w]
    if not words:
        return "false"
    # Only ids as short as the words are lower-cased; a UTF-8 character takes at most four bytes.
    longest = max(len(w.encode()) if w.isascii() else 4 * len(w) for w in words)
    return f"(strlen({typed}) <= {longest} AND {_one_of(f'lower({typed})', words)})"


def _one_of(value: str, texts: list[str]) -> str:
    """SQL true when `value` is one of `texts` (false when NULL). Not `IN (...)` or list_contains:
    DuckDB turns those into a join, which then runs even for queries that do not read the column."""
    return f"CASE {value} {' '.join(f'WHEN {repr_sql(t)} THEN true' for t in texts)} ELSE false END"


def _blank_sql(text: str) -> str:
    """SQL true when `text` is NULL or only spaces (what trim removes).

    Only a value that starts with a space is trimmed: trimming every id cost a fifth of the check.
    """
    return f"({text} IS NULL OR {text} = '' OR (starts_with({text}, ' ') AND trim({text}) = ''))"


def _bound_checks(name: str, spec: FieldSpec, typed: str) -> list[_Check]:
    """A time outside 1970 .. a day from now; money beyond ±_MONEY_LIMIT."""
    if not spec.bounded:
        return []
    if spec.sql_type == "TIMESTAMP":
        # A day of slack for clocks and time zones; a later time is a typo (2099) and would put
        # the default training date in the future.
        latest = (datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(days=1)).replace(microsecond=0)
        return [
            _Check(name, f"{typed} > TIMESTAMP '{latest.isoformat(sep=' ')}'", f"{name} is in the future",
                   f"that are in the future (after {latest:%Y-%m-%d %H:%M} UTC, a day from now)"),
            _Check(name, f"{typed} < TIMESTAMP '1970-01-01'", f"{name} is before 1970", "that are before 1970"),
        ]
    return [_Check(name, f"isfinite({typed}) AND abs({typed}) > {_MONEY_LIMIT:.0f}", f"{name} is implausibly large",
                   f"that are implausibly large (beyond ±{_MONEY_LIMIT:,.0f})")]


def _status_check(typed: str, config: Config) -> _Check:
    """A status in neither list is a bad row, so a status nobody configured is never taken as a purchase."""
    known = _one_of(typed, [*config.orders.purchase_statuses, *config.orders.return_statuses])
    return _Check("status", f"{typed} IS NOT NULL AND NOT {known}", "unknown status",
                  f"with a status in neither {_STATUS_LISTS.replace(' or ', ' nor ')}",
                  reason_sql=f"concat('unknown status ''', {typed}, ''': add it to {_STATUS_LISTS}')")


@dataclass(frozen=True)
class _Parsed:
    """What the parsed view computes: typed values (`_t_<field>`), canonical columns over them, the
    checks, whether ids had spaces, retyped columns."""

    typed: list[str]
    select: list[str]
    checks: list[_Check]
    trimmed: str
    retyped: dict[str, str]


def _parsed_columns(source: _Source, config: Config) -> _Parsed:
    """Canonical columns and row checks as SQL over the source row (`_src` when expressions see retyped columns)."""
    cfg = config.orders if source.kind == "orders" else config.customers
    retyped = {c: t for c, t in source.scope_types.items() if t != source.types[c]} if source.has_expressions else {}
    # Expressions see retyped columns under their own names; plain columns then read the source row.
    row = "_src" if retyped else ""
    typed_values, select, checks, spaced = [], [], [], []
    for name, spec in source.fields.items():
        if name not in source.mapping:
            select.append(f"CAST(NULL AS {spec.sql_type}) AS {name}")
            continue
        mapped = source.mapping[name]
        if mapped.is_expression:
            value, value_type = f"({mapped.text})", mapped.sql_type or "VARCHAR"
        else:
            value, value_type = _source_expr(mapped.text, row), source.types.get(mapped.text, "VARCHAR")
        # Each value is computed once, a step before the checks that read it: DuckDB does not share
        # an expression repeated within one SELECT, and the id and status checks read theirs twice.
        typed = f"_t_{name}"
        typed_values.append(f"{_typed_expr(name, spec, value, value_type, cfg)} AS {typed}")
        select.append(f"{typed} AS {name}")
        if spec.check in ("id", "key") and not _never_blank(value_type):
            spaced.append(_spaced_sql(f"CAST({value} AS VARCHAR)"))
        condition = _bad_row_condition(spec, value, value_type, typed, config.orders.null_ids)
        if mapped.is_expression and spec.check in ("timestamp", "number", "finite_number") and not spec.required:
            # A computed optional date or number that comes out empty while the columns it reads are
            # not (e.g. try_strptime on a malformed date) is a bad value, not a missing one.
            inputs = _referenced(mapped.text, [c for c in source.types if c != "filename"])
            if inputs:
                blank = " AND ".join(_blank_sql(f"CAST({_source_expr(c, 's._src' if row else 's')} AS VARCHAR)")
                                     for c in inputs)
                condition = f"({typed} IS NULL AND NOT ({blank}))"
                if spec.check == "finite_number":
                    condition += f" OR isinf({typed}) OR isnan({typed})"
        if condition is not None:
            text = _CHECK_TEXT[spec.check].format(name=name.replace("_", " "))
            checks.append(_Check(name, condition, _reason_text(name, spec), text))
        checks.extend(_bound_checks(name, spec, typed))
        if spec.check == "status":
            checks.append(_status_check(typed, config))
    return _Parsed(typed_values, select, checks, " OR ".join(spaced) or "false", retyped)


def _create_parsed_view(con: duckdb.DuckDBPyConnection, source: _Source, config: Config,
                        drop_repeats: bool = False) -> None:
    """`<prefix>_parsed`: canonical columns, the source row number, a `reason` (NULL when valid) and
    `_trimmed` (an id had surrounding spaces); with `drop_repeats`, rows repeating an earlier one are left out."""
    parsed = _parsed_columns(source, config)
    checks = [f"CASE WHEN {c.condition} THEN {c.reason} END" for c in parsed.checks]
    reason = f"NULLIF(concat_ws('; ', {', '.join(checks)}), '')" if checks else "CAST(NULL AS VARCHAR)"
    raw = f"{source.prefix}_raw"
    if drop_repeats:
        # Exact (every column compared), and the first of each set of repeats is the one kept.
        columns = ", ".join(repr_ident(c) for c in _row_columns(source))
        raw = f"(SELECT * FROM {raw} QUALIFY row_number() OVER (PARTITION BY {columns} ORDER BY _row) = 1)"
    if parsed.retyped:
        replace = ", ".join(f"TRY_CAST(NULLIF(trim(t.{repr_ident(c)}), '') AS {kind}) AS {repr_ident(c)}"
                            for c, kind in parsed.retyped.items())
        inner = f"(SELECT t.* REPLACE ({replace}), t AS _src FROM {raw} t) s"
        src = "s._src"
    else:
        # `_src` keeps the whole source row, so bad rows can be reported and quarantined as they came.
        inner, src = f"{raw} s", "s"
    typed = "".join(f", {t}" for t in parsed.typed)
    # A request's few rows are parsed once into a table: every later step (counts, the canonical views,
    # the feature query) then reads them without planning the parsing again.
    con.execute(
        f"CREATE OR REPLACE TEMP {_object(source)} {source.prefix}_parsed AS SELECT {', '.join(parsed.select)}, {reason} AS reason, "
        f"{parsed.trimmed} AS _trimmed, s._row AS _row, s._whole AS _src "
        f"FROM (SELECT s.*, {src} AS _whole{typed} FROM {inner}) s"
    )


def _reason_text(name: str, spec: FieldSpec) -> str:
    if spec.check == "id":
        return f"empty {name}"
    if spec.check == "timestamp":
        return f"{name} is not a timestamp"
    return f"{name} is not a number"


# Per kind of source: the key whose rows must agree, how a report says they do not, the row reason.
_CONFLICTS = {
    "orders": ("order_id", "whose order has lines with different customers or timestamps",
               "'order_id has lines with different customers or timestamps'"),
    "customers": ("customer_id", "whose customer has other rows with different values",
                  "'customer_id has other rows with different values'"),
}
_CHECK_TEXT = {"id": "with an empty {name}", "timestamp": "that are not timestamps",
               "number": "that are not numbers", "finite_number": "that are not numbers"}


@dataclass(frozen=True)
class _Counts:
    """What one pass over the parsed rows found."""

    rows: int
    bad: int  # rows that fail a check or belong to a conflicting key
    conflicts: bool = False
    spread_orders: int = 0  # orders whose lines' times differ, within the tolerance
    spread_us: int = 0  # the widest such difference
    trimmed: int = 0  # used rows whose ids had surrounding spaces
    no_status: int = 0  # used lines with an empty status (when status is mapped)


def _count_rows(con: duckdb.DuckDBPyConnection, source: _Source, tolerance_us: int) -> _Counts:
    """Rows read, rows that cannot be used, conflicting keys, orders taken at their first line's time,
    trimmed ids and lines without a status.

    One scan when every row passes its checks, a second one otherwise.

    Orders whose lines disagree on customer, or on time by more than the tolerance, cannot be
    trusted, and neither can a customer whose rows disagree on any value, so all their rows are bad.
    Only rows that pass the row checks are compared, and min <> max is "more than one distinct
    value" (both skip NULLs) without keeping per-key sets of values.
    """
    parsed = f"{source.prefix}_parsed"
    key = source.conflict_key
    notes = ["_trimmed"] + (["status IS NULL"] if source.kind == "orders" and "status" in source.mapping else [])
    if key not in source.mapping:
        extra = "".join(f", count(*) FILTER (WHERE reason IS NULL AND {n})" for n in notes)
        rows, bad, *noted = con.execute(f"SELECT count(*), count(reason){extra} FROM {parsed}").fetchall()[0]
        return _Counts(rows, bad, trimmed=noted[0], no_status=noted[1] if len(noted) > 1 else 0)
    span = _span_sql(source, "") if source.kind == "orders" else "0"

    # Most sources have no bad row: compare all rows at once (filtering every aggregate on `valid`
    # costs a tenth of the check), and compare valid rows only when some row failed its checks.
    def count(filtered: bool) -> tuple[int, ...]:
        valid = "valid AND " if filtered else ""
        noted = "".join(f", count(*) FILTER (WHERE {valid}{n}) AS noted_{i}" for i, n in enumerate(notes))
        sums = "".join(f", coalesce(sum(noted_{i}) FILTER (WHERE NOT conflicting), 0)" for i in range(len(notes)))
        spread = "keyed AND NOT conflicting AND span_us > 0"
        return con.execute(f"""
            SELECT sum(lines), sum(lines - valid_lines), coalesce(sum(valid_lines) FILTER (WHERE conflicting), 0),
                   count(*) FILTER (WHERE conflicting), count(*) FILTER (WHERE {spread}),
                   coalesce(max(span_us) FILTER (WHERE {spread}), 0){sums}
            FROM (
                SELECT {key} IS NOT NULL AS keyed, count(*) AS lines, count(*) - count(reason) AS valid_lines,
                       {key} IS NOT NULL AND ({_disagree(source, tolerance_us, filtered)}) AS conflicting,
                       {_span_sql(source, ' FILTER (WHERE valid)') if filtered and span != '0' else span} AS span_us
                       {noted}
                FROM (SELECT *, reason IS NULL AS valid FROM {parsed})
                GROUP BY {key}
            )
        """).fetchall()[0]

    counted = count(filtered=False)
    if counted[1]:
        counted = count(filtered=True)
    rows, failed_checks, conflicting_rows, conflicting, spread_orders, spread_us, *noted = counted
    return _Counts(rows, failed_checks + conflicting_rows, conflicting > 0, spread_orders, int(spread_us),
                   noted[0], noted[1] if len(noted) > 1 else 0)


def _span_sql(source: _Source, flt: str) -> str:
    """SQL for how far apart an order's line times are, in microseconds."""
    return f"epoch_us(max(order_ts){flt}) - epoch_us(min(order_ts){flt})"


def _disagree(source: _Source, tolerance_us: int, filtered: bool = True) -> str:
    """SQL over a key's rows: true when they conflict (orders: two customers, or times further apart
    than the tolerance; customers: two values of any field)."""
    flt = " FILTER (WHERE valid)" if filtered else ""
    if source.kind == "orders":
        parts = [f"min(customer_id){flt} <> max(customer_id){flt}", f"{_span_sql(source, flt)} > {tolerance_us}"]
    else:
        parts = [f"min({c}){flt} <> max({c}){flt}" for c in source.fields
                 if c != "customer_id" and c in source.mapping]
    return " OR ".join(parts) or "false"


def _create_typed_view(con: duckdb.DuckDBPyConnection, source: _Source, conflicts: bool, tolerance_us: int) -> None:
    """`<prefix>_typed`: the parsed rows, with rows of conflicting keys given that reason too."""
    parsed, typed, key = f"{source.prefix}_parsed", f"{source.prefix}_typed", source.conflict_key
    if not conflicts:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {typed} AS SELECT * FROM {parsed}")
        return
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {source.prefix}_conflicts AS SELECT {key} FROM {parsed} "
        f"WHERE reason IS NULL AND {key} IS NOT NULL GROUP BY {key} "
        f"HAVING {_disagree(source, tolerance_us, filtered=False)}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {typed} AS SELECT p.* REPLACE (CASE WHEN c.{key} IS NOT NULL "
        f"THEN concat_ws('; ', p.reason, {_CONFLICTS[source.kind][2]}) ELSE p.reason END AS reason) "
        f"FROM {parsed} p LEFT JOIN {source.prefix}_conflicts c USING ({key})"
    )


def _problem_kinds(source: _Source, config: Config) -> list[tuple[_Mapped, str, str]]:
    """Every kind of bad row the source can have, in the order reports list them: (field, reason tag SQL, text)."""
    checks = [(source.mapping[c.field], repr_sql(c.tag), c.text) for c in _parsed_columns(source, config).checks]
    if source.conflict_key in source.mapping:
        _, text, reason = _CONFLICTS[source.kind]
        if source.kind == "orders":
            minutes = config.orders.order_time_tolerance_minutes
            text += f" more than {minutes:g} minutes apart (orders.order_time_tolerance_minutes)"
        checks.append((source.mapping[source.conflict_key], reason, text))
    return checks


def problem_order(con: duckdb.DuckDBPyConnection, kind: str, schema: pa.Schema, config: Config,
                  scope_types: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(check, column) of every Problem a source of raw rows with `schema` can have, in the order a report lists
    them: how problems found in parts of a source are put in order again."""
    _lock_to_inputs(con, [])
    source = _prepare_raw_table(con, kind, schema.empty_table(), config, kind, scope_types)
    return [(text, mapped.shown()) for mapped, _, text in _problem_kinds(source, config)]


def _describe_problems(con: duckdb.DuckDBPyConnection, source: _Source, config: Config) -> list[Problem]:
    """Per check, the count and first example rows of the bad rows, in one scan (run only when there are some)."""
    checks = _problem_kinds(source, config)
    aggs = []
    for mapped, tag, _ in checks:
        shown = _shown_value(source, mapped)
        flag = f"contains(coalesce(t.reason, ''), {tag})"
        aggs.append(f"count(*) FILTER (WHERE {flag})")
        aggs.append(f"min_by(struct_pack(r := t._row, v := {shown}), t._row, {_EXAMPLES}) FILTER (WHERE {flag})")
    row = con.execute(
        f"SELECT {', '.join(aggs)} FROM {source.prefix}_typed t WHERE t.reason IS NOT NULL"
    ).fetchall()[0]
    problems = []
    for i, (mapped, _, text) in enumerate(checks):
        count, examples = row[2 * i], row[2 * i + 1]
        if count:
            pairs = tuple((int(e["r"]), e["v"]) for e in examples)
            problems.append(Problem(check=text, column=mapped.shown(), count=count, examples=pairs))
    return problems


def _shown_value(source: _Source, mapped: _Mapped) -> str:
    """SQL for what a report shows of a bad row: the column's value, or the values an expression reads."""
    if not mapped.is_expression:
        return f"CAST({_source_expr(mapped.text, row='t._src')} AS VARCHAR)"
    used = _referenced(mapped.text, [c for c in source.types if c != "filename"]) or list(source.types)[:3]
    parts = [f"{repr_sql(c + '=')} || coalesce(CAST({_source_expr(c, row='t._src')} AS VARCHAR), '')" for c in used]
    return "concat_ws(', ', " + ", ".join(parts) + ")"


def bad_rows_error(label: str, problems: list[Problem]) -> IntakeError:
    """The one-paragraph error for a source's bad rows (found in parts, by another engine, and added up)."""
    return IntakeError(_bad_rows_message(label, problems))


def _bad_rows_message(label: str, problems: list[Problem], in_memory: bool = False) -> str:
    details = "; ".join(p.describe() for p in problems)
    if in_memory:
        # A request has no quarantine: the sender fixes the rows (numbered from 1 across the request's lines).
        return f"{label}: rows that cannot be used: {details}. Rows count the lines sent, from 1; fix them and send again."
    return (
        f"{label}: rows that cannot be used: {details}. Fix them in the source, or pass "
        "--quarantine bad_rows.csv to set them aside with a reason and use the rest."
    )


def _write_quarantine(con: duckdb.DuckDBPyConnection, source: _Source, path: Path) -> None:
    """Bad rows with their source values, the source row number and the reason, written atomically."""
    source_cols = ", ".join(f"{_source_expr(c, row='_src')} AS {repr_ident(c)}" for c in source.types)
    rel = con.sql(
        f"SELECT _row AS source_row, {source_cols}, reason FROM {source.prefix}_typed "
        "WHERE reason IS NOT NULL ORDER BY _row"
    )
    write_relation(con, rel, path)


def _source_expr(column: str, row: str = "") -> str:
    """SQL for a source column (`row`: a struct holding the source row)."""
    return (f"{row}." if row else "") + repr_ident(column)
