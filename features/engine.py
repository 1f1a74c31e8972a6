"""The embedded feature engine: one configured DuckDB connection per job, and the lock for connections that read user input."""
from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

import duckdb

from configs.schema import ConfigError, EngineConfig

__all__ = [
    "connect", "is_locked", "lifetag_home", "lock_external_access", "remove_dead_runs_folders", "repr_ident", "repr_sql",
    "run_folder_name",
]


def lifetag_home() -> Path:
    """Where lifetag keeps its state: $LIFETAG_HOME, default ./.lifetag."""
    return Path(os.environ.get("LIFETAG_HOME", ".lifetag"))


def connect(engine: EngineConfig | None = None) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB connection with lifetag's time zone and resource limits.

    The limits are validated values (configs.schema.EngineConfig) handed to DuckDB as settings, never
    pasted into SQL. DuckDB spills to a folder of its own inside the configured temp folder: DuckDB
    always lets a connection read its spill folder, even with external access off, so that folder
    must hold nothing but DuckDB's spill files (DuckDB creates it when it first spills and removes
    it on close).
    """
    engine = engine or EngineConfig()
    settings: dict[str, str | int] = {
        "memory_limit": engine.memory_limit,
        "temp_directory": str(_spill_directory(engine)),
    }
    if engine.threads:
        settings["threads"] = int(engine.threads)
    con = duckdb.connect(":memory:", config=settings)
    # Every timestamp lifetag handles is UTC; naive input is read as UTC.
    con.execute("SET TimeZone = 'UTC'")
    return con


def _spill_directory(engine: EngineConfig) -> Path:
    base = Path(engine.temp_directory) if engine.temp_directory else lifetag_home() / "tmp"
    # DuckDB creates the spill folder itself, but not its parents: a missing base folder made the
    # first spill of a large run fail ("Failed to create directory").
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"engine.temp_directory: cannot create the spill folder {base} ({exc.strerror}). "
                          "Point engine.temp_directory (or LIFETAG_HOME) at a folder lifetag may write.") from None
    # A killed run leaves its spill files behind; the next run on this host removes them.
    remove_dead_runs_folders(base.resolve(), "duckdb")
    return base.resolve() / run_folder_name("duckdb")


def run_folder_name(kind: str) -> str:
    """A folder name unique to this run, `<kind>-<host>-<pid>-<id>`, that remove_dead_runs_folders understands."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def remove_dead_runs_folders(root: Path, kind: str = "*") -> list[Path]:
    """Remove the folders named by run_folder_name(kind) in `root` of this host's runs whose process is gone."""
    host = socket.gethostname()
    removed = []
    for folder in root.glob(f"{kind}-*-*-*") if root.is_dir() else []:
        try:
            owner_host, pid, run_id = folder.name.split("-", 1)[1].rsplit("-", 2)
            pid_number = int(pid)
        except ValueError:
            continue
        # Another host's runs (a shared folder) cannot be checked from here: leave them.
        if len(run_id) != 12 or owner_host != host or _alive(pid_number) or not folder.is_dir():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def lock_external_access(con: duckdb.DuckDBPyConnection, inputs: list[Path],
                         patterns: Sequence[tuple[str, bool]] = ()) -> None:
    """Switch off file and network access on `con`, except reading `inputs` (files or folders).

    For every connection that touches user input: mapping expressions from a config and views in a
    DuckDB database given as input may compute values but read nothing but the inputs. Irreversible
    for the connection; outputs are then written through a separate connection
    (features.output.write_relation does this by itself). DuckDB's own spill folder stays usable
    (DuckDB allows it by itself; `connect` makes it a private, empty folder).
    """
    files, folders = [], []
    for path in inputs:
        # Both spellings: the path as given (relative paths are read as given) and its real location.
        forms = {os.path.abspath(path), str(Path(path).resolve())}
        if Path(path).is_dir():
            folders += [f.rstrip(os.sep) + os.sep for f in sorted(forms)]
        else:
            files += sorted(forms)
    # Exact file patterns DuckDB is given instead of a path (glob characters escaped): (pattern, is a folder).
    for pattern, is_folder in patterns:
        if is_folder:
            folders.append(pattern.rstrip(os.sep) + os.sep)
        else:
            files.append(pattern)
    # Lists of strings as bound parameters: no path becomes SQL text.
    con.execute("SET allowed_paths = ?", [files])
    con.execute("SET allowed_directories = ?", [folders])
    con.execute("SET enable_external_access = false")


def is_locked(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether `con` has file and network access switched off."""
    return not con.execute("SELECT current_setting('enable_external_access')").fetchall()[0][0]


def repr_sql(value: str) -> str:
    """A SQL string literal holding `value` (for the few statements that take no bound parameters, e.g. COPY TO, ATTACH)."""
    if "\0" in value:
        raise ValueError("a NUL character cannot be part of a SQL string")
    return "'" + value.replace("'", "''") + "'"


def repr_ident(name: str) -> str:
    """A quoted SQL identifier naming `name` exactly."""
    if "\0" in name:
        raise ValueError("a NUL character cannot be part of a SQL name")
    return '"' + name.replace('"', '""') + '"'
