"""The customers table: validation and quarantine, ids and text kept exactly, computed columns, point in time.

Real DuckDB on small hand-written CSV files; the property tests generate customers tables and
order histories around one as_of.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import features
from configs.schema import ConfigError, load_config
from features.behaviour import registered
from features.engine import connect, is_locked
from features.intake import IntakeError, open_sources, read_customers, read_orders
from features.output import write_relation

CONFIG = load_config()
HEADER = "customer_id,signup_ts,region,gender,age,acquisition_channel,membership_level\n"
GOOD = "b,2024-01-02,East,M,40,app,gold\n"
ORDERS_HEADER = "customer_id,order_id,order_ts,amount\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _customers_error(path: Path, config=CONFIG) -> str:
    with pytest.raises(IntakeError) as caught:
        read_customers(path, config)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    return message


# --- validation and quarantine ----------------------------------------------------------------------


@pytest.mark.parametrize("body, column, says, rows", [
    pytest.param(",2024-01-01,North,F,30,search,basic\n" + GOOD,
                 "customer_id", "1 row with an empty customer id", "(row 1: '')", id="empty-id"),
    pytest.param("a,yesterday,North,F,30,search,basic\n" + GOOD,
                 "signup_ts", "that are not timestamps", "(row 1: 'yesterday')", id="bad-signup"),
    pytest.param(GOOD + "a,2024-01-01,North,F,abc,search,basic\n",
                 "age", "that are not numbers", "(row 2: 'abc')", id="age-not-a-number"),
    pytest.param("a,2024-01-01,North,F,30,search,basic\n" + GOOD + "a,2024-01-01,South,F,30,search,basic\n",
                 "customer_id", "2 rows whose customer has other rows with different values", "(rows 1, 3: 'a', 'a')",
                 id="conflicting-duplicates"),
])
def test_each_kind_of_bad_customer_row_stops_the_run_naming_file_column_and_rows(
    tmp_path: Path, body: str, column: str, says: str, rows: str
) -> None:
    message = _customers_error(_write(tmp_path, "customers.csv", HEADER + body))

    assert f"column '{column}' has " in message
    assert says in message and rows in message
    assert "--quarantine" in message


def test_identical_repeated_rows_of_a_customer_are_kept_once_and_counted(tmp_path: Path) -> None:
    row = "00042,2024-01-01 09:30,North,F,30,search,basic\n"
    frame, report = read_customers(_write(tmp_path, "customers.csv", HEADER + row + GOOD + row), CONFIG)

    assert list(frame["customer_id"]) == ["00042", "b"]
    assert report.duplicates_merged == 1
    assert (report.rows_read, report.rows_used, report.rows_quarantined) == (3, 3, 0)
    assert "1 repeated identical rows of a customer kept once" in report.summary()


def test_a_missing_an_empty_and_a_header_only_customers_file_are_errors(tmp_path: Path) -> None:
    assert "no such file" in _customers_error(tmp_path / "nowhere.csv")
    assert "--customers" in _customers_error(tmp_path / "nowhere.csv")
    assert "empty" in _customers_error(_write(tmp_path, "empty.csv", ""))
    assert "no rows" in _customers_error(_write(tmp_path, "header_only.csv", HEADER))


def test_quarantine_sets_every_kind_of_bad_customer_row_aside_with_its_reason(tmp_path: Path) -> None:
    body = (
        "a,2024-01-01,North,F,30,search,basic\n"     # 1 good
        ",2024-01-01,North,F,30,search,basic\n"      # 2 empty id
        "c,2024-01-03,West,U,,social,basic\n"        # 3 good (a blank age is allowed)
        "e,31/02/2024,East,M,20,app,silver\n"        # 4 not a timestamp
        "c,2024-01-03,West,U,,social,basic\n"        # 5 identical to row 3: merged
        "f,2024-01-04,South,F,abc,store,gold\n"      # 6 age not a number
        "d,2024-01-05,North,M,50,app,gold\n"         # 7 conflicts with row 8
        "d,2024-01-05,North,M,51,app,gold\n"         # 8
    )
    bad_rows = tmp_path / "bad.csv"
    frame, report = read_customers(_write(tmp_path, "customers.csv", HEADER + body), CONFIG, quarantine=bad_rows)

    assert (report.rows_read, report.rows_used, report.rows_quarantined) == (8, 3, 5)
    assert report.rows_read == report.rows_used + report.rows_quarantined
    assert report.duplicates_merged == 1
    assert list(frame["customer_id"]) == ["a", "c"]
    quarantined = pd.read_csv(bad_rows, dtype=str, keep_default_na=False)
    conflict = "customer_id has other rows with different values"
    assert list(quarantined["source_row"]) == ["2", "4", "6", "7", "8"]
    assert list(quarantined["reason"]) == ["empty customer_id", "signup_ts is not a timestamp", "age is not a number",
                                           conflict, conflict]
    assert list(quarantined["age"]) == ["30", "20", "abc", "50", "51"], "bad rows keep their source values"
    assert report.summary().startswith(f"read 8 = used 3 + quarantined 5 (-> {bad_rows})")


def test_with_both_sources_the_customers_bad_rows_go_beside_the_orders_ones(tmp_path: Path) -> None:
    orders = _write(tmp_path, "orders.csv", ORDERS_HEADER + "a,1,2024-01-01,abc\nb,2,2024-01-02,5\n")
    customers = _write(tmp_path, "customers.csv", HEADER + GOOD + "x,never,North,F,30,search,basic\n")
    con = connect(CONFIG.engine)
    try:
        intake = open_sources(con, orders, CONFIG, customers, quarantine=tmp_path / "bad.csv")
    finally:
        con.close()

    assert intake.orders.rows_quarantined == 1 and intake.customers.rows_quarantined == 1
    assert intake.customers.quarantine_path == str(tmp_path / "bad.customers.csv")
    assert pd.read_csv(tmp_path / "bad.csv")["reason"].tolist() == ["amount is not a number"]
    assert pd.read_csv(tmp_path / "bad.customers.csv")["reason"].tolist() == ["signup_ts is not a timestamp"]


def test_undeclared_columns_are_ignored_and_declared_ones_the_source_lacks_are_noted(tmp_path: Path) -> None:
    path = _write(tmp_path, "customers.csv",
                  "customer_id,signup_ts,region,age,favourite_colour,crm_notes\n1,2024-01-01,North,30,red,vip\n")
    frame, report = read_customers(path, CONFIG)

    assert report.ignored_columns == ["favourite_colour", "crm_notes"]
    assert report.missing_optional == ["gender", "acquisition_channel", "membership_level"]
    assert "favourite_colour" not in frame.columns
    assert frame[["gender", "acquisition_channel", "membership_level"]].isna().all().all()
    assert frame.loc[0, "region"] == "North" and frame.loc[0, "age"] == 30


# --- ids and text exactly as given ---------------------------------------------------------------------

TEXT_CONFIG = load_config(overrides={"customers": {"attributes": {"age_range": "categorical"}}})
TEXT_CUSTOMERS = (
    "customer_id,signup_ts,region,gender,age,age_range\n"
    "00042,2024-01-01,Île-de-France,F,26,26–32\n"
    "12345678901234567890,2024-02-01 10:00,  Grand Est ,M,41,41–50\n"
    "0,2024-03-01,\"Provence-Alpes-Côte d'Azur, FR\",U,33,東京 30代\n"
)
TEXT_EXPECTED = {
    "00042": ("Île-de-France", "26–32"),
    "12345678901234567890": ("  Grand Est ", "41–50"),
    "0": ("Provence-Alpes-Côte d'Azur, FR", "東京 30代"),
}


def test_customer_ids_and_attribute_text_are_read_exactly_as_given(tmp_path: Path) -> None:
    frame, _ = read_customers(_write(tmp_path, "customers.csv", TEXT_CUSTOMERS), TEXT_CONFIG)

    got = {row.customer_id: (row.region, row.age_range) for row in frame.itertuples()}
    assert got == TEXT_EXPECTED
    assert frame["customer_id"].map(type).eq(str).all()


def test_features_carry_the_attributes_of_exactly_the_same_customer_id(tmp_path: Path) -> None:
    customers, _ = read_customers(_write(tmp_path, "customers.csv", TEXT_CUSTOMERS), TEXT_CONFIG)
    # '42' is not '00042' and '00' is not '0': they have no row in the customers table.
    orders, _ = read_orders(_write(tmp_path, "orders.csv", ORDERS_HEADER + (
        "00042,1,2024-03-01,10\n12345678901234567890,2,2024-03-02,5\n0,3,2024-03-03,7\n42,4,2024-03-04,1\n"
        "00,5,2024-03-05,2\n")), TEXT_CONFIG)
    built = features.build(orders, "2024-06-01", TEXT_CONFIG, customers=customers).set_index("customer_id")

    assert sorted(built.index) == sorted(["00042", "12345678901234567890", "0", "42", "00"])
    for customer, (region, age_range) in TEXT_EXPECTED.items():
        assert (built.loc[customer, "region"], built.loc[customer, "age_range"]) == (region, age_range), customer
    assert built.loc[["42", "00"], ["region", "age_range", "signup_days"]].isna().all().all()
    assert built.loc["00042", "signup_days"] == (pd.Timestamp("2024-06-01") - pd.Timestamp("2024-01-01")).days


# --- computed columns ----------------------------------------------------------------------------------

RETAIL_HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
RETAIL_LINES = (
    "489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,01/12/2009 07:45,6.95,13085,United Kingdom\n"
    "489434,79323P,PINK CHERRY LIGHTS,12,01/12/2009 07:45,6.75,13085,United Kingdom\n"
    "489435,22350,CAT BOWL,6,13/12/2009 09:06,2.55,00042,France\n"
    "C489449,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,-2,14/12/2009 10:33,6.95,13085,United Kingdom\n"
    "489436,21523,DOORMAT UNION FLAG,10,15/12/2009 09:06,5.95,,United Kingdom\n"
    "489437,22111,SCOTTIE DOG HOT WATER BOTTLE,3,16/12/2009 11:00,4.95,00042,France\n"
)
RETAIL_COLUMNS = {
    "customer_id": "Customer ID", "order_id": "Invoice", "product_id": "StockCode", "quantity": "Quantity",
    "order_ts": "strptime(InvoiceDate, '%d/%m/%Y %H:%M')",
    "amount": "Quantity * Price",
    "status": "CASE WHEN Invoice LIKE 'C%' THEN 'cancelled' END",
    "category": None, "discount": None, "channel": None,
}
RETAIL = load_config(overrides={"orders": {"columns": RETAIL_COLUMNS}})
RETAIL_AS_OF = "2010-01-01"


def _retail(folder: Path, lines: str = RETAIL_LINES) -> Path:
    return _write(folder, "online_retail.csv", RETAIL_HEADER + lines)


def _retail_with(**columns: str):  # noqa: ANN202 - a Config
    return load_config(overrides={"orders": {"columns": {**RETAIL_COLUMNS, **columns}}})


def test_invoice_lines_map_through_expressions_to_amount_status_and_time(tmp_path: Path) -> None:
    orders, report = read_orders(_retail(tmp_path), RETAIL, quarantine=tmp_path / "bad.csv")
    by_line = orders.set_index(["order_id", "product_id"])

    assert report.rows_used == 5
    assert by_line["amount"].round(2).to_dict() == {
        ("489434", "85048"): 83.4, ("489434", "79323P"): 81.0, ("489435", "22350"): 15.3,
        ("C489449", "85048"): -13.9, ("489437", "22111"): 14.85,
    }
    cancelled = by_line["status"].eq("cancelled")
    assert list(by_line.index[cancelled]) == [("C489449", "85048")] and by_line.loc[~cancelled, "status"].isna().all()
    # Day first: 13/12/2009 is the 13th of December.
    assert by_line.loc[("489435", "22350"), "order_ts"] == pd.Timestamp("2009-12-13 09:06")
    assert by_line.loc[("C489449", "85048"), "quantity"] == -2
    # Customer ID is all digits, yet a plain mapping keeps the ids as text with their zeros.
    assert sorted(set(orders["customer_id"])) == ["00042", "13085"]


def test_cancellation_invoices_net_out_of_spend_in_the_features(tmp_path: Path) -> None:
    orders, _ = read_orders(_retail(tmp_path), RETAIL, quarantine=tmp_path / "bad.csv")
    built = features.build(orders, RETAIL_AS_OF, RETAIL).set_index("customer_id")

    assert built.loc["13085", "monetary_total"] == pytest.approx(83.4 + 81.0 - 13.9)
    assert built.loc["13085", "frequency"] == 1 and built.loc["13085", "return_count"] == 1
    assert built.loc["00042", "monetary_total"] == pytest.approx(15.3 + 14.85)
    assert built.loc["00042", "frequency"] == 2 and built.loc["00042", "return_count"] == 0


def test_blank_customer_ids_in_invoice_lines_are_reported_or_quarantined_with_a_reason(tmp_path: Path) -> None:
    path = _retail(tmp_path)
    with pytest.raises(IntakeError) as caught:
        read_orders(path, RETAIL)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "column 'Customer ID' has 1 row with an empty customer id (row 5" in message

    _, report = read_orders(path, RETAIL, quarantine=tmp_path / "bad.csv")
    quarantined = pd.read_csv(tmp_path / "bad.csv", dtype=str)
    assert (report.rows_read, report.rows_used, report.rows_quarantined) == (6, 5, 1)
    assert quarantined[["source_row", "Invoice", "reason"]].values.tolist() == [["5", "489436", "empty customer_id"]]


def test_expressions_lock_the_intake_connection_and_outputs_are_still_written(tmp_path: Path) -> None:
    secret = _write(tmp_path, "secret.txt", "TOPSECRET\n")
    con = connect(RETAIL.engine)
    try:
        open_sources(con, _retail(tmp_path), RETAIL, quarantine=tmp_path / "bad.csv")
        assert is_locked(con)
        with pytest.raises(Exception, match="disabled by configuration"):
            con.sql(f"SELECT * FROM read_text('{secret}')").fetchall()
        written = write_relation(con, con.sql("SELECT customer_id, amount FROM orders"), tmp_path / "out.parquet")
    finally:
        con.close()
    assert len(pd.read_parquet(written)) == 5


def test_plain_column_mappings_lock_the_intake_connection_too(tmp_path: Path) -> None:
    # Every connection that reads user input is locked, expressions or not: a DuckDB input can hold
    # a view that reads other files (tests/security).
    con = connect(CONFIG.engine)
    try:
        open_sources(con, _write(tmp_path, "orders.csv", ORDERS_HEADER + "a,1,2024-01-01,5\n"), CONFIG)
        assert is_locked(con)
    finally:
        con.close()


@pytest.mark.parametrize("template", [
    "(SELECT count(*) FROM read_csv('{secret}'))",
    "(SELECT max(length(content)) FROM read_text('{secret}'))",
    "(SELECT count(*) FROM glob('{folder}/*'))",
])
def test_an_expression_that_reads_a_file_is_rejected_before_anything_is_read(tmp_path: Path, template: str) -> None:
    secret = _write(tmp_path, "secret.txt", "TOPSECRET\n")
    expression = template.format(secret=secret, folder=tmp_path)
    customers = _write(tmp_path, "customers.csv", "customer_id,signup_ts,age\n1,2024-01-01,30\n")
    leak = load_config(overrides={"customers": {"attributes": {"leak": {"type": "numeric", "column": expression}}}})
    attempts = {
        "orders.columns.amount": lambda: read_orders(_retail(tmp_path), _retail_with(amount=expression),
                                                     quarantine=tmp_path / "bad.csv"),
        "customers.attributes.leak.column": lambda: read_customers(customers, leak, quarantine=tmp_path / "bad.csv"),
    }

    for entry, read in attempts.items():
        with pytest.raises(ConfigError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{entry}: ") and "may only compute from the row's own columns" in message, message
        assert "TOPSECRET" not in message and "\n" not in message
        assert not (tmp_path / "bad.csv").exists()


def test_an_expression_over_an_unknown_column_names_the_entry_and_lists_the_source_columns(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        read_orders(_retail(tmp_path), _retail_with(amount="Quantity * UnitPrice"))
    message = str(caught.value)

    assert message.startswith("orders.columns.amount: ") and "UnitPrice" in message and "\n" not in message
    for column in ("Invoice (VARCHAR)", "Quantity (BIGINT)", "InvoiceDate (VARCHAR)", "Price (DOUBLE)", "Customer ID"):
        assert column in message, column


def test_a_syntax_error_in_an_expression_names_the_entry(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^orders\.columns\.status: .*syntax error"):
        read_orders(_retail(tmp_path), _retail_with(status="CASE WHEN Invoice LIKE 'C%' THEN"))


def test_customers_columns_and_attributes_can_be_computed_from_the_source(tmp_path: Path) -> None:
    customers = _write(tmp_path, "customers.csv", (
        "Customer ID,Joined,Country,age,Newsletter\n"
        "00042,13/11/2009,France,26,yes\n"
        "13085,01/11/2009,United Kingdom,45,no\n"
        "99,02/12/2009,Île-de-France,30,yes\n"
        "7,05/01/2010,France,61,no\n"
    ))
    config = load_config(overrides={
        "orders": {"columns": RETAIL_COLUMNS},
        "customers": {
            "columns": {"customer_id": "Customer ID", "signup_ts": "strptime(Joined, '%d/%m/%Y')"},
            "attributes": {
                "country": {"type": "categorical", "column": "Country"},
                "age_band": {"type": "categorical", "column": "CASE WHEN age < 30 THEN 'young' ELSE 'older' END"},
            },
        },
    })
    frame, report = read_customers(customers, config)

    assert frame.set_index("customer_id")[["signup_ts", "country", "age", "age_band"]].to_dict("index") == {
        "00042": {"signup_ts": pd.Timestamp("2009-11-13"), "country": "France", "age": 26.0, "age_band": "young"},
        "13085": {"signup_ts": pd.Timestamp("2009-11-01"), "country": "United Kingdom", "age": 45.0,
                  "age_band": "older"},
        "7": {"signup_ts": pd.Timestamp("2010-01-05"), "country": "France", "age": 61.0, "age_band": "older"},
        "99": {"signup_ts": pd.Timestamp("2009-12-02"), "country": "Île-de-France", "age": 30.0, "age_band": "older"},
    }
    assert report.ignored_columns == ["Newsletter"]
    assert report.missing_optional == ["region", "gender", "acquisition_channel", "membership_level"]

    orders, _ = read_orders(_retail(tmp_path), config, quarantine=tmp_path / "bad.csv")
    built = features.build(orders, RETAIL_AS_OF, config, customers=frame).set_index("customer_id")
    assert built.loc["00042", "age_band"] == "young" and built.loc["13085", "country"] == "United Kingdom"
    assert built.loc["00042", "signup_days"] == (pd.Timestamp(RETAIL_AS_OF) - pd.Timestamp("2009-11-13")).days
    # 99 signed up before as_of and never ordered; 7 signs up after it.
    assert list(registered(orders, frame, RETAIL_AS_OF, config)["customer_id"]) == ["99"]


def test_an_expression_that_fails_on_a_row_stops_with_one_paragraph_naming_the_entry(tmp_path: Path) -> None:
    path = _retail(tmp_path, RETAIL_LINES + "489438,22112,TEA COSY,1,not a date,3.25,00042,France\n")
    with pytest.raises(IntakeError) as info:
        read_orders(path, RETAIL, quarantine=tmp_path / "bad.csv")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "orders.columns.order_ts" in message
    assert "not a date" in message and "try_strptime" in message


def test_a_date_a_tolerant_expression_cannot_parse_is_a_bad_row(tmp_path: Path) -> None:
    path = _retail(tmp_path, RETAIL_LINES + "489438,22112,TEA COSY,1,not a date,3.25,00042,France\n")
    config = _retail_with(order_ts="try_strptime(InvoiceDate, '%d/%m/%Y %H:%M')")
    _, report = read_orders(path, config, quarantine=tmp_path / "bad.csv")
    assert report.rows_quarantined == 2  # the blank customer id, and the date
    assert "order_ts is not a timestamp" in pd.read_csv(tmp_path / "bad.csv")["reason"].tolist()


def test_an_optional_computed_date_that_comes_out_empty_from_a_non_blank_value_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "customers.csv", "id,joined\na,01/02/2024\nb,\nc,31/31/2024\n")
    config = load_config(overrides={"customers": {"columns": {"customer_id": "id",
                                                              "signup_ts": "try_strptime(joined, '%d/%m/%Y')"},
                                                  "attributes": {}}})
    with pytest.raises(IntakeError) as info:
        read_customers(path, config)
    assert "customers.columns.signup_ts" in str(info.value) and "row 3" in str(info.value)
    frame, report = read_customers(path, config, quarantine=tmp_path / "bad.csv")
    assert report.rows_quarantined == 1 and sorted(frame["customer_id"]) == ["a", "b"]
    assert frame.set_index("customer_id")["signup_ts"].isna().to_dict() == {"a": False, "b": True}


# --- point in time -------------------------------------------------------------------------------------

AS_OF = datetime(2024, 6, 1)
KNOWN = ["001", "01", "1", "42", "X-9"]
NEWCOMERS = ["0001", "N-1", "N-2", "Île"]  # sign up on or after as_of
REGIONS = [None, "North", "Île-de-France", "  Grand Est "]
before = st.datetimes(min_value=AS_OF - timedelta(days=800), max_value=AS_OF - timedelta(microseconds=1))
on_or_after = st.datetimes(min_value=AS_OF, max_value=AS_OF + timedelta(days=400))


def _order_lines(ids: list[str], when: st.SearchStrategy[datetime], prefix: str) -> st.SearchStrategy[list[dict]]:
    line = st.fixed_dictionaries({
        "customer_id": st.sampled_from(ids),
        "order_ts": when,
        "amount": st.floats(-50, 500, allow_nan=False).map(lambda x: round(x, 2)),
        "status": st.sampled_from([None, "completed", "returned", "Cancelled"]),
    })
    numbered = st.lists(line, max_size=20)
    # Each line its own order, so generated lines never conflict.
    return numbered.map(lambda rows: [{**r, "order_id": f"{prefix}{i}"} for i, r in enumerate(rows)])


def _customer_rows(ids: list[str], signup: st.SearchStrategy[datetime | None]) -> st.SearchStrategy[list[dict]]:
    row = st.fixed_dictionaries({
        "customer_id": st.sampled_from(ids), "signup_ts": signup,
        "region": st.sampled_from(REGIONS), "age": st.one_of(st.none(), st.integers(18, 90)),
    })
    return st.lists(row, max_size=len(ids), unique_by=lambda r: r["customer_id"])


def _orders(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "order_id", "order_ts", "amount", "status"])
    frame["order_ts"] = pd.to_datetime(frame["order_ts"])
    return frame


def _customers(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["customer_id", "signup_ts", "region", "age"])
    frame["signup_ts"] = pd.to_datetime(frame["signup_ts"])
    frame["age"] = frame["age"].astype(float)
    return frame


def _purchasers(orders: pd.DataFrame) -> set[str]:
    returned = orders["status"].str.lower().isin(CONFIG.orders.return_statuses) | (orders["amount"] < 0)
    return set(orders.loc[(orders["order_ts"] < AS_OF) & ~returned, "customer_id"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_order_lines(KNOWN, before, "H"), future=_order_lines(KNOWN + NEWCOMERS, on_or_after, "F"),
       known=_customer_rows(KNOWN, st.one_of(st.none(), before, on_or_after)),
       newcomers=_customer_rows(NEWCOMERS, on_or_after))
def test_sign_ups_and_orders_on_or_after_as_of_never_change_features_or_the_registered(
    history: list[dict], future: list[dict], known: list[dict], newcomers: list[dict]
) -> None:
    past_orders, past_customers = _orders(history), _customers(known)
    all_orders = _orders(history + future)
    all_customers = _customers(known + newcomers)

    pd.testing.assert_frame_equal(features.build(past_orders, AS_OF, CONFIG, customers=past_customers),
                                  features.build(all_orders, AS_OF, CONFIG, customers=all_customers))
    pd.testing.assert_frame_equal(registered(past_orders, past_customers, AS_OF, CONFIG),
                                  registered(all_orders, all_customers, AS_OF, CONFIG))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=_order_lines(KNOWN, st.one_of(before, on_or_after), "H"),
       known=_customer_rows(KNOWN, st.one_of(st.none(), before, on_or_after)))
def test_the_registered_are_the_sign_ups_before_as_of_with_no_purchase_before_it(
    history: list[dict], known: list[dict]
) -> None:
    orders, customers = _orders(history), _customers(known)
    found = registered(orders, customers, AS_OF, CONFIG)
    buyers = _purchasers(orders)
    signed_up = customers.loc[customers["signup_ts"].isna() | (customers["signup_ts"] < AS_OF), "customer_id"]

    assert set(found["customer_id"]) == set(signed_up) - buyers
    assert not set(found["customer_id"]) & set(customers.loc[customers["signup_ts"] >= AS_OF, "customer_id"])
    assert found["customer_id"].is_unique
    # The features' population is exactly the buyers; together the two cover everyone tagged, once.
    assert set(features.build(orders, AS_OF, CONFIG, customers=customers)["customer_id"]) == buyers
    # Their attributes are the table's, exactly.
    table = customers.set_index("customer_id")
    for row in found.itertuples():
        for column in ("region", "age"):
            given_value, tagged = table.loc[row.customer_id, column], getattr(row, column)
            assert tagged == given_value or (pd.isna(tagged) and pd.isna(given_value)), (row.customer_id, column)


# --- issue 17: the customers table follows the orders' id rules --------------------------------------


def test_customer_ids_are_trimmed_like_the_orders_ones_so_both_tables_match(tmp_path: Path) -> None:
    orders = _write(tmp_path, "orders.csv", ORDERS_HEADER + "A1 ,1,2024-01-01,10\nb,2,2024-01-02,5\n")
    customers = _write(tmp_path, "customers.csv", HEADER + " A1,2024-01-01,North,F,30,search,basic\n" + GOOD
                       + "A1,2024-01-01,North,F,30,search,basic\n")
    con = connect(CONFIG.engine)
    try:
        intake = open_sources(con, orders, CONFIG, customers)
        joined = con.execute("SELECT o.customer_id, c.region FROM orders o JOIN customers c USING (customer_id) "
                             "ORDER BY 1").fetchall()
    finally:
        con.close()
    assert joined == [("A1", "North"), ("b", "East")]
    assert intake.customers.ids_trimmed == 1 and intake.customers.duplicates_merged == 1  # ' A1' is 'A1'
    assert "1 row had ids with surrounding spaces, trimmed" in intake.customers.summary()
    assert "1 row had ids with surrounding spaces, trimmed" in intake.orders.summary()


def test_null_like_customer_ids_in_the_customers_table_are_empty_ids(tmp_path: Path) -> None:
    body = "NULL,2024-01-01,North,F,30,search,basic\n" + GOOD + "nan ,2024-01-01,North,F,30,search,basic\n"
    path = _write(tmp_path, "customers.csv", HEADER + body)
    assert "'customer_id' has 2 rows with an empty customer id (rows 1, 3: 'NULL', 'nan ')" in _customers_error(path)
    frame, report = read_customers(path, CONFIG, quarantine=tmp_path / "bad.csv")
    assert list(frame["customer_id"]) == ["b"] and report.rows_quarantined == 2
