"""Training sets built on Spark (`lifetag train --engine spark`) against the embedded CutoffStore.

Real Spark (local[2], one session for the module) and DuckDB; nothing is mocked.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import features.intake
import training.history
from configs.schema import Config
from features.engine import connect
from features.intake import open_sources
from serving.cli import app
from support import generated_shop, use_embedded_store
from training.dataset import CutoffStore, plan_cutoffs, targets
from training.pipeline import TrainResult, fit_bundle
from training.spark_dataset import build_training_set, spark_training_set

AS_OF = pd.Timestamp("2024-06-01")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, 600, 44, start="2023-01-01", end="2024-06-30")


def test_training_sets_built_by_both_engines_are_identical(spark, shop: Path, config: Config) -> None:
    con = connect(config.engine)
    open_sources(con, shop / "orders.parquet", config, shop / "customers.parquet")
    con.execute(f"CREATE TEMP TABLE _history AS SELECT * FROM orders WHERE order_ts < TIMESTAMP '{AS_OF}'")
    first = pd.Timestamp(con.execute("SELECT min(order_ts) FROM orders").fetchall()[0][0])
    cutoffs = sorted({AS_OF, *(c for t in targets(config) for c in plan_cutoffs(AS_OF, t.horizon_days, first, config, t.name))})
    horizons = sorted({t.horizon_days for t in targets(config)})
    assert len(cutoffs) >= 4
    features, labels = build_training_set(spark, shop / "orders.parquet", config, AS_OF, cutoffs, horizons,
                                          shop / "customers.parquet", partitions=3)
    store = CutoffStore(con, "_history", config, "customers")
    for cutoff in cutoffs:
        pd.testing.assert_frame_equal(features[cutoff], store.feature_frame(cutoff), check_exact=True)
        for horizon in horizons:
            pd.testing.assert_frame_equal(labels[(cutoff, horizon)], store.label_frame(cutoff, horizon),
                                          check_exact=True)
    con.close()


def test_train_on_spark_fits_and_registers_from_the_spark_training_set(
        spark, shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_embedded_store(monkeypatch, tmp_path / "home")
    done = CliRunner().invoke(app, ["train", "--orders", str(shop / "orders.parquet"), "--customers",
                                    str(shop / "customers.parquet"), "--as-of", "2024-06-01", "--trials", "0",
                                    "--engine", "spark", "--spark-master", "local[2]"])
    assert done.exit_code == 0, done.output
    assert "trained at as_of 2024-06-01" in done.output and "model lifetag version 1" in done.output


def _saved(result: TrainResult, folder: Path) -> dict[str, str]:
    """The bundle's files as text, without the one value that differs between two runs (trained_at)."""
    result.bundle.save(folder)
    files = {p.name: p.read_text() for p in sorted(folder.iterdir())}
    document = json.loads(files["bundle.json"])
    document["metadata"].pop("trained_at")
    files["bundle.json"] = json.dumps(document, indent=2, sort_keys=True)
    return files


def test_a_bundle_trained_on_spark_equals_the_embedded_one_and_the_driver_reads_no_orders(
        spark, shop: Path, config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    orders, customers = shop / "orders.parquet", shop / "customers.parquet"
    local = fit_bundle(orders, config, as_of=AS_OF, trials=0, customers=customers)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("the driver ran intake on a source itself")

    # Every file intake reads is opened by _register_raw, called by open_sources (features.intake); Spark's
    # Python workers are processes of their own, which these patches do not reach.
    monkeypatch.setattr(features.intake, "_register_raw", refused)
    monkeypatch.setattr(training.history, "open_sources", refused)
    on_spark = fit_bundle(orders, config, as_of=AS_OF, trials=0, customers=customers,
                          training_set=spark_training_set(spark=spark, partitions=3))

    assert on_spark.fingerprint == local.fingerprint and on_spark.fingerprint["customers_rows"] > 0
    assert on_spark.bundle.rebuy_days == local.bundle.rebuy_days and local.bundle.rebuy_days
    assert local.bundle.clusters is not None
    assert on_spark.unmatched_customers == local.unmatched_customers
    assert on_spark.intake.rows_read == local.intake.rows_read
    assert on_spark.customers.customers.rows_read == local.customers.customers.rows_read
    assert _saved(on_spark, tmp_path / "spark") == _saved(local, tmp_path / "local")
    for name, result in local.results.items():
        pd.testing.assert_frame_equal(on_spark.results[name].valid, result.valid, check_exact=True)


def test_history_facts_without_as_of_are_the_embedded_ones_with_the_first_purchase_cohorts(
        spark, shop: Path, config: Config) -> None:
    orders, customers = shop / "orders.parquet", shop / "customers.parquet"
    con, driver = connect(config.engine), connect(config.engine)
    try:
        local = training.history.embedded_history(con, orders, config, customers, None, None)
        history, _ = spark_training_set(spark=spark, partitions=2)(driver, orders, config, customers, None, None)
        assert (history.as_of, history.first_order) == (local.as_of, local.first_order)
        assert history.fingerprint == local.fingerprint and history.rebuy_days == local.rebuy_days
        assert history.unmatched == local.unmatched
        pd.testing.assert_frame_equal(history.cluster_sample, local.cluster_sample, check_exact=True)
        cohorts = training.history.first_purchase_cutoffs(local.as_of, local.first_order, config)
        assert cohorts and sum(len(local.first_purchase_examples(c)) for c in cohorts) > 100
        for cutoff in cohorts:
            pd.testing.assert_frame_equal(history.first_purchase_examples(cutoff), local.first_purchase_examples(cutoff),
                                          check_exact=True)
    finally:
        con.close()
        driver.close()
