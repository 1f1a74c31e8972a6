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

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from configs.schema import Config, ConfigError, SourceConfig
from features.engine import connect, is_locked, lock_external_access, repr_ident
from features.expressions import ExpressionRefused, ExpressionSyntaxError, check_expression, sandbox
from features.output import write_relation

__all__ = [
    "CANONICAL_TYPES",
    "Intake",
    "IntakeError",
    "IntakeReport",
    "Problem",
    "customer_fields",
    "open_customers",
    "open_orders",
    "open_sources",
    "read_customers",
    "read_orders",
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
_DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]*")
_EXAMPLES = 3


class IntakeError(Exception):
    """Input that cannot be used as it is; the message is one paragraph for the person who supplied it."""


@dataclass(frozen=True)
class FieldSpec:
    """One canonical field: its SQL type, whether every row needs it, and what makes a value bad."""

    sql_type: str
    required: bool = False
    # "id": blank is bad; "timestamp" / "number": a non-blank value that does not parse is bad
    # (and, when required, a blank one too); "finite_number" also rejects inf and NaN.
    check: str | None = None


ORDER_FIELDS: dict[str, FieldSpec] = {
    "customer_id": FieldSpec("VARCHAR", True, "id"),
    "order_id": FieldSpec("VARCHAR"),
    "order_ts": FieldSpec("TIMESTAMP", True, "timestamp"),
    "amount": FieldSpec("DOUBLE", True, "finite_number"),
    "quantity": FieldSpec("DOUBLE", False, "number"),
    "category": FieldSpec("VARCHAR"),
    "product_id": FieldSpec("VARCHAR"),
    "discount": FieldSpec("DOUBLE", False, "number"),
    "channel": FieldSpec("VARCHAR"),
    "status": FieldSpec("VARCHAR"),
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

    @property
    def rows_used(self) -> int:
        """Rows that reach the feature engine."""
        return self.rows_read - self.rows_quarantined

    def summary(self) -> str:
        """'read 1,000 = used 990 + quarantined 10 (-> bad.csv)'."""
        text = f"read {self.rows_read:,} = used {self.rows_used:,} + quarantined {self.rows_quarantined:,}"
        if self.quarantine_path and self.rows_quarantined:
            text += f" (-> {self.quarantine_path})"
        if self.duplicates_merged:
            text += f"; {self.duplicates_merged:,} repeated identical rows of a customer kept once"
        return text


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
    inputs: list[Path]
    scope_types: dict[str, str]  # what an expression sees: text columns that are all numbers become numbers

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
    sources = [_prepare_orders(con, Path(orders), config)]
    if customers is not None:
        sources.append(_prepare_customers(con, Path(customers), config))
    quarantines = [quarantine, _customers_quarantine(Path(quarantine)) if quarantine is not None else None]
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
    return _validate(con, [_prepare_customers(con, Path(source), config)], config, [quarantine])[0]


def _validate(con: duckdb.DuckDBPyConnection, sources: list["_Source"], config: Config,
              quarantines: list[str | os.PathLike[str] | None]) -> list[IntakeReport]:
    """Check every row of the prepared sources (each with its quarantine path) and create their views."""
    # The connection already reads nothing but the inputs (_lock_to_inputs); from here on no setting
    # changes either, whatever the expressions and views evaluated on it hold.
    con.execute("SET lock_configuration = true")
    return [_finish(con, source, config, target) for source, target in zip(sources, quarantines)]


def _lock_to_inputs(con: duckdb.DuckDBPyConnection, sources: list[tuple[Path, SourceConfig]]) -> None:
    """Switch off file and network access on `con` except for reading the sources, before anything reads them.

    Always, not only for mapping expressions: a DuckDB database given as input can hold a view
    that reads any file. A connection that is already locked stays as it is (it reads no more).
    """
    if is_locked(con):
        return
    inputs = []
    for path, cfg in sources:
        db_path, _ = _split_duckdb_source(path, cfg)
        # DuckDB looks for a database's write-ahead log beside it, even read-only.
        inputs += [path] if db_path is None else [db_path, db_path.with_name(db_path.name + ".wal")]
    lock_external_access(con, inputs)


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


def _customers_quarantine(path: Path) -> Path:
    return path.with_name(f"{path.stem}.customers{path.suffix}")


# ---------------------------------------------------------------------------------------------
# Reading and mapping


def _prepare_orders(con: duckdb.DuckDBPyConnection, path: Path, config: Config) -> _Source:
    cfg = config.orders
    wanted = {name: _Mapped(text, False, f"orders.columns.{name}") for name, text in cfg.columns.mapped().items()}
    return _prepare(con, "orders", path, cfg, ORDER_FIELDS, wanted, "--orders")


def _prepare_customers(con: duckdb.DuckDBPyConnection, path: Path, config: Config) -> _Source:
    cfg = config.customers
    wanted = {name: _Mapped(text, False, f"customers.columns.{name}") for name, text in cfg.columns.mapped().items()}
    for name in cfg.attributes:
        entry = f"customers.attributes.{name}" + (".column" if cfg.attributes[name].column else "")
        wanted[name] = _Mapped(cfg.source_column(name), False, entry)
    source = _prepare(con, "customers", path, cfg, customer_fields(config), wanted, "--customers")
    used = {m.text for m in source.mapping.values() if not m.is_expression}
    used |= {c for m in source.mapping.values() if m.is_expression for c in _referenced(m.text, list(source.types))}
    source.report.ignored_columns = [c for c in source.types if c not in used and c != "filename"]
    return source


def _prepare(con: duckdb.DuckDBPyConnection, kind: str, path: Path, cfg: SourceConfig, fields: dict[str, FieldSpec],
             wanted: dict[str, _Mapped], option: str) -> _Source:
    """Register the raw source, resolve the mapping (columns and checked expressions)."""
    label = str(path)
    prefix = f"_lifetag_{kind}"
    raw, inputs = _register_raw(con, path, cfg, label, prefix, kind, option)
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
    return _Source(kind, label, prefix, fields, mapping, types, report, inputs, scope_types)


def _register_raw(con: duckdb.DuckDBPyConnection, path: Path, cfg: SourceConfig, label: str, prefix: str,
                  kind: str, option: str) -> tuple[str, list[Path]]:
    """Create the `<prefix>_raw` view (source columns plus `_row`, the 1-based data row); its name and input paths."""
    db_path, table = _split_duckdb_source(path, cfg)
    if db_path is None and not path.exists():
        raise IntakeError(f"{label}: cannot read the {kind}: no such file or folder. Check the path passed to {option}.")
    raw = f"{prefix}_raw"
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {raw} AS {_raw_sql(con, path, cfg, db_path, table, prefix, kind)}")
        first = con.execute(f"SELECT * FROM {raw} LIMIT 1").fetchall()
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IntakeError(
            f"{label}: cannot read the {kind} ({first_line}). Check that the file is a complete "
            "CSV, Parquet or DuckDB file and that lifetag may read it."
        ) from None
    if not first:
        raise IntakeError(f"{label}: the source has no rows. Check that it is the right file and that it was fully written.")
    return raw, [(db_path or path).resolve()]


def _split_duckdb_source(path: Path, cfg: SourceConfig) -> tuple[Path | None, str]:
    """`shop.duckdb` (table from config) or `shop.duckdb:table`; (None, '') for other sources."""
    text = str(path)
    for suffix in _DUCKDB_SUFFIXES:
        if text.endswith(suffix):
            return path, cfg.table
        marker = suffix + ":"
        if marker in text:
            head, _, table = text.rpartition(":")
            return Path(head), table
    return None, ""


def _raw_sql(con: duckdb.DuckDBPyConnection, path: Path, cfg: SourceConfig, db_path: Path | None, table: str,
             prefix: str, kind: str) -> str:
    if db_path is not None:
        if not db_path.exists():
            raise IntakeError(f"{db_path}: cannot read the {kind}: no such DuckDB database.")
        alias = f"{prefix}_src"
        # The path is a bound parameter: no file name becomes SQL text.
        con.execute(f"ATTACH IF NOT EXISTS ? AS {alias} (READ_ONLY)", [str(db_path)])
        source = f"{alias}.{repr_ident(table)}"
        _check_reads_nothing_else(con, source, db_path, table, kind)
        return f"SELECT *, row_number() OVER () AS _row FROM {source}"
    if path.is_dir():
        parquet = sorted(path.rglob("*.parquet"))
        if parquet:
            glob = _quote_str(str(path / "**" / "*.parquet"))
            # Rows are numbered across the folder; `filename` tells which file a reported row is in.
            return f"SELECT *, row_number() OVER () AS _row FROM read_parquet({glob}, filename = true)"
        csv_files = sorted(path.rglob("*.csv"))
        if not csv_files:
            raise IntakeError(f"{path}: the folder holds no .parquet or .csv files.")
        return _csv_sql(_quote_str(str(path / "**" / "*.csv")), cfg, _first_line_fields(csv_files[0]))
    if path.suffix.lower() == ".parquet":
        return f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _row FROM read_parquet({_quote_str(str(path))}, file_row_number = true)"
    if path.stat().st_size == 0:
        raise IntakeError(f"{path}: the file is empty (0 bytes). Check that the export finished writing.")
    return _csv_sql(_quote_str(str(path)), cfg, _first_line_fields(path))


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


def _whitespace_sql(path_sql: str, header: list[str]) -> str:
    """Fixed-width style exports (CDNOW): whole lines split on runs of blanks, named by the header."""
    fields = ", ".join(f"f[{i + 1}] AS {_quote_ident(name)}" for i, name in enumerate(header))
    lines = (
        f"SELECT regexp_split_to_array(trim(line), '\\s+') AS f, row_number() OVER () - 1 AS _row FROM "
        f"read_csv({path_sql}, columns = {{'line': 'VARCHAR'}}, delim = '\\x1f', header = false, "
        "quote = '', escape = '', auto_detect = false) WHERE trim(line) <> ''"
    )
    return f"SELECT {fields}, _row FROM ({lines}) WHERE _row > 0"


def _first_line_fields(path: Path) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                return line.split()
    return []


def _csv_sql(path_sql: str, cfg: SourceConfig, header: list[str]) -> str:
    if cfg.delimiter == "whitespace":
        return _whitespace_sql(path_sql, header)
    delim = f", delim = {_quote_str(cfg.delimiter)}" if cfg.delimiter else ""
    return (
        f"SELECT *, row_number() OVER () AS _row FROM read_csv({path_sql}, all_varchar = true, "
        f"header = true{delim})"
    )


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


def _expression_scope_types(con: duckdb.DuckDBPyConnection, raw: str, types: dict[str, str]) -> dict[str, str]:
    """Column types as expressions see them: a text column whose every non-blank value is a number is a number.

    CSV columns are read as text (ids keep their leading zeros, bad values can be reported), but
    `Quantity * UnitPrice` needs numbers. Every row is checked, not a sample: one invoice number
    starting with 'C' must keep `Invoice LIKE 'C%'` working on text.
    """
    text_columns = [c for c, t in types.items() if t == "VARCHAR" and c != "filename"]
    if not text_columns:
        return dict(types)
    checks = []
    for column in text_columns:
        value = f"NULLIF(trim({_quote_ident(column)}), '')"
        # Not TRY_CAST to BIGINT: it rounds '6.95' to 7.
        checks.append(f"bool_and({value} IS NULL OR (regexp_full_match({value}, '[+-]?[0-9]{{1,18}}')))")
        checks.append(f"bool_and({value} IS NULL OR TRY_CAST({value} AS DOUBLE) IS NOT NULL)")
        checks.append(f"count({value})")
    row = con.execute(f"SELECT {', '.join(checks)} FROM {raw}").fetchall()[0]
    scope = dict(types)
    for i, column in enumerate(text_columns):
        integers, numbers, non_blank = row[3 * i], row[3 * i + 1], row[3 * i + 2]
        if non_blank:
            scope[column] = "BIGINT" if integers else "DOUBLE" if numbers else "VARCHAR"
    return scope


def _referenced(expression: str, columns: list[str]) -> list[str]:
    """Source columns an expression mentions (by name, quoted or not)."""
    found = []
    for column in columns:
        bare = re.search(r"(?<![\w\"'])" + re.escape(column) + r"(?![\w\"'])", expression)
        if bare or _quote_ident(column) in expression:
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
        con.execute(f"CREATE TABLE source ({', '.join(f'{_quote_ident(c)} {t}' for c, t in columns.items())})")
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
    _create_parsed_view(con, source, config)
    if source.has_expressions:
        _evaluate_expressions(con, source)
    report.rows_read, report.rows_quarantined, conflicts = _count_rows(con, source)
    view = source.kind
    columns = ", ".join(source.fields)
    good = f"{source.prefix}_parsed"
    if report.rows_quarantined:
        _create_typed_view(con, source, conflicts)
        report.problems = _describe_problems(con, source)
        if quarantine is None:
            raise IntakeError(_bad_rows_message(source.label, report.problems))
        _write_quarantine(con, source, Path(quarantine))
        report.quarantine_path = str(quarantine)
        good = f"(SELECT * FROM {source.prefix}_typed WHERE reason IS NULL)"
    if source.kind == "customers":
        # One row per customer: repeated rows of a customer agree (others are conflicts), so any
        # row's values will do; max() also fills a value one row left blank.
        merged = ", ".join(f"max({c}) AS {c}" for c in source.fields if c != "customer_id")
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT customer_id, {merged} FROM {good} "
                    "GROUP BY customer_id")
        distinct = con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]
        report.duplicates_merged = report.rows_used - int(distinct)
    else:
        # Every row is valid: the view reads the parsed source without per-row reasons or joins.
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns} FROM {good}")
    return report


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


def _typed_expr(name: str, spec: FieldSpec, source: str, source_type: str, cfg: SourceConfig) -> str:
    if spec.sql_type == "DOUBLE":
        return f"TRY_CAST({source} AS DOUBLE)"
    if spec.sql_type == "TIMESTAMP":
        if source_type.startswith(("TIMESTAMP", "DATE")):
            return f"CAST({source} AS TIMESTAMP)"
        text = f"NULLIF(trim(CAST({source} AS VARCHAR)), '')"
        if cfg.timestamp_format:
            # strptime yields TIMESTAMPTZ for formats with %z; normalise both kinds to UTC wall time.
            return f"CAST(CAST(try_strptime({text}, {_quote_str(cfg.timestamp_format)}) AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    return f"CAST({source} AS VARCHAR)"


def _bad_row_condition(spec: FieldSpec, source: str, source_type: str, typed: str) -> str | None:
    """SQL that is true for a row this field makes unusable; None when no row can fail.

    Typed sources (Parquet, DuckDB) skip the text tests their values cannot fail, which saves a
    cast to text per row: a number or time is never blank, and a number always converts to DOUBLE.
    """
    if spec.check is None:
        return None
    is_number = _NUMBER_TYPES.fullmatch(source_type) is not None
    never_blank = is_number or _TIME_TYPES.fullmatch(source_type) is not None
    is_blank = f"{source} IS NULL" if never_blank else _blank_sql(f"CAST({source} AS VARCHAR)")
    if spec.check == "id":
        return is_blank
    if spec.check == "finite_number":
        return f"{typed} IS NULL OR isinf({typed}) OR isnan({typed})"
    if spec.required:
        return f"{typed} IS NULL"
    if spec.check == "number" and is_number:
        return None
    return f"NOT {is_blank} AND {typed} IS NULL"


def _blank_sql(text: str) -> str:
    """SQL true when `text` is NULL or only spaces (what trim removes).

    Only a value that starts with a space is trimmed: trimming every id cost a fifth of the check.
    """
    return f"({text} IS NULL OR {text} = '' OR (starts_with({text}, ' ') AND trim({text}) = ''))"


def _create_parsed_view(con: duckdb.DuckDBPyConnection, source: _Source, config: Config) -> None:
    """`<prefix>_parsed`: canonical columns, the source row number and a `reason` (NULL when valid)."""
    cfg = config.orders if source.kind == "orders" else config.customers
    retyped = {c: t for c, t in source.scope_types.items() if t != source.types[c]} if source.has_expressions else {}
    # Expressions see retyped columns under their own names; plain columns then read the source row.
    row = "_src" if retyped else ""
    select, checks = [], []
    for name, spec in source.fields.items():
        if name not in source.mapping:
            select.append(f"CAST(NULL AS {spec.sql_type}) AS {name}")
            continue
        mapped = source.mapping[name]
        if mapped.is_expression:
            value, value_type = f"({mapped.text})", mapped.sql_type or "VARCHAR"
        else:
            value, value_type = _source_expr(mapped.text, row), source.types.get(mapped.text, "VARCHAR")
        typed = _typed_expr(name, spec, value, value_type, cfg)
        select.append(f"{typed} AS {name}")
        condition = _bad_row_condition(spec, value, value_type, typed)
        if mapped.is_expression and spec.check in ("timestamp", "number") and not spec.required:
            # A computed optional date or number that comes out empty while the columns it reads are
            # not (e.g. try_strptime on a malformed date) is a bad value, not a missing one.
            inputs = _referenced(mapped.text, [c for c in source.types if c != "filename"])
            if inputs:
                blank = " AND ".join(_blank_sql(f"CAST({_source_expr(c, 's._src' if row else 's')} AS VARCHAR)")
                                     for c in inputs)
                condition = f"{typed} IS NULL AND NOT ({blank})"
        if condition is not None:
            checks.append(f"CASE WHEN {condition} THEN {_reason(name, spec)} END")
    reason = f"NULLIF(concat_ws('; ', {', '.join(checks)}), '')" if checks else "CAST(NULL AS VARCHAR)"
    raw = f"{source.prefix}_raw"
    if retyped:
        replace = ", ".join(f"TRY_CAST(NULLIF(trim(t.{_quote_ident(c)}), '') AS {kind}) AS {_quote_ident(c)}"
                            for c, kind in retyped.items())
        inner = f"(SELECT t.* REPLACE ({replace}), t AS _src FROM {raw} t) s"
        src = "s._src"
    else:
        # `_src` keeps the whole source row, so bad rows can be reported and quarantined as they came.
        inner, src = f"{raw} s", "s"
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {source.prefix}_parsed AS SELECT {', '.join(select)}, {reason} AS reason, "
        f"s._row AS _row, {src} AS _src FROM {inner}"
    )


def _reason(name: str, spec: FieldSpec) -> str:
    if spec.check == "id":
        return f"'empty {name}'"
    if spec.check == "timestamp":
        return f"'{name} is not a timestamp'"
    return f"'{name} is not a number'"


# Per kind of source: the key whose rows must agree, how a report says they do not, the row reason.
_CONFLICTS = {
    "orders": ("order_id", "whose order has lines with different customers or timestamps",
               "'order_id has lines with different customers or timestamps'"),
    "customers": ("customer_id", "whose customer has other rows with different values",
                  "'customer_id has other rows with different values'"),
}
_CHECK_TEXT = {"id": "with an empty {name}", "timestamp": "that are not timestamps",
               "number": "that are not numbers", "finite_number": "that are not numbers"}


def _count_rows(con: duckdb.DuckDBPyConnection, source: _Source) -> tuple[int, int, bool]:
    """Rows read, rows that cannot be used, and whether some keys have conflicting rows.

    One scan when every row passes its checks, a second one otherwise.

    Orders whose lines disagree on customer or time cannot be trusted, and neither can a customer
    whose rows disagree on any value, so all their rows are bad. Only rows that pass the row checks
    are compared, and min <> max is "more than one distinct value" (both skip NULLs) without keeping
    per-key sets of values.
    """
    parsed = f"{source.prefix}_parsed"
    key = source.conflict_key
    if key not in source.mapping:
        rows, bad = con.execute(f"SELECT count(*), count(reason) FROM {parsed}").fetchall()[0]
        return rows, bad, False
    # Most sources have no bad row: compare all rows at once (filtering every aggregate on `valid`
    # costs a tenth of the check), and compare valid rows only when some row failed its checks.
    def count(filtered: bool) -> tuple[int, int, int, int]:
        return con.execute(f"""
            SELECT sum(lines), sum(lines - valid_lines), coalesce(sum(valid_lines) FILTER (WHERE conflicting), 0),
                   count(*) FILTER (WHERE conflicting)
            FROM (
                SELECT {key}, count(*) AS lines, count(*) - count(reason) AS valid_lines,
                       {key} IS NOT NULL AND ({_disagree(source, filtered)}) AS conflicting
                FROM (SELECT *, reason IS NULL AS valid FROM {parsed})
                GROUP BY {key}
            )
        """).fetchall()[0]

    rows, failed_checks, conflicting_rows, conflicting = count(filtered=False)
    if failed_checks:
        rows, failed_checks, conflicting_rows, conflicting = count(filtered=True)
    return rows, failed_checks + conflicting_rows, conflicting > 0


def _compared(source: _Source) -> list[str]:
    if source.kind == "orders":
        return ["order_ts", "customer_id"]
    return [c for c in source.fields if c != "customer_id" and c in source.mapping]


def _disagree(source: _Source, filtered: bool = True) -> str:
    flt = " FILTER (WHERE valid)" if filtered else ""
    parts = [f"min({c}){flt} <> max({c}){flt}" for c in _compared(source)]
    return " OR ".join(parts) or "false"


def _create_typed_view(con: duckdb.DuckDBPyConnection, source: _Source, conflicts: bool) -> None:
    """`<prefix>_typed`: the parsed rows, with rows of conflicting keys given that reason too."""
    parsed, typed, key = f"{source.prefix}_parsed", f"{source.prefix}_typed", source.conflict_key
    if not conflicts:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {typed} AS SELECT * FROM {parsed}")
        return
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {source.prefix}_conflicts AS SELECT {key} FROM {parsed} "
        f"WHERE reason IS NULL AND {key} IS NOT NULL GROUP BY {key} HAVING {_disagree(source, filtered=False)}"
    )
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW {typed} AS SELECT p.* REPLACE (CASE WHEN c.{key} IS NOT NULL "
        f"THEN concat_ws('; ', p.reason, {_CONFLICTS[source.kind][2]}) ELSE p.reason END AS reason) "
        f"FROM {parsed} p LEFT JOIN {source.prefix}_conflicts c USING ({key})"
    )


def _describe_problems(con: duckdb.DuckDBPyConnection, source: _Source) -> list[Problem]:
    """Per check, the count and first example rows of the bad rows, in one scan (run only when there are some)."""
    checks = []
    for name, spec in source.fields.items():
        if spec.check and name in source.mapping:
            text = _CHECK_TEXT[spec.check].format(name=name.replace("_", " "))
            checks.append((source.mapping[name], _reason(name, spec), text))
    if source.conflict_key in source.mapping:
        _, text, reason = _CONFLICTS[source.kind]
        checks.append((source.mapping[source.conflict_key], reason, text))
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
    parts = [f"{_quote_str(c + '=')} || coalesce(CAST({_source_expr(c, row='t._src')} AS VARCHAR), '')" for c in used]
    return "concat_ws(', ', " + ", ".join(parts) + ")"


def _bad_rows_message(label: str, problems: list[Problem]) -> str:
    details = "; ".join(p.describe() for p in problems)
    return (
        f"{label}: rows that cannot be used: {details}. Fix them in the source, or pass "
        "--quarantine bad_rows.csv to set them aside with a reason and use the rest."
    )


def _write_quarantine(con: duckdb.DuckDBPyConnection, source: _Source, path: Path) -> None:
    """Bad rows with their source values, the source row number and the reason, written atomically."""
    source_cols = ", ".join(f"{_source_expr(c, row='_src')} AS {_quote_ident(c)}" for c in source.types)
    rel = con.sql(
        f"SELECT _row AS source_row, {source_cols}, reason FROM {source.prefix}_typed "
        "WHERE reason IS NOT NULL ORDER BY _row"
    )
    write_relation(con, rel, path)


def _source_expr(column: str, row: str = "") -> str:
    """SQL for a source column (`row`: a struct holding the source row)."""
    return (f"{row}." if row else "") + _quote_ident(column)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
