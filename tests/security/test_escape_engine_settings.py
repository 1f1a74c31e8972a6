"""Issue 17, items 1, 2 and 13: engine settings are typed values handed to DuckDB, never SQL text,
and DuckDB's spill folder holds nothing a config could read."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from escape_support import AS_OF, SECRET_TEXT, assert_nothing_leaked, one_paragraph_error, run, write_config

from configs.schema import ConfigError, load_config
from features.engine import connect, lock_external_access


def _injection(secret: Path, leak: Path) -> str:
    """The issue's memory_limit that closes the SET statement and copies a file."""
    return (f"2GB'; COPY (SELECT content FROM read_text('{secret}')) TO '{leak}'; "
            "SET memory_limit = '2GB")


def test_a_memory_limit_that_carries_sql_is_refused_when_the_config_is_loaded(tmp_path: Path, secret: Path) -> None:
    leak = tmp_path / "leak.csv"
    config = write_config(tmp_path, f'engine:\n  memory_limit: "{_injection(secret, leak)}"\n')

    with pytest.raises(ConfigError) as caught:
        load_config(config)

    message = str(caught.value)
    assert "engine.memory_limit" in message and "2GB" in message and "60%" in message and "\n" not in message
    assert not leak.exists()


@pytest.mark.parametrize("command", ["features", "score", "train"])
def test_a_memory_limit_that_carries_sql_stops_every_command_before_it_reads_anything(
    command: str, tmp_path: Path, secret: Path, orders_csv: Path
) -> None:
    leak = tmp_path / "leak.csv"
    config = write_config(tmp_path, f'engine:\n  memory_limit: "{_injection(secret, leak)}"\n')
    out = tmp_path / ("tags.parquet" if command == "score" else "features.parquet")
    args = {"features": ["--as-of", AS_OF, "--out", out], "score": ["--as-of", AS_OF, "--out", out],
            "train": []}[command]

    done = run(command, "--orders", orders_csv, "--config", config, *args)

    message = one_paragraph_error(done)
    assert "engine.memory_limit" in message
    assert not leak.exists() and not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


@pytest.mark.parametrize("value", ["lots", "2 gigs", "-1GB", "0", "150%", "yes"])
def test_a_memory_limit_that_is_not_a_size_is_one_paragraph_with_examples(
    value: str, tmp_path: Path, orders_csv: Path
) -> None:
    config = write_config(tmp_path, f'engine:\n  memory_limit: "{value}"\n')

    done = run("features", "--orders", orders_csv, "--as-of", AS_OF, "--out", tmp_path / "f.parquet",
               "--config", config)

    message = one_paragraph_error(done)
    assert "engine.memory_limit" in message and repr(value) in message
    assert "e.g. 2GB, 512MiB" in message


@pytest.mark.parametrize("value", ["2GB", "512MiB", "1.5GB", "60%", "2 GiB"])
def test_memory_sizes_in_every_usual_unit_are_accepted_and_reach_duckdb(value: str) -> None:
    engine = load_config(overrides={"engine": {"memory_limit": value}}).engine
    con = connect(engine)
    try:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        con.close()
    assert limit.endswith(("MiB", "GiB"))


@pytest.mark.parametrize("section, value", [("threads", "0"), ("threads", "'4; SELECT 1'"), ("threads", "yes"),
                                            ("temp_directory", "''")])
def test_threads_and_temp_directory_are_typed_too(section: str, value: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, f"engine:\n  {section}: {value}\n")
    with pytest.raises(ConfigError, match=f"engine.{section}"):
        load_config(config)


def test_a_temp_directory_holding_a_secret_does_not_make_it_readable(tmp_path: Path, secret: Path) -> None:
    # DuckDB always lets a connection read its own spill folder; lifetag's is a fresh, private
    # folder inside the configured one, so the configured folder's files stay out of reach.
    engine = load_config(overrides={"engine": {"temp_directory": str(secret.parent)}}).engine
    con = connect(engine)
    try:
        lock_external_access(con, [])
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0])
        assert spill.parent == secret.parent.resolve() and spill != secret.parent.resolve()
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute("SELECT content FROM read_text(?)", [str(secret)]).fetchall()
        with pytest.raises(Exception, match="disabled by configuration"):
            con.execute("SELECT * FROM sniff_csv(?)", [str(secret)]).fetchall()
    finally:
        con.close()


def test_the_issue_s_sniff_csv_mapping_with_the_secret_s_folder_as_temp_directory_is_refused(
    tmp_path: Path, secret: Path, orders_csv: Path
) -> None:
    expression = (f"customer_id || (SELECT Columns FROM sniff_csv('{secret}', skip=1, header=true))::VARCHAR")
    config = write_config(tmp_path, (
        f"engine:\n  temp_directory: '{secret.parent}'\n"
        f"orders:\n  columns:\n    customer_id: \"{expression}\"\n"
    ))
    out = tmp_path / "features.csv"

    done = run("features", "--orders", orders_csv, "--as-of", AS_OF, "--out", out, "--config", config)

    message = one_paragraph_error(done)
    assert "orders.columns.customer_id" in message and "subquery" in message
    assert "only compute from the row's own columns" in message
    assert not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


def test_features_spill_to_a_private_folder_that_duckdb_removes(tmp_path: Path, orders_csv: Path) -> None:
    spill_root = tmp_path / "spill"
    config = write_config(tmp_path, f"engine:\n  memory_limit: 64MB\n  threads: 1\n  temp_directory: '{spill_root}'\n")

    done = run("features", "--orders", orders_csv, "--as-of", AS_OF, "--out", tmp_path / "f.parquet",
               "--config", config)

    assert done.exit_code == 0, done.output
    assert not spill_root.exists() or not any(spill_root.iterdir()), "no spill folder is left behind"
    assert SECRET_TEXT not in done.output


def test_a_large_query_spills_into_a_temp_folder_that_did_not_exist_yet(tmp_path: Path) -> None:
    # DuckDB creates its private spill folder but not the parents: the configured one must exist.
    from configs.schema import EngineConfig
    from features.engine import connect

    base = tmp_path / "not" / "yet"
    con = connect(EngineConfig(memory_limit="32MB", threads=1, temp_directory=str(base)))
    try:
        rows = con.execute("SELECT count(*) FROM (SELECT range AS v, hash(range) AS h FROM range(4000000) "
                           "ORDER BY h)").fetchall()[0][0]
    finally:
        con.close()
    assert rows == 4_000_000 and base.is_dir()


def test_a_temp_folder_that_cannot_be_created_is_a_config_error(tmp_path: Path) -> None:
    from configs.schema import ConfigError, EngineConfig
    from features.engine import connect

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"engine.temp_directory: cannot create the spill folder"):
        connect(EngineConfig(temp_directory=str(blocker / "spill")))


def test_spill_folders_of_dead_runs_are_removed_by_the_next_connection(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from configs.schema import EngineConfig
    from features.engine import connect

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    host = socket.gethostname()
    dead = tmp_path / f"duckdb-{host}-{dead_pid}-0123456789ab"
    live = tmp_path / f"duckdb-{host}-{os.getpid()}-0123456789ab"
    other_host = tmp_path / f"duckdb-elsewhere-{dead_pid}-0123456789ab"
    unrelated = tmp_path / "duckdb-notes"
    for folder in (dead, live, other_host, unrelated):
        folder.mkdir()
        (folder / "spill.block").write_text("x")

    connect(EngineConfig(temp_directory=str(tmp_path))).close()

    assert not dead.exists()
    assert live.exists() and other_host.exists() and unrelated.exists()
