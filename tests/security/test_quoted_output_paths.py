"""Issue 17, item 13: a quote in an output path is a file name, never SQL (features, score, DuckDB outputs)."""
from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from escape_support import AS_OF, run


@pytest.mark.parametrize("name", ["it's.parquet", "it's.csv", "a'); SELECT 1; --.parquet"])
def test_features_write_to_a_path_with_a_quote(name: str, tmp_path: Path, orders_csv: Path) -> None:
    out = tmp_path / name

    done = run("features", "--orders", orders_csv, "--as-of", AS_OF, "--out", out)

    assert done.exit_code == 0, done.output
    frame = pd.read_parquet(out) if name.endswith(".parquet") else pd.read_csv(out)
    assert sorted(frame["customer_id"]) == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["orders.csv", name]), "nothing else is written"


def test_a_quarantine_path_with_a_quote_is_written(tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("customer_id,order_id,order_ts,amount\na,1,2024-01-05,10\nb,2,2024-01-06,abc\n")
    bad = tmp_path / "bad's rows.csv"

    done = run("features", "--orders", orders, "--as-of", AS_OF, "--out", tmp_path / "f.parquet", "--quarantine", bad)

    assert done.exit_code == 0, done.output
    assert pd.read_csv(bad)["reason"].tolist() == ["amount is not a number"]


@pytest.mark.parametrize("out", ["it's.duckdb::t", "it's.parquet", "it's.csv"])
def test_score_writes_to_a_path_with_a_quote(out: str, tmp_path: Path, security_shop: Path,
                                             security_bundle: Path) -> None:
    target = f"{tmp_path}/{out}"

    done = run("score", "--orders", security_shop / "orders.parquet", "--as-of", "2025-01-01", "--out", target,
               "--model", security_bundle)

    assert done.exit_code == 0, done.output
    if "::" in target:
        path, table = target.split("::")
        con = duckdb.connect(path, read_only=True)
        try:
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        finally:
            con.close()
    else:
        rows = len(pd.read_parquet(target) if target.endswith(".parquet") else pd.read_csv(target))
    assert rows > 0 and f"{rows:,}" in done.output
