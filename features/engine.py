"""The embedded feature engine: one configured DuckDB connection per job."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

from configs.schema import EngineConfig

__all__ = ["connect", "lifetag_home"]


def lifetag_home() -> Path:
    """Where lifetag keeps its state: $LIFETAG_HOME, default ./.lifetag."""
    return Path(os.environ.get("LIFETAG_HOME", ".lifetag"))


def connect(engine: EngineConfig | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with lifetag's time zone and resource limits."""
    engine = engine or EngineConfig()
    con = duckdb.connect(":memory:")
    # Every timestamp lifetag handles is UTC; naive input is read as UTC.
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{engine.memory_limit}'")
    if engine.threads:
        con.execute(f"SET threads = {int(engine.threads)}")
    temp = Path(engine.temp_directory) if engine.temp_directory else lifetag_home() / "tmp"
    con.execute(f"SET temp_directory = '{_sql_str(str(temp))}'")
    return con


def _sql_str(value: str) -> str:
    return value.replace("'", "''")
