"""Order-history intake: read a CSV, Parquet or DuckDB source, map its columns, validate every row.

Each row read is either used or reported: bad rows stop the run with one paragraph naming the file,
column, count and example rows, or (with a quarantine path) are written there with a `reason`.
The valid rows are exposed to the feature engine as the canonical `orders` view:

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
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pandas as pd

from configs.schema import OPTIONAL_ORDER_FIELDS, REQUIRED_ORDER_FIELDS, Config, OrdersConfig
from features.engine import connect
from features.output import write_relation

__all__ = [
    "CANONICAL_TYPES",
    "IntakeError",
    "IntakeReport",
    "Problem",
    "open_orders",
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
_NUMERIC_FIELDS = ("amount", "quantity", "discount")
# Source types whose values convert to DOUBLE, and (with the time types) never print as blank text.
_NUMBER_TYPES = re.compile(r"(U?(TINY|SMALL|BIG|HUGE)?INT(EGER)?|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))")
_TIME_TYPES = re.compile(r"(DATE|TIMESTAMP(_S|_MS|_NS| WITH TIME ZONE)?)")
_DUCKDB_SUFFIXES = (".duckdb", ".db", ".ddb")
_EXAMPLES = 3


class IntakeError(Exception):
    """Input that cannot be used as it is; the message is one paragraph for the person who supplied it."""


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

    @property
    def rows_used(self) -> int:
        """Rows that reach the feature engine."""
        return self.rows_read - self.rows_quarantined

    def summary(self) -> str:
        """'read 1,000 = used 990 + quarantined 10 (-> bad.csv)'."""
        text = f"read {self.rows_read:,} = used {self.rows_used:,} + quarantined {self.rows_quarantined:,}"
        if self.quarantine_path and self.rows_quarantined:
            text += f" (-> {self.quarantine_path})"
        return text


def open_orders(
    con: duckdb.DuckDBPyConnection,
    source: str | os.PathLike[str],
    config: Config,
    quarantine: str | os.PathLike[str] | None = None,
    view: str = "orders",
) -> IntakeReport:
    """Validate `source` and create the canonical `view` of its valid rows in `con`.

    Raises IntakeError for an unreadable or empty source, a missing required column, or (without
    `quarantine`) any bad row; with `quarantine`, bad rows go to that file with a `reason` column.
    """
    label = str(source)
    orders_cfg = config.orders
    raw = _register_raw(con, Path(source), orders_cfg, label)
    types = _source_columns(con, raw)
    mapping, missing_optional = _resolve_mapping(orders_cfg, list(types), label)
    _create_parsed_view(con, raw, mapping, types, orders_cfg)
    report = IntakeReport(source=label, missing_optional=missing_optional)
    report.rows_read, report.rows_quarantined, conflicts = _count_rows(con, "order_id" in mapping)
    columns = ", ".join(CANONICAL_TYPES)
    if not report.rows_quarantined:
        # Every row is valid: the view reads the parsed source without per-row reasons or joins.
        con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns} FROM _lifetag_parsed")
        return report
    _create_typed_view(con, conflicts)
    report.problems = _describe_problems(con, mapping)
    if quarantine is None:
        raise IntakeError(_bad_rows_message(label, report.problems))
    _write_quarantine(con, types, Path(quarantine))
    report.quarantine_path = str(quarantine)
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT {columns} FROM _lifetag_typed WHERE reason IS NULL")
    return report


def read_orders(
    source: str | os.PathLike[str], config: Config, quarantine: str | os.PathLike[str] | None = None
) -> tuple[pd.DataFrame, IntakeReport]:
    """The valid rows of `source` as a canonical pandas frame, with the intake report."""
    con = connect(config.engine)
    try:
        report = open_orders(con, source, config, quarantine)
        return con.sql("SELECT * FROM orders").df(), report
    finally:
        con.close()


def _register_raw(con: duckdb.DuckDBPyConnection, path: Path, cfg: OrdersConfig, label: str) -> str:
    """Create the `_lifetag_raw` view (source columns plus `_row`, the 1-based data row) and name it."""
    db_path, table = _split_duckdb_source(path, cfg)
    if db_path is None and not path.exists():
        raise IntakeError(f"{label}: cannot read the orders: no such file or folder. Check the path passed to --orders.")
    try:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _lifetag_raw AS {_raw_sql(con, path, cfg, db_path, table)}")
        first = con.execute("SELECT * FROM _lifetag_raw LIMIT 1").fetchall()
    except duckdb.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IntakeError(
            f"{label}: cannot read the orders ({first_line}). Check that the file is a complete "
            "CSV, Parquet or DuckDB file and that lifetag may read it."
        ) from None
    if not first:
        raise IntakeError(f"{label}: the source has no rows. Check that it is the right file and that it was fully written.")
    return "_lifetag_raw"


def _split_duckdb_source(path: Path, cfg: OrdersConfig) -> tuple[Path | None, str]:
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


def _raw_sql(con: duckdb.DuckDBPyConnection, path: Path, cfg: OrdersConfig, db_path: Path | None, table: str) -> str:
    if db_path is not None:
        if not db_path.exists():
            raise IntakeError(f"{db_path}: cannot read the orders: no such DuckDB database.")
        con.execute(f"ATTACH IF NOT EXISTS {_quote_str(str(db_path))} AS lifetag_src (READ_ONLY)")
        return f"SELECT *, row_number() OVER () AS _row FROM lifetag_src.{_quote_ident(table)}"
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


def _csv_sql(path_sql: str, cfg: OrdersConfig, header: list[str]) -> str:
    if cfg.delimiter == "whitespace":
        return _whitespace_sql(path_sql, header)
    delim = f", delim = {_quote_str(cfg.delimiter)}" if cfg.delimiter else ""
    return (
        f"SELECT *, row_number() OVER () AS _row FROM read_csv({path_sql}, all_varchar = true, "
        f"header = true{delim})"
    )


def _resolve_mapping(cfg: OrdersConfig, present: list[str], label: str) -> tuple[dict[str, str], list[str]]:
    """Field -> source column for the mapped fields the source has; required ones must be there."""
    mapping = cfg.columns.mapped()
    available = [c for c in present if c != "filename"]
    missing = [f for f in REQUIRED_ORDER_FIELDS if mapping[f] not in available]
    if missing:
        field_name = missing[0]
        raise IntakeError(
            f"{label}: required column '{mapping[field_name]}' (for {field_name}) is missing. "
            f"The source has columns: {', '.join(available)}. Map the right one in your config under "
            f"orders.columns.{field_name}."
            + (f" Also missing: {', '.join(repr(mapping[f]) for f in missing[1:])}." if len(missing) > 1 else "")
        )
    missing_optional = [f for f in OPTIONAL_ORDER_FIELDS if f in mapping and mapping[f] not in available]
    return {f: c for f, c in mapping.items() if f not in missing_optional}, missing_optional


def _source_columns(con: duckdb.DuckDBPyConnection, raw: str) -> dict[str, str]:
    """Source column name -> DuckDB type."""
    types = dict(con.execute(f"SELECT column_name, column_type FROM (DESCRIBE {raw})").fetchall())
    types.pop("_row", None)
    return types


def _source_expr(column: str, row: str = "") -> str:
    """SQL for a source column (`row`: a struct holding the source row)."""
    return (f"{row}." if row else "") + _quote_ident(column)


def _typed_expr(name: str, source: str, source_type: str, cfg: OrdersConfig) -> str:
    if name in _NUMERIC_FIELDS:
        return f"TRY_CAST({source} AS DOUBLE)"
    if name == "order_ts":
        if source_type.startswith("TIMESTAMP WITH TIME ZONE"):
            return f"CAST({source} AS TIMESTAMP)"
        if source_type.startswith(("TIMESTAMP", "DATE")):
            return f"CAST({source} AS TIMESTAMP)"
        text = f"NULLIF(trim(CAST({source} AS VARCHAR)), '')"
        if cfg.timestamp_format:
            # strptime yields TIMESTAMPTZ for formats with %z; normalise both kinds to UTC wall time.
            return f"CAST(CAST(try_strptime({text}, {_quote_str(cfg.timestamp_format)}) AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
    return f"CAST({source} AS VARCHAR)"


def _bad_row_condition(name: str, source: str, source_type: str, typed: str) -> str | None:
    """SQL that is true for a row this field makes unusable; None when no row can fail.

    Typed sources (Parquet, DuckDB) skip the text tests their values cannot fail, which saves a
    cast to text per row: a number or time is never blank, and a number always converts to DOUBLE.
    """
    is_number = _NUMBER_TYPES.fullmatch(source_type) is not None
    never_blank = is_number or _TIME_TYPES.fullmatch(source_type) is not None
    is_blank = f"{source} IS NULL" if never_blank else f"NULLIF(trim(CAST({source} AS VARCHAR)), '') IS NULL"
    if name == "customer_id":
        return is_blank
    if name == "order_ts":
        return f"{typed} IS NULL"
    if name == "amount":
        return f"{typed} IS NULL OR isinf({typed}) OR isnan({typed})"
    if name in _NUMERIC_FIELDS:
        return None if is_number else f"NOT {is_blank} AND {typed} IS NULL"
    return None


def _create_parsed_view(
    con: duckdb.DuckDBPyConnection, raw: str, mapping: dict[str, str], types: dict[str, str], cfg: OrdersConfig
) -> None:
    """`_lifetag_parsed`: canonical columns, the source row number and a `reason` (NULL when valid)."""
    select, checks = [], []
    for name, canonical_type in CANONICAL_TYPES.items():
        if name not in mapping:
            select.append(f"CAST(NULL AS {canonical_type}) AS {name}")
            continue
        source = _source_expr(mapping[name])
        source_type = types.get(mapping[name], "VARCHAR")
        typed = _typed_expr(name, source, source_type, cfg)
        select.append(f"{typed} AS {name}")
        condition = _bad_row_condition(name, source, source_type, typed)
        if condition is not None:
            checks.append(f"CASE WHEN {condition} THEN {_REASONS[name]} END")
    reason = f"NULLIF(concat_ws('; ', {', '.join(checks)}), '')"
    # `_src` keeps the whole source row, so bad rows can be reported and quarantined as they came.
    con.execute(
        f"CREATE OR REPLACE TEMP VIEW _lifetag_parsed AS SELECT {', '.join(select)}, {reason} AS reason, "
        f"_row, s AS _src FROM {raw} s"
    )


def _count_rows(con: duckdb.DuckDBPyConnection, has_order_id: bool) -> tuple[int, int, bool]:
    """Rows read, rows that cannot be used, and whether some orders have conflicting lines; one scan.

    Orders whose lines disagree on customer or time cannot be trusted, so all their lines are bad.
    Only lines that pass the row checks are compared, and min <> max is "more than one distinct
    value" (both skip NULLs) without keeping per-order sets of values.
    """
    if not has_order_id:
        rows, bad = con.execute("SELECT count(*), count(reason) FROM _lifetag_parsed").fetchall()[0]
        return rows, bad, False
    rows, bad, conflicting_orders = con.execute("""
        SELECT sum(lines), sum(lines - valid_lines) + coalesce(sum(valid_lines) FILTER (WHERE conflicting), 0),
               count(*) FILTER (WHERE conflicting)
        FROM (
            SELECT order_id, count(*) AS lines, count(*) FILTER (WHERE valid) AS valid_lines,
                   order_id IS NOT NULL AND (
                       min(order_ts) FILTER (WHERE valid) <> max(order_ts) FILTER (WHERE valid)
                       OR min(customer_id) FILTER (WHERE valid) <> max(customer_id) FILTER (WHERE valid)
                   ) AS conflicting
            FROM (SELECT order_id, order_ts, customer_id, reason IS NULL AS valid FROM _lifetag_parsed)
            GROUP BY order_id
        )
    """).fetchall()[0]
    return rows, bad, conflicting_orders > 0


def _flag_conflicting_orders(con: duckdb.DuckDBPyConnection) -> None:
    """`_lifetag_conflicts`: the order_id of each order whose valid lines disagree on customer or time."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _lifetag_conflicts AS SELECT order_id FROM _lifetag_parsed "
        "WHERE reason IS NULL AND order_id IS NOT NULL GROUP BY order_id "
        "HAVING min(order_ts) <> max(order_ts) OR min(customer_id) <> max(customer_id)"
    )


def _create_typed_view(con: duckdb.DuckDBPyConnection, conflicts: bool) -> None:
    """`_lifetag_typed`: the parsed rows, with lines of conflicting orders given that reason too."""
    if not conflicts:
        con.execute("CREATE OR REPLACE TEMP VIEW _lifetag_typed AS SELECT * FROM _lifetag_parsed")
        return
    _flag_conflicting_orders(con)
    con.execute(
        "CREATE OR REPLACE TEMP VIEW _lifetag_typed AS SELECT p.* REPLACE (CASE WHEN c.order_id IS NOT NULL "
        f"THEN concat_ws('; ', p.reason, {_CONFLICT}) ELSE p.reason END AS reason) "
        "FROM _lifetag_parsed p LEFT JOIN _lifetag_conflicts c USING (order_id)"
    )


_CONFLICT = "'order_id has lines with different customers or timestamps'"
_REASONS = {
    "customer_id": "'empty customer_id'",
    "order_ts": "'order_ts is not a timestamp'",
    "amount": "'amount is not a number'",
    "quantity": "'quantity is not a number'",
    "discount": "'discount is not a number'",
    "order_id": _CONFLICT,
}
_CHECKS = (
    ("customer_id", "with an empty customer id"),
    ("order_ts", "that are not timestamps"),
    ("amount", "that are not numbers"),
    ("quantity", "that are not numbers"),
    ("discount", "that are not numbers"),
    ("order_id", "whose order has lines with different customers or timestamps"),
)


def _describe_problems(con: duckdb.DuckDBPyConnection, mapping: dict[str, str]) -> list[Problem]:
    """Per check, the count and first example rows of the bad rows, in one scan (run only when there are some)."""
    checks = [(f, _REASONS[f], text) for f, text in _CHECKS if f in mapping]
    aggs = []
    for name, tag, _ in checks:
        source = _source_expr(mapping[name], row="t._src")
        flag = f"contains(coalesce(t.reason, ''), {tag})"
        aggs.append(f"count(*) FILTER (WHERE {flag})")
        aggs.append(f"min_by(struct_pack(r := t._row, v := CAST({source} AS VARCHAR)), t._row, {_EXAMPLES}) FILTER (WHERE {flag})")
    row = con.execute(
        f"SELECT {', '.join(aggs)} FROM _lifetag_typed t WHERE t.reason IS NOT NULL"
    ).fetchall()[0]
    problems = []
    for i, (name, _, text) in enumerate(checks):
        count, examples = row[2 * i], row[2 * i + 1]
        if count:
            pairs = tuple((int(e["r"]), e["v"]) for e in examples)
            problems.append(Problem(check=text, column=mapping[name], count=count, examples=pairs))
    return problems


def _bad_rows_message(label: str, problems: list[Problem]) -> str:
    details = "; ".join(p.describe() for p in problems)
    return (
        f"{label}: rows that cannot be used: {details}. Fix them in the source, or pass "
        "--quarantine bad_rows.csv to set them aside with a reason and use the rest."
    )


def _write_quarantine(con: duckdb.DuckDBPyConnection, types: dict[str, str], path: Path) -> None:
    """Bad rows with their source values, the source row number and the reason, written atomically."""
    source_cols = ", ".join(f"{_source_expr(c, row='_src')} AS {_quote_ident(c)}" for c in types)
    rel = con.sql(
        f"SELECT _row AS source_row, {source_cols}, reason FROM _lifetag_typed "
        "WHERE reason IS NOT NULL ORDER BY _row"
    )
    write_relation(con, rel, path)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
