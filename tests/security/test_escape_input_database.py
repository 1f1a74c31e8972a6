"""Issue 17, item 3: a DuckDB database given as input reads nothing but itself, whatever its views say."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from escape_support import AS_OF, SECRET_TEXT, assert_nothing_leaked, one_paragraph_error, run

from configs.schema import load_config
from features.engine import connect, is_locked
from features.intake import IntakeError, open_sources


def _database(path: Path, *statements: str) -> Path:
    con = duckdb.connect(str(path))
    try:
        for statement in statements:
            con.execute(statement)
    finally:
        con.close()
    return path


def _orders_view_reading(tmp_path: Path, secret: Path) -> Path:
    """The issue's database: `orders` is a view whose rows come from another file."""
    return _database(tmp_path / "shop.duckdb", (
        "CREATE VIEW orders AS SELECT name AS customer_id, '1' AS order_id, TIMESTAMP '2024-01-05' AS order_ts, "
        f"1.0 AS amount FROM read_csv('{secret}')"
    ))


def test_an_orders_view_that_reads_another_file_stops_features_with_one_paragraph(tmp_path: Path, secret: Path) -> None:
    database = _orders_view_reading(tmp_path, secret)
    out = tmp_path / "features.csv"

    done = run("features", "--orders", database, "--as-of", AS_OF, "--out", out)

    message = one_paragraph_error(done)
    assert str(database) in message and "view that reads another file" in message
    assert "CREATE TABLE" in message
    assert not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


def test_a_customers_view_that_reads_another_file_is_refused_too(tmp_path: Path, secret: Path,
                                                                 orders_csv: Path) -> None:
    database = _database(tmp_path / "crm.duckdb", (
        f"CREATE VIEW customers AS SELECT name AS customer_id, NULL AS signup_ts FROM read_csv('{secret}')"
    ))
    out = tmp_path / "features.csv"

    done = run("features", "--orders", orders_csv, "--customers", database, "--as-of", AS_OF, "--out", out)

    message = one_paragraph_error(done)
    assert "customers table 'customers'" in message and "view that reads another file" in message
    assert not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


def test_an_input_database_is_read_on_a_locked_connection_even_without_expressions(tmp_path: Path,
                                                                                   secret: Path) -> None:
    database = _database(tmp_path / "shop.duckdb", (
        "CREATE TABLE orders AS SELECT 'a' AS customer_id, '1' AS order_id, TIMESTAMP '2024-01-05' AS order_ts, "
        "10.0 AS amount"
    ))
    con = connect(load_config().engine)
    try:
        intake = open_sources(con, database, load_config())
        assert intake.orders.rows_used == 1
        assert is_locked(con)
        with pytest.raises(duckdb.Error, match="disabled by configuration"):
            con.execute("SELECT content FROM read_text(?)", [str(secret)]).fetchall()
    finally:
        con.close()


def test_a_view_over_the_database_s_own_tables_still_works(tmp_path: Path) -> None:
    database = _database(
        tmp_path / "shop.duckdb",
        "CREATE TABLE lines AS SELECT 'a' AS customer_id, '1' AS order_id, TIMESTAMP '2024-01-05' AS order_ts, "
        "10.0 AS amount",
        "CREATE VIEW orders AS SELECT * FROM lines",
    )
    out = tmp_path / "features.csv"

    done = run("features", "--orders", database, "--as-of", AS_OF, "--out", out)

    assert done.exit_code == 0, done.output
    assert pd.read_csv(out)["customer_id"].tolist() == ["a"]


def test_the_open_sources_error_is_an_intake_error(tmp_path: Path, secret: Path) -> None:
    database = _orders_view_reading(tmp_path, secret)
    con = connect(load_config().engine)
    try:
        with pytest.raises(IntakeError) as caught:
            open_sources(con, database, load_config())
    finally:
        con.close()
    assert SECRET_TEXT not in str(caught.value)
