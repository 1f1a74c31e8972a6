"""Helpers the test modules share (importable as `support`: pytest puts tests/ on sys.path for conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


def use_embedded_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point LIFETAG_HOME (and so the embedded MLflow store) at `home`, with no MLflow URI left over."""
    monkeypatch.setenv("LIFETAG_HOME", str(home))
    # MLflow itself writes both variables into os.environ when a URI is set; start clean.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "240")  # room for the CLI's tables on one line per row
