"""Fixtures for the escape tests: a secret file beside the inputs, a small shop, a trained bundle.

Every test here reproduces an attack of issue 17 with a real secret file and checks three things:
exit code 2 (or the error class) with a clear one-paragraph message, no file written where the
attack wanted one, and the secret's text in no output and no message.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from configs.schema import load_config
from support import generated_shop, module_home

from escape_support import CUSTOMERS_CSV, ORDERS_CSV, SECRET_TEXT


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file no config may read, in a folder of its own (the issue's 'secret.csv')."""
    folder = tmp_path / "private"
    folder.mkdir()
    path = folder / "secret.csv"
    path.write_text(f"name,value\n{SECRET_TEXT},1\n")
    return path


@pytest.fixture
def orders_csv(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text(ORDERS_CSV)
    return path


@pytest.fixture
def customers_csv(tmp_path: Path) -> Path:
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)
    return path


@pytest.fixture(scope="session")
def security_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated shop (orders.parquet, customers.parquet)."""
    return generated_shop(tmp_path_factory, 600, 23)


@pytest.fixture(scope="session")
def security_bundle(security_shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle trained on the small shop (trials=0), saved as a folder for `score --model`."""
    from training.pipeline import fit_bundle

    monkeypatch = module_home(tmp_path_factory.mktemp("security_home"))
    try:
        result = fit_bundle(security_shop / "orders.parquet", load_config(), trials=0)
    finally:
        monkeypatch.undo()
    return result.bundle.save(tmp_path_factory.mktemp("security_models") / "bundle")

