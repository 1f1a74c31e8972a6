"""Intake: every source kind, column mapping, identifiers kept as text, and every error path."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

import features

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


# --- Reading: exact file names, folders, time zones, encodings and malformed CSV (issue 17) ---

ORDERS_HEADER = "customer_id,order_id,order_ts,amount\n"


def test_glob_characters_in_a_file_name_read_exactly_that_file(tmp_path, config):
    (tmp_path / "x1.csv").write_text(ORDERS_HEADER + "other,1,2024-01-01,1\n")
    for name in ("x[1].csv", "x*.csv", "x?.csv"):
        path = _csv(tmp_path, "mine,1,2024-01-01,1\n", name=name, header=ORDERS_HEADER)
        orders, report = read_orders(path, config)
        assert list(orders["customer_id"]) == ["mine"] and report.rows_read == 1, name


def test_glob_characters_in_a_folder_name_and_with_an_expression(tmp_path):
    folder = tmp_path / "lake[1]"
    folder.mkdir()
    (tmp_path / "lake1").mkdir()
    (tmp_path / "lake1" / "a.csv").write_text("Customer ID,Invoice,InvoiceDate,Qty,Price\nother,1,2024-01-01,1,1\n")
    (folder / "a.csv").write_text("Customer ID,Invoice,InvoiceDate,Qty,Price\nmine,1,2024-01-01,2,3\n")
    config = load_config(overrides={"orders": {"columns": {
        "customer_id": "Customer ID", "order_id": "Invoice", "order_ts": "InvoiceDate", "amount": "Qty * Price"}}})
    # The expression locks the connection to the inputs: the escaped name must still be readable.
    orders, _ = read_orders(folder, config)
    assert list(orders["customer_id"]) == ["mine"] and list(orders["amount"]) == [6.0]


def test_a_folder_of_csv_files_numbers_rows_across_files_and_names_the_file(tmp_path, mapped_config):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.csv").write_text(HEADER + "a,1,2024-01-01,1\nb,2,2024-01-02,2\n")
    (folder / "b.csv").write_text(HEADER + "c,3,2024-01-03,3\nd,4,2024-01-04,oops\n")
    bad = tmp_path / "bad.csv"
    orders, report = read_orders(folder, mapped_config, quarantine=bad)
    assert report.rows_read == 4 and report.rows_quarantined == 1 and len(orders) == 3
    quarantined = pd.read_csv(bad)
    assert list(quarantined["source_row"]) == [4] and quarantined["filename"][0].endswith("b.csv")


@pytest.mark.parametrize("second, said", [
    ("customer_id,order_ts,amount,channel\n3,2024-01-03,7,web\n", "it has 'channel', which the first file does not"),
    ("customer_id,order_ts\n4,2024-01-04\n", "it has no column 'amount'"),
])
def test_a_folder_whose_files_name_other_columns_is_refused_naming_the_file_and_the_columns(
        tmp_path, config, second: str, said: str) -> None:
    """A folder is one table: a column only some files have would be dropped (or read empty) silently."""
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.csv").write_text("customer_id,order_ts,amount\n1,2024-01-01,5\n2,2024-01-02,6\n")
    (folder / "b.csv").write_text(second)
    message = _error(folder, config)
    assert message.startswith(f"{folder / 'b.csv'}: the header names other columns than the folder's first file a.csv")
    assert said in message and "give every file the same header" in message


def test_a_folder_with_both_parquet_and_csv_files_is_an_error_naming_them(tmp_path, small_shop, config):
    folder = tmp_path / "mixed"
    folder.mkdir()
    small_shop.to_parquet(folder / "part-0.parquet")
    small_shop.head(5).to_csv(folder / "extra.csv", index=False)
    message = _error(folder, config)
    assert "part-0.parquet" in message and "extra.csv" in message and "both" in message


def test_time_zone_aware_parquet_timestamps_are_read_as_utc(tmp_path, config):
    frame = pd.DataFrame({"customer_id": ["a", "b"], "order_id": ["1", "2"], "amount": [1.0, 2.0],
                          "order_ts": pd.to_datetime(["2024-01-01 10:00", "2024-07-01 10:00"]).tz_localize("Europe/Berlin")})
    path = tmp_path / "tz.parquet"
    frame.to_parquet(path)
    orders, report = read_orders(path, config)
    assert report.rows_used == 2
    # Berlin is UTC+1 in winter and UTC+2 in summer.
    assert list(orders.sort_values("customer_id")["order_ts"]) == [pd.Timestamp("2024-01-01 09:00"),
                                                                   pd.Timestamp("2024-07-01 08:00")]


def test_time_zone_aware_parquet_goes_through_the_features_command(tmp_path):
    from typer.testing import CliRunner

    from serving.cli import app

    frame = pd.DataFrame({"customer_id": ["a"], "order_id": ["1"], "amount": [5.0],
                          "order_ts": pd.to_datetime(["2024-01-01 10:00"]).tz_localize("Europe/Berlin")})
    frame.to_parquet(tmp_path / "tz.parquet")
    out = tmp_path / "features.csv"
    done = CliRunner().invoke(app, ["features", "--orders", str(tmp_path / "tz.parquet"), "--as-of", "2024-02-01",
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    # 09:00 UTC on 1 January is 30 days and 15 hours before the cut-off.
    assert pd.read_csv(out)["recency_days"].tolist() == [30.625]


def test_a_latin1_csv_names_the_line_and_the_encoding_option_that_reads_it(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes((ORDERS_HEADER + "a,1,2024-01-01,1\nJos\xe9,2,2024-01-02,2\n").encode("latin-1"))
    message = _error(path, load_config())
    assert "line 3 is not UTF-8" in message and "orders.encoding: latin-1" in message
    orders, _ = read_orders(path, load_config(overrides={"orders": {"encoding": "latin1"}}))
    assert sorted(orders["customer_id"]) == ["José", "a"]


def test_a_utf16_csv_reads_with_the_encoding_option(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_bytes((ORDERS_HEADER + "Jos\xe9,2,2024-01-02,2\n").encode("utf-16"))
    orders, _ = read_orders(path, load_config(overrides={"orders": {"encoding": "utf-16"}}))
    assert list(orders["customer_id"]) == ["José"]


def test_an_unknown_encoding_is_a_config_error():
    from configs.schema import ConfigError

    with pytest.raises(ConfigError, match="encoding"):
        load_config(overrides={"orders": {"encoding": "klingon"}})


def test_ragged_rows_are_reported_with_their_lines_not_as_a_missing_column(tmp_path, config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,2024-01-02\nc,3,2024-01-03,3,9\nd,4,2024-01-04,4\n",
                header=ORDERS_HEADER)
    message = _error(path, config)
    assert "2 lines" in message and "lines 3 (3 fields), 4 (5 fields)" in message and "missing" not in message


def test_ragged_rows_at_the_end_do_not_become_the_header(tmp_path, config):
    # DuckDB's sniffer took the last, widest row for the header and read no rows at all.
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,2024-01-02\nc,3,2024-01-03,3,9\n", header=ORDERS_HEADER)
    assert "lines 3 (3 fields), 4 (5 fields)" in _error(path, config)


def test_a_ragged_row_deep_in_a_large_file_is_reported_with_its_line(tmp_path, config):
    rows = "".join(f"c{i},{i},2024-01-01,1\n" for i in range(60_000))
    path = _csv(tmp_path, rows + "x,1,2024-01-01\n" + rows, header=ORDERS_HEADER)
    message = _error(path, config)
    assert "line 60,002 (3 fields)" in message


def test_a_huge_field_is_reported_on_its_own_line(tmp_path, config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,2024-01-02,2\nc,3,2024-01-03," + "9" * 3_000_000 + "\nd,4,2024-01-04,4\n",
                header=ORDERS_HEADER)
    message = _error(path, config)
    assert "line 4 is 3.0 MB long" in message


def test_bom_and_crlf_csv_read_like_plain_ones(tmp_path, config):
    text = ORDERS_HEADER + "a,1,2024-01-01,1\nb,2,2024-01-02,2\n"
    path = tmp_path / "orders.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    orders, report = read_orders(path, config)
    assert report.rows_used == 2 and sorted(orders["customer_id"]) == ["a", "b"]


def test_a_blank_header_line_is_an_error_not_a_lost_row(tmp_path, config):
    path = _csv(tmp_path, "a,1,2024-01-01,1\nb,2,2024-01-02,2\n", header="\n")
    assert "the first line is blank" in _error(path, config)


# --- issue 17: lines a minute apart, ids, statuses, repeats, impossible dates and amounts -------------

STATUS_HEADER = "Customer ID,Invoice,InvoiceDate,Amount,Status\n"
WITH_STATUS = {"orders": {"columns": {**MAPPED["orders"]["columns"], "status": "Status"}}}


def _with(overrides: dict) -> object:
    """The mapped config with `overrides` merged into its orders section."""
    return load_config(overrides={"orders": {**MAPPED["orders"], **overrides}})


def test_lines_of_one_order_a_minute_apart_are_one_order_at_its_first_line_time(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01 12:29,20\na,1,2024-01-01 12:28,10\nb,2,2024-01-02 09:00,5\n")
    orders, report = read_orders(path, mapped_config)
    assert (report.rows_used, report.rows_quarantined, report.orders_spread) == (3, 0, 1)
    first = orders[orders["order_id"] == "1"]["order_ts"]
    assert list(first) == [pd.Timestamp("2024-01-01 12:28")] * 2
    assert ("1 order had lines up to 1 minute apart, taken at its first line's time "
            "(orders.order_time_tolerance_minutes)") in report.summary()


def test_order_time_tolerance_boundary_59_minutes_merge_61_conflict(tmp_path, mapped_config):
    inside = _csv(tmp_path, "a,1,2024-01-01 12:00,1\na,1,2024-01-01 12:59,2\n", name="inside.csv")
    orders, report = read_orders(inside, mapped_config)
    assert report.orders_spread == 1 and set(orders["order_ts"]) == {pd.Timestamp("2024-01-01 12:00")}
    assert "up to 59 minutes apart" in report.summary()
    outside = _csv(tmp_path, "a,1,2024-01-01 12:00,1\na,1,2024-01-01 13:01,2\n", name="outside.csv")
    conflict = "'Invoice' has 2 rows whose order has lines with different customers or timestamps"
    assert f"{conflict} more than 60 minutes apart" in _error(outside, mapped_config)
    # The tolerance is a setting: 0 restores "any difference conflicts".
    assert "different customers or timestamps" in _error(inside, _with({"order_time_tolerance_minutes": 0}))


def test_lines_a_minute_apart_for_different_customers_still_conflict(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01 12:28,1\nb,1,2024-01-01 12:29,2\nc,2,2024-01-02,3\n")
    orders, report = read_orders(path, mapped_config, quarantine=tmp_path / "bad.csv")
    assert (report.rows_used, report.rows_quarantined, report.orders_spread) == (1, 2, 0)
    assert list(orders["customer_id"]) == ["c"]


def test_a_customer_whose_only_order_has_lines_a_minute_apart_keeps_one_whole_order(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01 12:28,10\na,1,2024-01-01 12:29,20\nb,2,2024-01-03,5\n")
    orders, _ = read_orders(path, mapped_config)
    # A cut-off between the two lines' times sees the whole order, once: every consumer gets one order.
    between = features.build(orders, pd.Timestamp("2024-01-01 12:28:30"), mapped_config).set_index("customer_id")
    assert between.loc["a", "frequency"] == 1 and between.loc["a", "monetary_total"] == 30
    later = features.build(orders, "2024-01-04", mapped_config).set_index("customer_id")
    assert later.loc["a", "frequency"] == 1 and later.loc["a", "monetary_total"] == 30


def test_ids_are_trimmed_so_a1_and_a1_space_are_one_customer(tmp_path, mapped_config):
    path = _csv(tmp_path, "A1,1,2024-01-01,10\nA1 ,2,2024-01-02,20\n  A1,3 ,2024-01-03,5\n")
    orders, report = read_orders(path, mapped_config)
    assert set(orders["customer_id"]) == {"A1"} and set(orders["order_id"]) == {"1", "2", "3"}
    assert report.ids_trimmed == 2 and "2 rows had ids with surrounding spaces, trimmed" in report.summary()


@pytest.mark.parametrize("word", ["NULL", "null", "nan", "NaN", "None", "N/A", "na", "   ", " NULL "])
def test_null_like_customer_ids_are_empty_ids_not_customers(tmp_path, mapped_config, word):
    path = _csv(tmp_path, f"{word},1,2024-01-01,10\nb,2,2024-01-02,20\n")
    assert "'Customer ID' has 1 row with an empty customer id (row 1" in _error(path, mapped_config)
    orders, report = read_orders(path, mapped_config, quarantine=tmp_path / "bad.csv")
    assert list(orders["customer_id"]) == ["b"] and report.rows_quarantined == 1
    quarantined = pd.read_csv(tmp_path / "bad.csv", dtype=str, keep_default_na=False)
    assert quarantined["reason"].tolist() == ["empty customer_id"]


def test_which_ids_mean_no_id_is_configurable(tmp_path):
    path = _csv(tmp_path, "NA,1,2024-01-01,10\nnull,2,2024-01-02,20\n")
    orders, report = read_orders(path, _with({"null_ids": ["null"]}), quarantine=tmp_path / "bad.csv")
    assert list(orders["customer_id"]) == ["NA"] and report.rows_quarantined == 1  # 'NA' is a customer here


def test_unknown_statuses_are_bad_rows_never_purchases(tmp_path):
    config = _with({"columns": WITH_STATUS["orders"]["columns"]})
    body = "a,1,2024-01-01,10,completed\na,2,2024-01-02,30,refunded\nb,3,2024-01-03,5,pending\n"
    path = _csv(tmp_path, body, header=STATUS_HEADER)
    message = _error(path, config)
    assert ("'Status' has 2 rows with a status in neither orders.purchase_statuses nor orders.return_statuses "
            "(rows 2, 3: 'refunded', 'pending')") in message
    orders, report = read_orders(path, config, quarantine=tmp_path / "bad.csv")
    assert list(orders["order_id"]) == ["1"] and report.rows_quarantined == 2
    reasons = pd.read_csv(tmp_path / "bad.csv", dtype=str)["reason"].tolist()
    assert reasons[0] == "unknown status 'refunded': add it to orders.purchase_statuses or orders.return_statuses"
    # Added to the list it belongs to, the status is used as that.
    orders, report = read_orders(path, _with({"columns": WITH_STATUS["orders"]["columns"],
                                              "return_statuses": ["returned", "refunded"],
                                              "purchase_statuses": ["completed", "pending"]}))
    assert report.rows_quarantined == 0 and len(orders) == 3


def test_statuses_match_trimmed_and_in_any_case(tmp_path):
    config = _with({"columns": WITH_STATUS["orders"]["columns"]})
    body = ("a,1,2024-01-01,30,Completed\na,2,2024-01-02,10,cancelled \na,3,2024-01-02,10,CANCELLED\n"
            "a,4,2024-01-03,5,\n")
    orders, report = read_orders(_csv(tmp_path, body, header=STATUS_HEADER), config)
    assert report.rows_quarantined == 0 and report.lines_without_status == 1
    assert "1 line has an empty status, taken as a purchase" in report.summary()
    built = features.build(orders, "2024-02-01", config).set_index("customer_id")
    # Two cancellations net 20 out of 35 bought: a cancelled line is never a purchase.
    assert built.loc["a", "frequency"] == 2 and built.loc["a", "monetary_total"] == 35 - 20


def test_a_status_in_both_lists_is_a_config_error():
    from configs.schema import ConfigError
    with pytest.raises(ConfigError, match="both a purchase and a return: returned"):
        load_config(overrides={"orders": {"purchase_statuses": ["completed", " Returned"]}})


def test_identical_repeated_lines_are_counted_and_kept_or_dropped(tmp_path, mapped_config):
    body = "a,1,2024-01-01,10\na,1,2024-01-01,10\na,1,2024-01-01,10\na,1,2024-01-01,20\nb,2,2024-01-02,5\n"
    path = _csv(tmp_path, body)
    orders, report = read_orders(path, mapped_config)
    assert (report.rows_read, report.rows_used, report.lines_repeated, report.rows_dropped) == (5, 5, 2, 0)
    assert "2 lines repeat an earlier line exactly, kept (orders.duplicate_lines: drop keeps one)" in report.summary()
    orders, report = read_orders(path, _with({"duplicate_lines": "drop"}))
    assert (report.rows_read, report.rows_used, report.rows_dropped) == (5, 3, 2)
    assert report.summary().startswith("read 5 = used 3 + quarantined 0 + dropped 2 repeats; 2 lines repeat")
    assert sorted(orders["amount"]) == [5, 10, 20]


def test_orders_in_the_future_or_before_1970_are_bad_rows(tmp_path, mapped_config):
    tomorrow = (pd.Timestamp.now(tz="UTC").tz_localize(None) + pd.Timedelta(hours=12)).strftime("%Y-%m-%d %H:%M")
    body = f"a,1,2024-01-01,10\nb,2,2099-01-01,20\nc,3,1969-12-31,5\nd,4,{tomorrow},1\n"
    message = _error(_csv(tmp_path, body), mapped_config)
    assert "'InvoiceDate' has 1 row that are in the future (after " in message and "(row 2: '2099-01-01')" in message
    assert "'InvoiceDate' has 1 row that are before 1970 (row 3: '1969-12-31')" in message
    orders, report = read_orders(_csv(tmp_path, body), mapped_config, quarantine=tmp_path / "bad.csv")
    assert sorted(orders["customer_id"]) == ["a", "d"]  # half a day ahead is clock slack, not a typo
    reasons = pd.read_csv(tmp_path / "bad.csv")["reason"].tolist()
    assert reasons == ["order_ts is in the future", "order_ts is before 1970"]


def test_implausibly_large_amounts_are_bad_rows_not_overflows(tmp_path, mapped_config):
    path = _csv(tmp_path, "a,1,2024-01-01,10\nb,2,2024-01-02,1e300\nc,3,2024-01-03,-2e12\n")
    message = _error(path, mapped_config)
    assert "'Amount' has 2 rows that are implausibly large (beyond ±1,000,000,000,000) (rows 2, 3" in message
    orders, _ = read_orders(path, mapped_config, quarantine=tmp_path / "bad.csv")
    assert list(orders["customer_id"]) == ["a"]
    assert features.build(orders, "2024-02-01", mapped_config)["monetary_total"].tolist() == [10]


def test_every_row_is_accounted_for_when_repeats_are_dropped_and_bad_rows_quarantined(tmp_path):
    body = ("a,1,2024-01-01 12:28,10\na,1,2024-01-01 12:28,10\na,1,2024-01-01 12:29,x\na,1,2024-01-01 12:30,5\n"
            "b,2,2099-01-01,5\n")
    orders, report = read_orders(_csv(tmp_path, body), _with({"duplicate_lines": "drop"}),
                                 quarantine=tmp_path / "bad.csv")
    assert (report.rows_read, report.rows_used, report.rows_quarantined, report.rows_dropped) == (5, 2, 2, 1)
    assert report.rows_read == report.rows_used + report.rows_quarantined + report.rows_dropped
    # The bad line is set aside; the order's other lines are one order at its first line's time.
    assert report.orders_spread == 1 and set(orders["order_ts"]) == {pd.Timestamp("2024-01-01 12:28")}
    assert pd.read_csv(tmp_path / "bad.csv")["source_row"].tolist() == [3, 5]


def test_an_in_memory_tables_column_types_read_from_arrow_are_the_engines() -> None:
    """A request's tables skip asking the engine for their column types: the Arrow schema gives the same."""
    import pyarrow as pa

    from features.intake import _arrow_columns, _source_columns

    table = pa.table({"customer_id": pa.array(["a"]), "order_ts": pa.array([pd.Timestamp("2024-01-01")], pa.timestamp("us")),
                      "amount": pa.array([1.5]), "n": pa.array([2], pa.int64()), "flag": pa.array([True]),
                      "_row": pa.array([1], pa.int64())})
    con = duckdb.connect()
    con.register("t", table)
    assert _arrow_columns(table.schema) == _source_columns(con, "t")
    assert _arrow_columns(pa.table({"x": pa.array([None])}).schema) is None  # an unusual type: the engine is asked
