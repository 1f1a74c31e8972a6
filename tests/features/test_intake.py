"""Intake: every source kind, column mapping, identifiers kept as text, and every error path."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from configs.schema import load_config
from features.intake import IntakeError, read_orders

HEADER = "Customer ID,Invoice,InvoiceDate,Amount\n"
MAPPED = {"orders": {"columns": {"customer_id": "Customer ID", "order_id": "Invoice",
                                 "order_ts": "InvoiceDate", "amount": "Amount"}}}


def _csv(tmp_path: Path, body: str, name: str = "orders.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + body)
    return path


@pytest.fixture()
def mapped_config():
    return load_config(overrides=MAPPED)


def test_cdnow_loads_every_row_and_customer(cdnow_path, cdnow_config):
    orders, report = read_orders(cdnow_path, cdnow_config)
    assert report.rows_read == 69_659 and report.rows_used == 69_659
    assert orders["customer_id"].nunique() == 23_570
    assert orders["customer_id"].iloc[0].startswith("0")  # zero-padded ids stay text
    assert orders["order_ts"].min() == pd.Timestamp("1997-01-01") and orders["order_ts"].max() == pd.Timestamp("1998-06-30")


def test_mapped_columns_and_identifiers_kept_exactly(tmp_path, mapped_config):
    path = _csv(tmp_path, "00042,000017,2024-01-01 10:00,9.5\n12345678901234567890,18,2024-01-02,3\n")
    orders, report = read_orders(path, mapped_config)
    assert list(orders["customer_id"]) == ["00042", "12345678901234567890"]
    assert list(orders["order_id"]) == ["000017", "18"]
    # The default mapping names optional fields this export lacks; they are reported, not errors.
    assert report.missing_optional == ["quantity", "category", "product_id", "discount", "channel", "status"]


def test_time_zones_normalised_to_utc_and_naive_taken_as_utc(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01T10:00:00+02:00,1\nb,2,2024-01-01T10:00:00,1\nc,3,2024-01-01T10:00:00Z,1\n")
    orders, _ = read_orders(path, mapped_config)
    assert list(orders.sort_values("customer_id")["order_ts"].dt.hour) == [8, 10, 10]


def test_parquet_folder_and_duckdb_table_sources(tmp_path, small_shop, config):
    folder = tmp_path / "lake"
    folder.mkdir()
    half = len(small_shop) // 2
    small_shop.iloc[:half].to_parquet(folder / "part-0.parquet")
    small_shop.iloc[half:].to_parquet(folder / "part-1.parquet")
    from_folder, report = read_orders(folder, config)
    assert report.rows_read == len(small_shop) and len(from_folder) == len(small_shop)

    db = tmp_path / "shop.duckdb"
    with duckdb.connect(str(db)) as con:
        con.register("frame", small_shop)
        con.execute("CREATE TABLE sales AS SELECT * FROM frame")
    from_table, _ = read_orders(f"{db}:sales", config)
    assert len(from_table) == len(small_shop)
    assert set(from_table["customer_id"]) == set(small_shop["customer_id"])


def _error(path, config) -> str:
    with pytest.raises(IntakeError) as info:
        read_orders(path, config)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_required_column_names_it_and_lists_what_is_there(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\n", header="Customer ID,Invoice,InvoiceDate,Total\n")
    message = _error(path, mapped_config)
    assert "'Amount'" in message and "Total" in message and "orders.columns.amount" in message


def test_unparsable_timestamps_are_reported_with_rows_and_values(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,not a date,1\nc,3,2024-13-45,1\n")
    message = _error(path, mapped_config)
    assert "'InvoiceDate' has 2 rows that are not timestamps" in message
    assert "rows 2, 3" in message and "'not a date'" in message and "--quarantine" in message


def test_non_numeric_amounts_are_reported(tmp_path, mapped_config):
    message = _error(_csv(tmp_path, "a,1,2024-01-01,abc\nb,2,2024-01-01,\nc,3,2024-01-01,4\n"), mapped_config)
    assert "'Amount' has 2 rows that are not numbers" in message and "'abc'" in message


def test_empty_customer_ids_are_reported(tmp_path, mapped_config):
    # Blank means only spaces; an id that merely starts with spaces is an id.
    body = " ,1,2024-01-01,1\nb,2,2024-01-01,1\n   ,3,2024-01-01,1\n  x,4,2024-01-01,1\n"
    message = _error(_csv(tmp_path, body), mapped_config)
    assert "'Customer ID' has 2 rows with an empty customer id (rows 1, 3" in message


def test_conflicting_lines_of_one_order_are_reported(tmp_path, mapped_config):
    body = "a,1,2024-01-01,1\nb,1,2024-01-01,2\nc,2,2024-01-01,1\nc,2,2024-01-01,5\n"
    message = _error(_csv(tmp_path, body), mapped_config)
    assert "'Invoice' has 2 rows whose order has lines with different customers or timestamps" in message


def test_empty_and_header_only_files_are_errors(tmp_path, mapped_config):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "empty" in _error(empty, mapped_config)
    assert "no rows" in _error(_csv(tmp_path, "", name="header_only.csv"), mapped_config)


def test_unreadable_and_missing_files_are_errors(tmp_path, config):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    assert "cannot read" in _error(broken, config)
    assert "no such file" in _error(tmp_path / "nowhere.csv", config)


def test_quarantine_sets_bad_rows_aside_and_accounts_for_every_row(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,oops,1\n,3,2024-01-01,x\nd,4,2024-01-02,2\n")
    bad_rows = tmp_path / "bad.csv"
    orders, report = read_orders(path, mapped_config, quarantine=bad_rows)
    assert (report.rows_read, report.rows_used, report.rows_quarantined) == (4, 2, 2)
    assert report.summary() == f"read 4 = used 2 + quarantined 2 (-> {bad_rows})"
    quarantined = pd.read_csv(bad_rows, dtype=str)
    assert list(quarantined["source_row"]) == ["2", "3"]
    assert quarantined.loc[1, "reason"] == "empty customer_id; amount is not a number"
    assert list(orders["customer_id"]) == ["a", "d"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_typed_parquet_columns_are_checked_like_text_ones(tmp_path, config):
    frame = pd.DataFrame({
        "customer_id": ["a", None, "c", "d"], "order_id": ["1", "2", "3", "4"],
        "order_ts": pd.to_datetime(["2024-01-01", "2024-01-02", None, "2024-01-04"]),
        "amount": [1.0, 2.0, 3.0, None], "quantity": [1.0, None, 2.0, 3.0],
    })
    path = tmp_path / "orders.parquet"
    frame.to_parquet(path)
    message = _error(path, config)
    assert "'customer_id' has 1 row with an empty customer id (row 2" in message
    assert "'order_ts' has 1 row that are not timestamps (row 3" in message
    assert "'amount' has 1 row that are not numbers (row 4" in message
    assert "'quantity'" not in message  # an empty quantity is allowed


def test_numeric_customer_ids_from_parquet_become_text(tmp_path, config):
    path = tmp_path / "orders.parquet"
    pd.DataFrame({"customer_id": [42, 7], "order_ts": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                  "amount": [1.0, 2.0]}).to_parquet(path)
    orders, report = read_orders(path, config)
    assert list(orders["customer_id"]) == ["42", "7"] and report.rows_used == 2


def test_every_line_of_a_conflicting_order_is_quarantined_once(tmp_path, mapped_config):
    # Order 1 has lines for customers a and b; its third line is also not a number.
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,1,2024-01-01,2\na,1,2024-01-01,x\nc,2,2024-01-01,5\n")
    bad_rows = tmp_path / "bad.csv"
    orders, report = read_orders(path, mapped_config, quarantine=bad_rows)
    assert (report.rows_read, report.rows_used, report.rows_quarantined) == (4, 1, 3)
    reasons = pd.read_csv(bad_rows, dtype=str)["reason"].tolist()
    conflict = "order_id has lines with different customers or timestamps"
    assert reasons == [conflict, conflict, f"amount is not a number; {conflict}"]
    assert list(orders["customer_id"]) == ["c"]


def test_a_line_that_is_already_bad_does_not_make_its_order_conflicting(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,1,2024-01-01,x\n")
    _, report = read_orders(path, mapped_config, quarantine=tmp_path / "bad.csv")
    assert (report.rows_used, report.rows_quarantined) == (1, 1)
    assert [p.check for p in report.problems] == ["that are not numbers"]
