"""The embedded feature engine: one configured DuckDB connection per job."""
from __future__ import annotations

import os
from pathlib import Path

import duckdb

from configs.schema import EngineConfig

__all__ = ["connect", "is_locked", "lifetag_home", "lock_external_access"]


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
    con.execute(f"SET temp_directory = '{_sql_str(str(_temp_directory(engine)))}'")
    return con


def _temp_directory(engine: EngineConfig) -> Path:
    return Path(engine.temp_directory) if engine.temp_directory else lifetag_home() / "tmp"


def lock_external_access(con: duckdb.DuckDBPyConnection, inputs: list[Path], engine: EngineConfig | None = None) -> None:
    """Switch off file and network access on `con`, except reading `inputs` and spilling to the temp folder.

    For connections that evaluate SQL from a config (mapping expressions): they may compute values
    but read nothing but their inputs. Irreversible for the connection; outputs are then written
    through a separate connection (features.output.write_relation does this by itself).
    """
    files = [str(p) for p in inputs if not p.is_dir()]
    folders = [str(p) + os.sep for p in inputs if p.is_dir()]
    temp = _temp_directory(engine or EngineConfig()).resolve()
    folders.append(str(temp) + os.sep)
    con.execute(f"SET allowed_paths = [{', '.join(repr_sql(f) for f in files)}]")
    con.execute(f"SET allowed_directories = [{', '.join(repr_sql(f) for f in folders)}]")
    con.execute("SET enable_external_access = false")


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `con` has file and network access switched off."""
    return not con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0]


def repr_sql(value: str) -> str:
    """A SQL string literal."""
    return "'" + _sql_str(value) + "'"


def _sql_str(value: str) -> str:
    return value.replace("'", "''")
