"""`lifetag score --engine spark` against the embedded batch: the same customers and the same tags.

Real Spark (local[2], one session for the module), DuckDB, LightGBM and files; nothing is mocked. A
1,500-customer shop with its customers table (sign-ups who never bought) is trained once (trials=0);
each test scores it, or a part of it, with both engines and compares the rows.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import duckdb

from configs.schema import Config
from features.engine import connect
from features.intake import IntakeError, open_sources
from features.spark import read_source
from serving.cli import app
from serving.scoring import score
from serving.spark import score_on_spark
from support import generated_shop, module_home
from training.pipeline import TrainResult, fit_bundle

CUSTOMERS, SEED = 1_500, 33
START, END = "2023-01-01", "2024-06-30"
AS_OF = pd.Timestamp("2024-06-01")
NUMBERS = ["recency_days", "frequency", "monetary_total", "churn_risk", "repurchase_prob", "ltv", "value_at_risk",
           "signup_days", "first_purchase_prob"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED, start=START, end=END)


@pytest.fixture(scope="module")
def trained(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    monkeypatch = module_home(tmp_path_factory.mktemp("home"))
    try:
        return fit_bundle(shop / "orders.parquet", config, as_of=AS_OF, trials=0, customers=shop / "customers.parquet")
    finally:
        monkeypatch.undo()


def _local(orders: Path, out: Path, trained: TrainResult, config: Config, **kwargs) -> pd.DataFrame:
    score(orders, AS_OF, out, config, bundle=trained.bundle, model_version="test", **kwargs)
    return pd.read_parquet(out).sort_values("customer_id", ignore_index=True)


def _spark(spark, orders: Path, out: Path, trained: TrainResult, config: Config, **kwargs) -> pd.DataFrame:
    score_on_spark(orders, AS_OF, out, config, bundle=trained.bundle, model_version="test", spark=spark, **kwargs)
    return pd.read_parquet(out).sort_values("customer_id", ignore_index=True)


def assert_same_tags(spark_rows: pd.DataFrame, local_rows: pd.DataFrame) -> None:
    """Same customers; numbers equal to 1e-9; every label, date, flag, reason and scenario tag identical."""
    assert list(spark_rows.columns) == list(local_rows.columns)
    assert spark_rows["customer_id"].tolist() == local_rows["customer_id"].tolist()
    for column in spark_rows.columns:
        if column in NUMBERS:
            np.testing.assert_allclose(spark_rows[column].to_numpy(float), local_rows[column].to_numpy(float),
                                       rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=column)
        else:
            left, right = spark_rows[column].astype(object), local_rows[column].astype(object)
            same = (left == right) | (left.isna() & right.isna())
            assert same.all(), f"{column}: {left[~same].head(3).tolist()} vs {right[~same].head(3).tolist()}"


def _refusals(spark, local_source, spark_source, trained: TrainResult, config: Config, tmp_path: Path,
              **kwargs) -> tuple[str, str]:
    """The IntakeError paragraphs of scoring `local_source` with the embedded engine and `spark_source` on
    Spark (each must refuse)."""
    with pytest.raises(IntakeError) as local_error:
        score(local_source, AS_OF, tmp_path / "local.parquet", config, bundle=trained.bundle, model_version="test",
              **kwargs)
    with pytest.raises(IntakeError) as spark_error:
        score_on_spark(spark_source, AS_OF, tmp_path / "spark_tags", config, bundle=trained.bundle,
                       model_version="test", spark=spark, partitions=2, **kwargs)
    return str(local_error.value), str(spark_error.value)


def test_spark_gives_the_embedded_batch_tags_for_buyers_and_registered_never_bought(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    customers = shop / "customers.parquet"
    local = _local(shop / "orders.parquet", tmp_path / "local.parquet", trained, config, customers=customers)
    on_spark = _spark(spark, shop / "orders.parquet", tmp_path / "spark_tags", trained, config, customers=customers,
                      partitions=3)
    assert (on_spark["lifecycle_stage"] == "registered").sum() > 100
    assert_same_tags(on_spark, local)


def test_clusters_on_spark_are_the_models_as_in_the_embedded_batch(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    customers = shop / "customers.parquet"
    local = _local(shop / "orders.parquet", tmp_path / "local.parquet", trained, config, customers=customers,
                   clusters=True)
    on_spark = _spark(spark, shop / "orders.parquet", tmp_path / "spark_tags", trained, config, customers=customers,
                      partitions=2, clusters=True)
    assert local["cluster"].notna().sum() > 100
    assert_same_tags(on_spark, local)


def _customers_of(shop: Path, orders: pd.DataFrame, folder: Path, registered: int = 5) -> Path:
    """The customers table's rows of these orders' customers and of a few who never bought."""
    table = pd.read_parquet(shop / "customers.parquet")
    never = table[~table["customer_id"].isin(pd.read_parquet(shop / "orders.parquet")["customer_id"])]
    path = folder / "customers.parquet"
    pd.concat([table[table["customer_id"].isin(orders["customer_id"])], never.head(registered)]).to_parquet(path, index=False)
    return path


def test_partition_counts_do_not_change_tags_even_one_customer_per_partition(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    orders = pd.read_parquet(shop / "orders.parquet")
    few = orders[orders["customer_id"].isin(sorted(orders["customer_id"].unique())[:25])]
    path = tmp_path / "few.parquet"
    few.to_parquet(path, index=False)
    customers = _customers_of(shop, few, tmp_path)
    local = _local(path, tmp_path / "local.parquet", trained, config, customers=customers)
    for partitions in (1, 5, 100_000):  # 30 customers in 100,000 hash partitions: one each
        assert_same_tags(_spark(spark, path, tmp_path / f"spark_{partitions}", trained, config, partitions=partitions,
                                customers=customers), local)


def test_a_customer_whose_lines_are_in_several_files_gets_one_row(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    orders = pd.read_parquet(shop / "orders.parquet")
    busiest = orders["customer_id"].value_counts().index[0]
    folder = tmp_path / "lake"
    folder.mkdir()
    shuffled = orders.sample(frac=1.0, random_state=1)
    for k in range(3):
        shuffled.iloc[k::3].to_parquet(folder / f"part-{k}.parquet", index=False)
    assert all((pd.read_parquet(f)["customer_id"] == busiest).any() for f in folder.iterdir())
    customers = shop / "customers.parquet"
    local = _local(folder, tmp_path / "local.parquet", trained, config, customers=customers)
    on_spark = _spark(spark, folder, tmp_path / "spark_tags", trained, config, partitions=4, customers=customers)
    assert (on_spark["customer_id"] == busiest).sum() == 1
    assert_same_tags(on_spark, local)


def test_csv_orders_give_the_same_tags(spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    orders = pd.read_parquet(shop / "orders.parquet")
    path = tmp_path / "orders.csv"
    some = orders[orders["customer_id"].isin(sorted(orders["customer_id"].unique())[:200])]
    some.to_csv(path, index=False)
    customers = tmp_path / "customers.csv"
    pd.read_parquet(_customers_of(shop, some, tmp_path)).to_csv(customers, index=False)
    local = _local(path, tmp_path / "local.parquet", trained, config, customers=customers)
    assert_same_tags(_spark(spark, path, tmp_path / "spark_tags", trained, config, partitions=2, customers=customers),
                     local)


def test_a_folder_file_with_a_column_the_first_file_lacks_is_the_embedded_paragraph_on_spark(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    orders = pd.read_parquet(shop / "orders.parquet")
    folder = tmp_path / "exports"
    folder.mkdir()
    orders.iloc[:200].drop(columns=["channel"]).to_csv(folder / "a.csv", index=False)
    orders.iloc[200:400].to_csv(folder / "b.csv", index=False)
    local, on_spark = _refusals(spark, folder, folder, trained, config, tmp_path)
    assert on_spark == local
    assert "it has 'channel', which the first file does not" in on_spark


def test_a_csv_file_at_a_uri_is_read_by_intakes_own_reading_with_the_same_tags_and_diagnoses(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    """A CSV on another file system (here a file:// URI, which Spark reads through Hadoop as it reads
    s3a:// or hdfs://) gives the tags of the local file, and a line intake diagnoses the same paragraph,
    naming the URI: Spark's own CSV reader would have replaced the bad bytes silently."""
    orders = pd.read_parquet(shop / "orders.parquet")
    path, customers = tmp_path / "orders.csv", tmp_path / "customers.csv"
    some = orders[orders["customer_id"].isin(sorted(orders["customer_id"].unique())[:150])]
    some.to_csv(path, index=False)
    pd.read_parquet(_customers_of(shop, some, tmp_path)).to_csv(customers, index=False)
    local = _local(path, tmp_path / "local.parquet", trained, config, customers=customers)
    assert_same_tags(_spark(spark, path.as_uri(), tmp_path / "spark_tags", trained, config, partitions=2,
                            customers=customers.as_uri()), local)

    broken = _broken_csv(orders, tmp_path / "broken.csv", "not utf-8")
    (tmp_path / "broken").mkdir()
    local, on_spark = _refusals(spark, broken, broken.as_uri(), trained, config, tmp_path / "broken")
    assert broken.as_uri() in on_spark and "not UTF-8" in on_spark
    assert on_spark.replace(broken.as_uri(), str(broken)) == local


def _bad_orders(shop: Path, folder: Path) -> Path:
    """Orders in two files with bad rows: a non-number amount, an empty id, and one order naming two
    customers whose lines are in different files (so in different partitions)."""
    orders = pd.read_parquet(shop / "orders.parquet").astype({"amount": object})
    first, second = orders.iloc[:3000].copy(), orders.iloc[3000:6000].copy()
    first.iloc[10, first.columns.get_loc("amount")] = "abc"
    second.iloc[5, second.columns.get_loc("customer_id")] = "  "
    shared = first.iloc[20]["order_id"]
    other = second[second["customer_id"] != first.iloc[20]["customer_id"]].index[0]
    second.loc[other, "order_id"] = shared
    second.loc[other, "order_ts"] = first.iloc[20]["order_ts"]
    folder.mkdir()
    for k, part in enumerate((first, second)):
        part.astype({"amount": str}).to_csv(folder / f"orders-{k}.csv", index=False)
    return folder


def test_bad_rows_stop_the_job_with_the_embedded_paragraph_and_quarantine_writes_the_same_rows(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    folder = _bad_orders(shop, tmp_path / "bad")
    customers = shop / "customers.parquet"
    with pytest.raises(IntakeError) as local_error:
        score(folder, AS_OF, tmp_path / "local.parquet", config, bundle=trained.bundle, model_version="test",
              customers=customers)
    previous = tmp_path / "spark_tags"
    previous.mkdir()
    (previous / "part-0.parquet").write_bytes(b"yesterday")
    with pytest.raises(IntakeError) as spark_error:
        score_on_spark(folder, AS_OF, previous, config, bundle=trained.bundle, model_version="test", spark=spark,
                       partitions=3, customers=customers)
    assert str(spark_error.value) == str(local_error.value)
    assert "order_id" in str(spark_error.value) and "different customers" in str(spark_error.value)
    assert [p.name for p in previous.iterdir()] == ["part-0.parquet"]  # the failed job left it as it was

    local = _local(folder, tmp_path / "local.parquet", trained, config, quarantine=tmp_path / "local_bad.csv",
                   customers=customers)
    on_spark = _spark(spark, folder, previous, trained, config, quarantine=tmp_path / "spark_bad.csv", partitions=3,
                      customers=customers)
    assert_same_tags(on_spark, local)
    local_bad = pd.read_csv(tmp_path / "local_bad.csv", dtype=str)
    spark_bad = pd.read_csv(tmp_path / "spark_bad.csv", dtype=str)
    assert len(spark_bad) == 4 and list(spark_bad.columns) == list(local_bad.columns)
    pd.testing.assert_frame_equal(spark_bad, local_bad)


def test_cli_scores_on_spark_and_explains_a_missing_pyspark_in_one_line(
        shop: Path, trained: TrainResult, tmp_path: Path) -> None:
    bundle = trained.bundle.save(tmp_path / "bundle")
    script = ("import sys; sys.modules['pyspark'] = None; from serving.cli import main; sys.argv = ['lifetag', "
              f"'score', '--orders', {str(shop / 'orders.parquet')!r}, '--as-of', '2024-06-01', '--out', "
              f"{str(tmp_path / 'tags')!r}, '--model', {str(bundle)!r}, '--engine', 'spark']; main()")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'lifetag[spark]'" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1

    wrong = CliRunner().invoke(app, ["score", "--orders", str(shop / "orders.parquet"), "--as-of", "2024-06-01",
                                     "--out", str(tmp_path / "t.parquet"), "--engine", "duck"])
    assert wrong.exit_code == 2 and "the engines are: local, spark" in wrong.output


def _broken_csv(orders: pd.DataFrame, path: Path, how: str) -> Path:
    """A CSV of real orders with one fault that intake diagnoses line by line."""
    text = orders.iloc[:400].to_csv(index=False).encode()
    lines = text.split(b"\n")
    if how == "long line":
        lines[150] = lines[150].replace(b",", b',"' + b"x" * 2_200_000, 1)
    elif how == "not utf-8":
        lines[99] = lines[99].replace(b",", b",caf\xe9", 1)
    elif how == "blank header":
        lines.insert(0, b"")
    elif how == "ragged rows":
        lines[40] += b",1,2"
    path.write_bytes(b"\n".join(lines))
    return path


@pytest.mark.parametrize("how", ["long line", "not utf-8", "blank header", "ragged rows"])
def test_csv_line_diagnoses_on_spark_are_the_embedded_paragraphs_word_for_word(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path, how: str) -> None:
    path = _broken_csv(pd.read_parquet(shop / "orders.parquet"), tmp_path / "orders.csv", how)
    local, on_spark = _refusals(spark, path, path, trained, config, tmp_path)
    assert on_spark == local
    assert {"long line": "MB long", "not utf-8": "not UTF-8", "blank header": "first line is blank",
            "ragged rows": "cannot be split"}[how] in on_spark


def test_a_duckdb_database_gives_the_same_paragraph_quarantine_and_tags(
        spark, shop: Path, trained: TrainResult, config: Config, tmp_path: Path) -> None:
    orders = pd.read_parquet(shop / "orders.parquet")
    some = orders[orders["customer_id"].isin(sorted(orders["customer_id"].unique())[:300])].reset_index(drop=True)
    some.loc[[7, 901], "customer_id"] = None  # two bad rows: an empty customer id
    database = tmp_path / "shop.duckdb"
    registered = pd.read_parquet(_customers_of(shop, some.dropna(subset=["customer_id"]), tmp_path))
    with duckdb.connect(str(database)) as con:
        con.register("picked", some)
        con.register("registered", registered)
        con.execute("CREATE TABLE sales AS SELECT * FROM picked")
        con.execute("CREATE TABLE people AS SELECT * FROM registered")
    source, customers = f"{database}:sales", f"{database}:people"
    local, on_spark = _refusals(spark, source, source, trained, config, tmp_path, customers=customers)
    assert on_spark == local and "rows 8, 902" in local
    local = _local(source, tmp_path / "local.parquet", trained, config, customers=customers,
                   quarantine=tmp_path / "local_bad.csv")
    assert_same_tags(_spark(spark, source, tmp_path / "spark_tags", trained, config, partitions=2,
                            customers=customers, quarantine=tmp_path / "spark_bad.csv"), local)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "spark_bad.csv", dtype=str),
                                  pd.read_csv(tmp_path / "local_bad.csv", dtype=str))


def test_a_whitespace_separated_export_reads_as_intake_reads_it_row_for_row(
        spark, cdnow_path: Path, cdnow_config: Config) -> None:
    con = connect(cdnow_config.engine)
    try:
        open_sources(con, cdnow_path, cdnow_config)
        local = con.sql("SELECT * FROM _lifetag_orders_raw ORDER BY _row").df()
    finally:
        con.close()
    raw = read_source(spark, str(cdnow_path), cdnow_config.orders, "orders", "--orders")
    on_spark = raw.df.toArrow().to_pandas().sort_values("_row", ignore_index=True)
    assert raw.rows == len(local) == 69_659
    pd.testing.assert_frame_equal(on_spark[list(local.columns)], local, check_dtype=False)
