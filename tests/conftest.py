"""Shared fixtures: configs, the CDNOW panel, and one small synthetic shop per test session."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from configs.schema import Config, load_config

REPO = Path(__file__).resolve().parents[1]
CDNOW = REPO.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"


@pytest.fixture(scope="session")
def config() -> Config:
    return load_config()


@pytest.fixture(scope="session")
def cdnow_config() -> Config:
    return load_config(REPO / "configs" / "cdnow.yaml")


@pytest.fixture(scope="session")
def cdnow_path() -> Path:
    assert CDNOW.exists(), f"the CDNOW panel is expected at {CDNOW} (the repository's sibling 'shared' folder)"
    return CDNOW


@pytest.fixture(scope="session")
def small_shop() -> pd.DataFrame:
    """2,000 synthetic customers' order lines, canonical columns."""
    from features.synthetic import generate_orders

    return generate_orders(2_000, seed=11)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep DuckDB spill files and MLflow state of the tests out of the developer's .lifetag.
    monkeypatch.setenv("LIFETAG_HOME", str(tmp_path_factory.getbasetemp() / "lifetag_home"))


@pytest.fixture(scope="session")
def degrade():
    """A function making a truly worse copy of a TrainResult: its bundle serves constant predictions
    (probability 0.5, LTV 0), and its reported validation metrics say so (AUC 0.5, Gini 0)."""
    import copy
    import dataclasses

    from serving.bundle import Calibrator

    def degraded(result):  # noqa: ANN001, ANN202 - a TrainResult in, a TrainResult out
        bundle = copy.deepcopy(result.bundle)
        for model in bundle.models.values():
            model._loaded.clear()
            if model.target == "ltv":
                model.scale = 0.0
            else:
                model.calibrator = Calibrator(x=[0.0, 1.0], y=[0.5, 0.5])
        results = {}
        for name, r in result.results.items():
            key, value = ("roc_auc", 0.5) if r.target.kind == "classifier" else ("gini_normalised", 0.0)
            results[name] = dataclasses.replace(r, metrics={**r.metrics, "model": {**r.metrics["model"], key: value}})
        return dataclasses.replace(result, bundle=bundle, results=results)

    return degraded


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow SQLite store, made once; tests copy it to skip MLflow's schema
    migrations (2 s on an idle machine, 8 s on a busy one)."""
    from mlflow import MlflowClient
    from support import use_embedded_store

    from serving import registry

    template = tmp_path_factory.mktemp("empty_store")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, template)
        registry.configure()
        MlflowClient().search_experiments()
    return template / "mlflow.db"


@pytest.fixture(scope="module")
def spark():  # noqa: ANN201 - a pyspark SparkSession; pyspark is imported only by the modules that ask for it
    """A local Spark session (local[2]) for one test module, stopped after it."""
    from features.spark import session

    spark = session("local[2]", shuffle_partitions=4)
    yield spark
    spark.stop()
