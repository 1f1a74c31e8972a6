"""Helpers the test modules share (importable as `support`: pytest puts tests/ on sys.path for conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


def use_embedded_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point LIFETAG_HOME (and so the embedded MLflow store) at `home`, with no MLflow URI left over."""
    monkeypatch.setenv("LIFETAG_HOME", str(home))
    # MLflow itself writes both variables into os.environ when a URI is set; start clean.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "240")  # room for the CLI's tables on one line per row


def module_home(home: Path) -> pytest.MonkeyPatch:
    """LIFETAG_HOME for a module-scoped fixture (they run before the autouse per-test one); undo when done."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("LIFETAG_HOME", str(home))
    return monkeypatch


def parquet_file(frame: pd.DataFrame, folder: Path, name: str) -> Path:
    """`frame` written to folder/name (Parquet, no index), for fixtures that hand a path to lifetag."""
    path = folder / name
    frame.to_parquet(path, index=False)
    return path


def generated_shop(factory: pytest.TempPathFactory, customers: int, seed: int, **period: str) -> Path:
    """A shop from the generator (orders.parquet, customers.parquet) in a fresh temporary folder."""
    from features.synthetic import write_shop

    folder = factory.mktemp("shop")
    write_shop(folder, n_customers=customers, seed=seed, **period)
    return folder
