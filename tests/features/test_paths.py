"""No output may be an input: the same file under another name, inside an input folder, or another output."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from configs.schema import ConfigError, load_config
from features.intake import open_sources
from features.paths import check_outputs_apart, customers_quarantine, file_part


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text("customer_id,order_ts,amount\na,2024-01-01,5\n")
    return path


def _refused(inputs: dict, outputs: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        check_outputs_apart(inputs, outputs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_output_named_like_an_input_is_refused_naming_both_options(orders: Path) -> None:
    other_spelling = orders.parent / "." / ".." / orders.parent.name / orders.name
    message = _refused({"--orders": orders}, {"--out": other_spelling})
    assert message.startswith(f"--out {other_spelling} is the same file as --orders {orders}")
    assert "Give --out another file name" in message


def test_a_symbolic_link_and_a_hard_link_to_an_input_are_the_input(orders: Path, tmp_path: Path) -> None:
    symbolic, hard = tmp_path / "link.csv", tmp_path / "hard.csv"
    symbolic.symlink_to(orders)
    os.link(orders, hard)
    assert "--quarantine" in _refused({"--orders": orders}, {"--quarantine": symbolic})
    assert "--out" in _refused({"--orders": hard}, {"--out": orders})
    assert "--out" in _refused({"--orders": orders}, {"--out": hard})


def test_an_output_inside_an_input_folder_is_refused_but_a_look_alike_sibling_is_not(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    (shop / "2024").mkdir(parents=True)
    message = _refused({"--orders": shop}, {"--out": shop / "2024" / "features.parquet"})
    assert f"inside the --orders folder {shop}" in message

    check_outputs_apart({"--orders": shop}, {"--out": tmp_path / "shop2" / "features.parquet"})


def test_a_duckdb_output_into_an_input_database_is_refused(tmp_path: Path) -> None:
    database = tmp_path / "shop.duckdb"
    duckdb.connect(str(database)).close()
    message = _refused({"--orders": f"{database}:orders"}, {"--out": f"{database}::tags"})
    assert message.startswith(f"--out {database}::tags is the same file as --orders {database}:orders")
    check_outputs_apart({"--orders": f"{database}:orders"}, {"--out": f"{tmp_path / 'tags.duckdb'}::tags"})
    assert file_part(f"{database}::tags") == file_part(f"{database}:orders") == database


def test_two_outputs_on_one_file_are_refused(tmp_path: Path, orders: Path) -> None:
    bad = tmp_path / "bad.csv"
    message = _refused({"--orders": orders}, {"--quarantine": bad, "--out": bad})
    assert message.startswith(f"--quarantine {bad} and --out {bad} are the same file")
    derived = customers_quarantine(bad)
    message = _refused({"--orders": orders},
                       {"--quarantine": bad, "--quarantine (its customers file)": derived, "--out": derived})
    assert "bad.customers.csv" in message and "--out" in message


def test_the_config_and_a_model_folder_are_inputs_too(tmp_path: Path, orders: Path) -> None:
    config, model = tmp_path / "my.yaml", tmp_path / "bundle"
    config.write_text("engine: {}\n")
    model.mkdir()
    assert "--config" in _refused({"--orders": orders, "--config": config}, {"--quarantine": config})
    assert "--model folder" in _refused({"--orders": orders, "--model": model}, {"--out": model / "tags.csv"})


def test_separate_files_and_options_not_given_pass(tmp_path: Path, orders: Path) -> None:
    check_outputs_apart({"--orders": orders, "--customers": None, "--config": None},
                        {"--quarantine": tmp_path / "bad.csv", "--out": tmp_path / "features.csv"})


def test_the_customers_bad_rows_go_where_customers_quarantine_says(tmp_path: Path, orders: Path) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text("customer_id,signup_ts\na,2023-01-01\n,2023-02-01\n")
    quarantine = tmp_path / "bad.csv"
    con = duckdb.connect()
    try:
        open_sources(con, orders, load_config(), customers, quarantine)
    finally:
        con.close()
    assert customers_quarantine(quarantine) == tmp_path / "bad.customers.csv"
    assert customers_quarantine(quarantine).exists()
