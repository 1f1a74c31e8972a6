"""`lifetag score` as a user runs it (in process through typer's CliRunner, once as a real process).

Real training (once per module, trials=0), a real MLflow store (SQLite in a temporary LIFETAG_HOME)
holding the trained bundle as champion, and the same bundle saved as a folder. Covers the default
champion, output formats, the closing summary and every user error path: exit code 2, one
paragraph on stderr, no traceback, nothing written.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from configs.schema import Config
from serving.cli import app
from serving.scoring import OUTPUT_DOCS
from training.pipeline import TrainResult, fit_bundle
from training.tracking import record_training
from support import generated_shop, use_embedded_store

CUSTOMERS = 2_000
SEED = 17
AS_OF = "2025-01-01"  # the day after the generated shop's last order
DATE_COLUMNS = ("as_of", "expected_next_order")


def _score(*args: str) -> Result:
    return CliRunner().invoke(app, ["score", *args])


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED) / "orders.parquet"


@pytest.fixture(scope="module")
def registered(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path]:
    """A training at AS_OF, registered as version 1 (champion) in the MLflow store of a LIFETAG_HOME."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, home)
        result = fit_bundle(shop, config, trials=0)
        recorded = record_training(result, promote=False, trials=0)
    assert str(recorded.version) == "1"
    return result, home


@pytest.fixture(scope="module")
def bundle_dir(registered: tuple[TrainResult, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return registered[0].bundle.save(tmp_path_factory.mktemp("models") / "bundle-2025-01-01")


@pytest.fixture
def champion_home(registered: tuple[TrainResult, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    use_embedded_store(monkeypatch, registered[1])
    return registered[1]


@pytest.fixture
def empty_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("empty_home")
    use_embedded_store(monkeypatch, home)
    return home


def _read(out: str) -> pd.DataFrame:
    """An output as a frame, whatever its format, with dates as text and missing text as ''."""
    if "::" in out:
        path, table = out.split("::")
        con = duckdb.connect(path, read_only=True)
        try:
            frame = con.sql(f"SELECT * FROM {table}").df()
        finally:
            con.close()
    elif out.endswith(".csv"):
        frame = pd.read_csv(out, dtype={"customer_id": str})
    else:
        frame = pd.read_parquet(out)
    for column in DATE_COLUMNS:
        frame[column] = pd.to_datetime(frame[column]).dt.strftime("%Y-%m-%d").fillna("")
    for column in frame.columns:
        if frame[column].dtype == object or str(frame[column].dtype).startswith("str"):
            frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
        elif column.startswith("rfm_") and column[-1] in "rfm":
            frame[column] = frame[column].astype("int64")
    return frame


def _one_paragraph_error(done: Result) -> str:
    assert done.exit_code == 2, f"{done.output}\n{done.exception!r}"
    assert isinstance(done.exception, SystemExit), f"not a handled error: {done.exception!r}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.output
    return lines[0]


# --- the nightly run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_score_uses_the_registered_champion_by_default_and_prints_the_closing_summary(
    shop: Path, champion_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tags.parquet"
    rows = len(pd.read_parquet(shop))

    done = _score("--orders", str(shop), "--as-of", AS_OF, "--out", str(out))

    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    stdout = done.stdout
    assert f"Orders: read {rows:,} = used {rows:,} + quarantined 0" in stdout
    assert f"Scored {CUSTOMERS:,} customers at {AS_OF} with model 1 -> {out}" in stdout
    for title in ("RFM segments", "Lifecycle stages", "Important value", "Scenario tags: replenishment_due"):
        assert title in stdout, title
    tags = pd.read_parquet(out)
    assert len(tags) == CUSTOMERS and (tags["model_version"] == "1").all()
    assert [p.name for p in tmp_path.iterdir()] == ["tags.parquet"]


@pytest.mark.slow
def test_a_pinned_registry_version_and_a_bundle_folder_give_the_champions_scores(
    shop: Path, champion_home: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    by_version = tmp_path / "v1.parquet"
    by_folder = tmp_path / "folder.parquet"
    assert _score("--orders", str(shop), "--as-of", AS_OF, "--out", str(by_version),
                  "--model", "models:/lifetag/1").exit_code == 0
    assert _score("--orders", str(shop), "--as-of", AS_OF, "--out", str(by_folder),
                  "--model", str(bundle_dir)).exit_code == 0

    version, folder = pd.read_parquet(by_version), pd.read_parquet(by_folder)
    assert (version["model_version"] == "1").all()
    assert (folder["model_version"] == "bundle:bundle-2025-01-01").all()
    pd.testing.assert_frame_equal(version.drop(columns="model_version"), folder.drop(columns="model_version"))


@pytest.mark.slow
def test_parquet_csv_and_duckdb_outputs_hold_the_same_rows(
    shop: Path, bundle_dir: Path, empty_home: Path, tmp_path: Path
) -> None:
    outs = [str(tmp_path / "tags.parquet"), str(tmp_path / "tags.csv"), f"{tmp_path / 'tags.duckdb'}::customer_tags"]
    for out in outs:
        done = _score("--orders", str(shop), "--as-of", AS_OF, "--out", out, "--model", str(bundle_dir),
                      "--partitions", "3")
        assert done.exit_code == 0, f"{out}: {done.output}\n{done.exception!r}"

    parquet, csv, table = (_read(out) for out in outs)
    assert len(parquet) == CUSTOMERS and parquet["customer_id"].str.fullmatch(r"\d{7}").all()
    assert list(parquet.columns)[: len(OUTPUT_DOCS)] == list(OUTPUT_DOCS)
    pd.testing.assert_frame_equal(csv, parquet, check_dtype=False, rtol=1e-12)
    pd.testing.assert_frame_equal(table, parquet, check_dtype=False, rtol=1e-12)
    assert "一般挽留客户" in set(csv["rfm_segment_label_zh"]), "Chinese labels survive the CSV"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tags.csv", "tags.duckdb", "tags.parquet"]


@pytest.mark.slow
def test_a_duckdb_output_replaces_its_table_and_keeps_the_other_tables(
    shop: Path, bundle_dir: Path, empty_home: Path, tmp_path: Path
) -> None:
    database = tmp_path / "marketing.duckdb"
    con = duckdb.connect(str(database))
    con.execute("CREATE TABLE campaigns AS SELECT 'spring' AS name")
    con.execute("CREATE TABLE customer_tags AS SELECT 'stale' AS customer_id")
    con.close()

    done = _score("--orders", str(shop), "--as-of", AS_OF, "--out", f"{database}::customer_tags",
                  "--model", str(bundle_dir))

    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    con = duckdb.connect(str(database), read_only=True)
    try:
        assert con.execute("SELECT name FROM campaigns").fetchall() == [("spring",)]
        assert con.execute("SELECT count(*), count(*) FILTER (WHERE customer_id = 'stale') FROM customer_tags"
                           ).fetchall() == [(CUSTOMERS, 0)]
    finally:
        con.close()


# --- user errors: exit 2, one paragraph, nothing written ---------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model, says", [
    ("models:/nope@champion", "no registered model 'nope'"),
    ("models:/lifetag@champion", "no registered model 'lifetag'"),  # the default, in an empty store
    ("{tmp}/no-such-folder", "{tmp}/no-such-folder"),
    ("{tmp}/not-a-bundle", "not a usable lifetag bundle folder"),
])
def test_an_unknown_model_exits_2_naming_it(model: str, says: str, shop: Path, empty_home: Path,
                                            tmp_path: Path) -> None:
    (tmp_path / "not-a-bundle").mkdir()
    out = tmp_path / "tags.parquet"

    done = _score("--orders", str(shop), "--as-of", AS_OF, "--out", str(out), "--model", model.format(tmp=tmp_path))

    message = _one_paragraph_error(done)
    assert f"--model {model.format(tmp=tmp_path)}" in message
    assert says.format(tmp=tmp_path) in message
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("yaml_text, says", [
    ("features:\n  windows_days: [30, 60]\n", ["feature schema mismatch", "orders_90d", "spend_180d",
                                              "features.windows_days"]),
    ("scoring:\n  scenarios:\n    vip_lapsed: \"rfm_segment = 'important_value' AND recency_dayz > 60\"\n",
     ["scoring.scenarios.vip_lapsed", "recency_dayz", "Columns available: customer_id, recency_days"]),
    ("scoring:\n  scenarios:\n    sneaky: \"(SELECT count(*) FROM read_csv('/etc/passwd')) > 0\"\n",
     ["scoring.scenarios.sneaky", "subquery", "may only compute from the row's own columns"]),
])
def test_a_config_that_does_not_fit_exits_2_before_writing(yaml_text: str, says: list[str], shop: Path,
                                                          bundle_dir: Path, empty_home: Path, tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "tags.parquet"

    done = _score("--orders", str(shop), "--as-of", AS_OF, "--out", str(out), "--model", str(bundle_dir),
                  "--config", str(config))

    message = _one_paragraph_error(done)
    for words in says:
        assert words in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("args, says", [
    (["--out", "{tmp}/tags.json"], "unknown output format '.json'"),
    (["--out", "{tmp}/tags.duckdb::customer-tags"], "FILE.duckdb::TABLE"),
    (["--out", "{tmp}/tags.parquet", "--engine", "duck"], "--engine 'duck' is not available"),
    (["--out", "{tmp}/tags.parquet", "--as-of", "2021-01-01"],
     "no orders before --as-of 2021-01-01: the first order is on 2022-01-"),
    (["--out", "{tmp}/tags.parquet", "--as-of", "01/01/2025"], "is not a date"),
])
def test_bad_options_exit_2_before_writing(args: list[str], says: str, shop: Path, bundle_dir: Path,
                                           empty_home: Path, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path) for a in args]
    if "--as-of" not in args:
        args += ["--as-of", AS_OF]

    done = _score("--orders", str(shop), "--model", str(bundle_dir), *args)

    assert says in _one_paragraph_error(done)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_bad_tag_expression_in_a_real_process_is_one_paragraph_on_stderr(shop: Path, bundle_dir: Path,
                                                                          tmp_path: Path) -> None:
    config = tmp_path / "my.yaml"
    config.write_text("scoring:\n  scenarios:\n    lapsed: \"recency_days >>> 60\"\n")
    out = tmp_path / "tags.parquet"
    lifetag = Path(sys.executable).with_name("lifetag")

    done = subprocess.run(
        [str(lifetag), "score", "--orders", str(shop), "--as-of", AS_OF, "--out", str(out), "--model", str(bundle_dir),
         "--config", str(config)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "LIFETAG_HOME": str(tmp_path / "home")},
    )

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert done.stderr.strip().startswith("error: scoring.scenarios.lapsed: the expression 'recency_days >>> 60'")
    assert not out.exists()


# --- no output may be an input --------------------------------------------------------------------


def test_out_on_the_orders_or_inside_the_model_folder_is_refused_and_both_survive(
    shop: Path, bundle_dir: Path, empty_home: Path
) -> None:
    before = {p: p.read_bytes() for p in [shop, *sorted(bundle_dir.rglob("*"))] if p.is_file()}

    on_orders = _score("--orders", str(shop), "--model", str(bundle_dir), "--as-of", AS_OF, "--out", str(shop))
    in_model = _score("--orders", str(shop), "--model", str(bundle_dir), "--as-of", AS_OF,
                      "--out", str(bundle_dir / "tags.parquet"))

    assert _one_paragraph_error(on_orders).startswith(f"error: --out {shop} is the same file as --orders {shop}")
    assert _one_paragraph_error(in_model).startswith(
        f"error: --out {bundle_dir / 'tags.parquet'} is inside the --model folder {bundle_dir}")
    assert {p: p.read_bytes() for p in [shop, *sorted(bundle_dir.rglob("*"))] if p.is_file()} == before


def test_a_duckdb_output_into_the_input_database_is_refused(shop: Path, bundle_dir: Path, empty_home: Path,
                                                            tmp_path: Path) -> None:
    database = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(database))
    con.execute("CREATE TABLE orders AS SELECT * FROM read_parquet(?)", [str(shop)])
    con.close()

    done = _score("--orders", f"{database}:orders", "--model", str(bundle_dir), "--as-of", AS_OF,
                  "--out", f"{database}::customer_tags")

    assert _one_paragraph_error(done).startswith(
        f"error: --out {database}::customer_tags is the same file as --orders {database}:orders")
    con = duckdb.connect(str(database), read_only=True)
    assert [row[0] for row in con.execute("SHOW TABLES").fetchall()] == ["orders"]
    con.close()


@pytest.mark.slow
def test_summary_tables_piped_to_a_file_keep_every_row_on_one_line(shop: Path, bundle_dir: Path,
                                                                   tmp_path: Path) -> None:
    """CI logs and `> run.log`: rich must not wrap table cells at 80 columns when stdout is not a terminal."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | {"LIFETAG_HOME": str(tmp_path / "home")}
    log = tmp_path / "run.log"
    with log.open("w") as stdout:
        done = subprocess.run(
            [str(Path(sys.executable).with_name("lifetag")), "score", "--orders", str(shop), "--as-of", AS_OF,
             "--out", str(tmp_path / "tags.parquet"), "--model", str(bundle_dir)],
            stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr

    rows = [line.split("│")[1:-1] for line in log.read_text().splitlines() if line.startswith("│")]
    assert len(rows) >= 8
    # A wrapped cell shows as an extra row whose customers cell is blank.
    assert all(len(cells) == 6 and cells[0].strip() and cells[1].strip() for cells in rows), log.read_text()
    assert any(cells[4].strip() and "mean churn risk" not in cells[4] for cells in rows)
    assert "mean churn risk" in log.read_text()
