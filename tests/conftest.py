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
