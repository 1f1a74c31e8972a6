"""SQL expressions from a config (column mappings, scenario tags): checked as parsed SQL, never by running them.

A config may compute values but read nothing else, so an expression is parsed by DuckDB's own parser
(`json_serialize_sql`, which only parses) and its syntax tree walked against an allowlist: the row's
own columns, constants, operators, comparisons, AND/OR/NOT, CASE, CAST/TRY_CAST, BETWEEN, IN (...)
lists and pure scalar functions. Subqueries, table functions, window and aggregate functions, settings,
catalog and metadata functions, parameters and `*` are refused before any data or file is touched;
only then does the caller compile the expression (for its type) on an empty table in `sandbox()`.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from typing import Any

import duckdb

__all__ = ["ALLOWED_FUNCTIONS", "ExpressionRefused", "ExpressionSyntaxError", "check_expression", "sandbox", "sandbox_cursor"]

# Pure scalar functions (and the operators DuckDB parses into functions): their result depends on
# their arguments only. Nothing that reads files, settings, variables, sequences, the catalog, the
# clock or a random source.
ALLOWED_FUNCTIONS = frozenset({
    # arithmetic, string and pattern operators
    "+", "-", "*", "/", "//", "%", "^", "**", "@", "&", "|", "<<", ">>", "~", "||", "^@",
    "~~", "!~~", "~~*", "!~~*", "~~~", "!~~~",
    "add", "subtract", "multiply", "divide", "mod", "fdiv", "fmod",
    # numbers
    "abs", "ceil", "ceiling", "floor", "round", "round_even", "roundbankers", "trunc", "sign", "sqrt", "cbrt",
    "exp", "ln", "log", "log10", "log2", "pow", "power", "greatest", "least", "isnan", "isinf", "isfinite",
    "even", "gcd", "lcm", "degrees", "radians", "pi",
    # text
    "lower", "upper", "lcase", "ucase", "trim", "ltrim", "rtrim", "length", "len", "strlen", "char_length",
    "character_length", "substr", "substring", "left", "right", "concat", "concat_ws", "replace", "translate",
    "reverse", "repeat", "lpad", "rpad", "position", "strpos", "instr", "contains", "starts_with", "ends_with",
    "prefix", "suffix", "split_part", "string_split", "str_split", "ascii", "chr", "unicode", "ord",
    "strip_accents", "nfc_normalize", "format", "printf", "md5", "sha256", "hash",
    "like_escape", "not_like_escape", "ilike_escape", "not_ilike_escape",
    "regexp_matches", "regexp_full_match", "regexp_replace", "regexp_extract", "regexp_extract_all",
    "regexp_split_to_array", "regexp_escape",
    # dates and times (of the row's values; not the clock)
    "strptime", "try_strptime", "strftime", "date_part", "datepart", "date_trunc", "datetrunc", "date_diff",
    "datediff", "date_sub", "datesub", "date_add", "epoch", "epoch_ms", "epoch_us", "epoch_ns", "make_date",
    "make_time", "make_timestamp", "to_timestamp", "year", "month", "day", "dayofmonth", "dayofweek",
    "dayofyear", "weekday", "week", "weekofyear", "isodow", "isoyear", "yearweek", "quarter", "hour", "minute",
    "second", "millisecond", "microsecond", "last_day", "dayname", "monthname", "days_in_month", "time_bucket",
    "timezone", "to_days", "to_hours", "to_minutes", "to_seconds", "to_milliseconds", "to_microseconds",
    "to_weeks", "to_months", "to_years",
    # missing values and choices
    "nullif", "if",
    # list literals and lookups ([1, 2], x[1])
    "list_value", "list_extract", "array_extract", "list_element", "list_contains", "array_contains",
    "list_has", "array_length",
})
_ALLOWED_OPERATORS = frozenset({
    "OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN",
    "OPERATOR_COALESCE", "OPERATOR_NULLIF", "ARRAY_EXTRACT", "ARRAY_SLICE", "OPERATOR_TRY",
})
# Nodes that hold nothing but their children (which are checked in turn).
_PLAIN_NODES = frozenset({"CONSTANT", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST", "COLLATE"})
_WHAT_NODES = {
    "SUBQUERY": "a subquery (SELECT ...), which reads tables",
    "WINDOW": "a window function (... OVER ...), which reads other rows",
    "STAR": "a * or COLUMNS(...), which reads whole rows",
    "LAMBDA": "a lambda (x -> ...)",
    "PARAMETER": "a query parameter ($1 or ?)",
    "POSITIONAL_REFERENCE": "a positional reference (#1)",
}
_ROW_TABLE = "_lifetag_row"
# Where the expression starts in the statements below, to point at the offending part.
_PREFIX = "SELECT ("
RULE = ("Expressions may only compute from the row's own columns: column names, constants, operators, comparisons, "
        "AND/OR/NOT, CASE, CAST/TRY_CAST, BETWEEN, IN (...) lists and plain functions such as coalesce, nullif, "
        "round, lower, trim, regexp_replace, strptime, try_strptime and date_diff")


class ExpressionRefused(ValueError):
    """The expression could do more than compute from the row's own columns.

    The message says what and where, then the rule, e.g. "it calls read_text(), which is not one of
    the plain functions expressions may use (at 'read_text('x')'). Expressions may only compute from
    the row's own columns: ..."; callers put the config entry and the columns around it.
    """


class ExpressionSyntaxError(ValueError):
    """The text is not one SQL expression; the message is DuckDB's parser error ('Parser Error: ...')."""


def sandbox(**settings: Any) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with file and network access off, no spill folder and its settings locked.

    `settings` are further DuckDB settings (e.g. old_implicit_casting=True). Without a spill folder
    nothing on disk is readable, not even DuckDB's default `.tmp`, which DuckDB otherwise allows.
    """
    config = {"enable_external_access": False, "temp_directory": "", "lock_configuration": True, **settings}
    return duckdb.connect(":memory:", config=config)


_SHARED_SANDBOX: list[duckdb.DuckDBPyConnection] = []
_SHARED_SANDBOX_LOCK = threading.Lock()


def sandbox_cursor() -> duckdb.DuckDBPyConnection:
    """A connection of its own to one shared `sandbox()` database (made once per process): the same locked
    settings, in microseconds instead of the ~10 ms of a new database, for callers that evaluate
    expressions many times (the service's tag function). Its registered frames and views are its own; close it."""
    with _SHARED_SANDBOX_LOCK:
        if not _SHARED_SANDBOX:
            _SHARED_SANDBOX.append(sandbox())
        return _SHARED_SANDBOX[0].cursor()


def check_expression(text: str, columns: Iterable[str]) -> None:
    """Raise ExpressionRefused when `text` could do more than compute from `columns`, ExpressionSyntaxError
    when it does not parse as one SQL expression. Nothing is run."""
    available = list(columns)
    con = _parser()
    statements = _statements(con, text)
    if len(statements) != 1:
        _refuse(text, "it holds ';', which ends a SQL statement: an expression is one value "
                "and may not run statements of its own", None)
    in_row = _parse(con, f"{_PREFIX}{text}) FROM {_ROW_TABLE}")
    alone = _parse(con, f"{_PREFIX}{text}) AS _lifetag_value")
    expression = _single_select(in_row, "BASE_TABLE")
    # Parsed with two different endings, the same one expression: nothing in the text (a comment,
    # a closing parenthesis) reaches past it when it is placed inside a larger statement.
    if expression is None or _shape(expression) != _shape(_single_select(alone, "EMPTY")):
        _refuse(text, "it is not one expression (it closes its parentheses or comments out "
                "what follows it)", None)
    _walk(expression, {c.lower() for c in available}, text)


_PARSERS = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """This thread's sandbox for parsing (it only parses; opening one costs more than 30 checks)."""
    con = getattr(_PARSERS, "con", None)
    if con is None:
        con = _PARSERS.con = sandbox()
    return con


def _statements(con: duckdb.DuckDBPyConnection, text: str) -> list[Any]:
    """The statements of `SELECT (<text>)`; an extra one for each ';' outside quotes and comments."""
    separators = [pos for pos, kind in duckdb.tokenize(text) if kind == duckdb.token_type.operator and text[pos] == ";"]
    if separators:
        return [None] * (len(separators) + 1)
    try:
        return con.extract_statements(f"{_PREFIX}{text})")
    except duckdb.Error as exc:
        raise ExpressionSyntaxError(str(exc).strip().splitlines()[0]) from None


def _parse(con: duckdb.DuckDBPyConnection, statement: str) -> dict[str, Any]:
    # json_serialize_sql only parses; the statement is a bound parameter, never run.
    result = json.loads(con.execute("SELECT json_serialize_sql(?)", [statement]).fetchall()[0][0])
    if result.get("error"):
        message = result.get("error_message", "")
        if result.get("error_type") == "parser":
            raise ExpressionSyntaxError(f"Parser Error: {message}")
        return {"statements": []}  # not a SELECT: refused by the caller's shape check
    return result


def _single_select(parsed: dict[str, Any], from_type: str) -> dict[str, Any] | None:
    """The one select-list expression of `SELECT (<expr>) [FROM row]`, or None when the statement has another shape."""
    statements = parsed.get("statements") or []
    if len(statements) != 1:
        return None
    node = statements[0].get("node") or {}
    source = node.get("from_table") or {}
    plain = (
        node.get("type") == "SELECT_NODE" and not node.get("modifiers") and not (node.get("cte_map") or {}).get("map")
        and node.get("where_clause") is None and not node.get("group_expressions") and not node.get("group_sets")
        and node.get("having") is None and node.get("qualify") is None and node.get("sample") is None
        and node.get("aggregate_handling") == "STANDARD_HANDLING" and len(node.get("select_list") or []) == 1
        and source.get("type") == from_type
    )
    if plain and from_type == "BASE_TABLE":
        plain = (source.get("table_name") == _ROW_TABLE and not source.get("schema_name")
                 and not source.get("catalog_name") and source.get("sample") is None and not source.get("alias"))
    return node["select_list"][0] if plain else None


def _shape(expression: dict[str, Any] | None) -> Any:
    """The expression's tree without its alias and positions, to compare two parses of it."""
    return None if expression is None else _without_positions({k: v for k, v in expression.items() if k != "alias"})


def _without_positions(node: Any) -> Any:
    if isinstance(node, list):
        return [_without_positions(v) for v in node]
    if isinstance(node, dict):
        return {k: _without_positions(v) for k, v in node.items() if k not in ("query_location", "query_location_length")}
    return node


def _walk(node: Any, columns: set[str], text: str) -> None:
    """Check every expression node under `node` against the allowlist (parents before children)."""
    if isinstance(node, list):
        for item in node:
            _walk(item, columns, text)
        return
    if not isinstance(node, dict):
        return
    if "class" in node:
        why = _refusal(node, columns)
        if why is not None:
            _refuse(text, why, node)
    for value in node.values():
        if isinstance(value, (dict, list)):
            _walk(value, columns, text)


def _refusal(node: dict[str, Any], columns: set[str]) -> str | None:
    """Why this node may not be in an expression from a config; None when it may."""
    kind = node["class"]
    if kind in _PLAIN_NODES:
        return None
    if kind == "COLUMN_REF":
        names = node.get("column_names") or []
        shown = ".".join(names)
        if len(names) != 1:
            return f"it names {shown!r}, which is not one of the row's columns (write a column name alone)"
        if names[0].lower() not in columns:
            return f"it names {shown!r}, which is not one of the row's columns"
        return None
    if kind == "FUNCTION":
        name = str(node.get("function_name", "")).lower()
        qualified = node.get("catalog") or node.get("schema")
        if name not in ALLOWED_FUNCTIONS or qualified:
            return f"it calls {node.get('function_name')}(), which is not one of the plain functions expressions may use"
        if node.get("filter") is not None or (node.get("order_bys") or {}).get("orders") or node.get("distinct") \
                or node.get("export_state"):
            return f"it calls {name}() with FILTER, ORDER BY or DISTINCT, which only aggregates take"
        return None
    if kind == "OPERATOR":
        return None if node.get("type") in _ALLOWED_OPERATORS else f"it uses the operator {node.get('type')}"
    if kind == "TYPE":
        return "it casts to a type from a catalog" if node.get("catalog") or node.get("schema") else None
    return "it holds " + _WHAT_NODES.get(kind, f"a {kind.lower().replace('_', ' ')} expression")


def _refuse(text: str, why: str, node: dict[str, Any] | None) -> None:
    part = _part(text, node)
    at = f" (at {part!r})" if part and part != " ".join(text.split()) else ""
    raise ExpressionRefused(f"{why}{at}. {RULE}.")


def _part(text: str, node: dict[str, Any] | None) -> str:
    """The offending part of `text`, from the parser's position of `node` (empty when unknown)."""
    if node is None:
        return ""
    start = int(node.get("query_location", -1)) - len(_PREFIX)
    if not 0 <= start < len(text):
        return ""
    length = int(node.get("query_location_length") or 0)
    piece = text[start:start + length] if length else text[start:]
    piece = " ".join(piece.split())
    return piece if len(piece) <= 80 else piece[:77] + "..."
