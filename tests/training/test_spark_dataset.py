"""Training sets built on Spark (`lifetag train --engine spark`) against the embedded CutoffStore.

Real Spark (local[2], one session for the module) and DuckDB; nothing is mocked.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from configs.schema import Config
from features.engine import connect
from features.intake import open_sources
from serving.cli import app
from support import generated_shop, use_embedded_store
from training.dataset import CutoffStore, plan_cutoffs, targets
from training.spark_dataset import build_training_set

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
