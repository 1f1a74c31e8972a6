"""Atomic output: results are written to a temporary file beside the target, then renamed into place."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import duckdb
import pandas as pd

from configs.errors import LifetagError
from features.engine import is_locked

__all__ = ["OutputError", "write_relation", "write_frame", "write_text", "output_format"]

_FORMATS = {".parquet": "parquet", ".csv": "csv"}


class OutputError(LifetagError):
    """The output path cannot be written as asked."""


def output_format(path: str | os.PathLike[str]) -> str:
    """'parquet' or 'csv', from the file extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in _FORMATS:
        raise OutputError(f"{path}: unknown output format '{suffix or '(none)'}'; use a .parquet or .csv file name.")
    return _FORMATS[suffix]


def _temporary_beside(path: Path) -> Path:
    # Same directory, so the final rename is atomic; a dot name so a killed run leaves no look-alike.
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def write_relation(con: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, path: str | os.PathLike[str]) -> Path:
    """Write a DuckDB relation to `path` (Parquet or CSV by extension) atomically."""
    path = Path(path)
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    options = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER true"
    try:
        if is_locked(con):
            # The connection may not write files (it evaluates SQL from a config or an input database):
            # stream the rows to a fresh connection that writes them with the same writer. The writer
            # runs only this COPY; the rows are computed on the locked connection.
            writer = duckdb.connect(":memory:")
            try:
                writer.execute("SET TimeZone = 'UTC'")
                writer.register("_lifetag_rows", relation.to_arrow_reader(batch_size=100_000))
                writer.execute(f"COPY (SELECT * FROM _lifetag_rows) TO ? ({options})", [str(tmp)])
            finally:
                writer.close()
        else:
            # The target is a bound parameter: no path becomes SQL text.
            con.execute(f"COPY ({relation.sql_query()}) TO ? ({options})", [str(tmp)])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a pandas frame to `path` (Parquet or CSV by extension) atomically."""
    path = Path(path)
    fmt = output_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        if fmt == "parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(text: str, path: str | os.PathLike[str]) -> Path:
    """Write `text` (UTF-8) to `path` atomically; an existing file keeps its permission bits."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
