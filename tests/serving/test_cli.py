"""The `lifetag` command end to end, as a user runs it: real processes, real files, exit codes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

LIFETAG = [str(Path(sys.executable).with_name("lifetag"))]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*LIFETAG, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    done = run("generate", "--n-customers", "1500", "--out", str(out), "--seed", "3")
    assert done.returncode == 0, done.stderr
    return out


def test_generate_then_features_writes_parquet_with_text_ids(shop_dir, tmp_path):
    out = tmp_path / "features.parquet"
    done = run("features", "--orders", str(shop_dir / "orders.parquet"), "--as-of", "2024-07-01",
               "--out", str(out), "--summary")
    assert done.returncode == 0, done.stderr
    assert "read " in done.stdout and "quarantined 0" in done.stdout and "important_value" in done.stdout
    frame = pd.read_parquet(out)
    assert frame["customer_id"].dtype == object or str(frame["customer_id"].dtype).startswith("str")
    assert frame["customer_id"].str.len().eq(7).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rerun_gives_identical_output(shop_dir, tmp_path):
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for path in paths:
        assert run("features", "--orders", str(shop_dir / "orders.parquet"), "--as-of", "2024-07-01",
                   "--out", str(path)).returncode == 0
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_bad_input_exits_2_with_one_paragraph_and_no_traceback(tmp_path):
    bad = tmp_path / "orders.csv"
    bad.write_text("customer_id,order_ts,amount\na,2024-01-01,abc\n")
    done = run("features", "--orders", str(bad), "--as-of", "2024-07-01", "--out", str(tmp_path / "f.parquet"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "not numbers" in done.stderr and str(bad) in done.stderr.replace("\n", "")
    assert not (tmp_path / "f.parquet").exists()


def test_quarantine_option_reports_read_used_quarantined(tmp_path):
    bad = tmp_path / "orders.csv"
    bad.write_text("customer_id,order_ts,amount\na,2024-01-01,abc\nb,2024-01-02,5\n")
    done = run("features", "--orders", str(bad), "--as-of", "2024-07-01", "--out", str(tmp_path / "f.csv"),
               "--quarantine", str(tmp_path / "bad.csv"))
    assert done.returncode == 0, done.stderr
    assert "read 2 = used 1 + quarantined 1" in done.stdout
    assert pd.read_csv(tmp_path / "bad.csv")["reason"].tolist() == ["amount is not a number"]


def test_bad_as_of_and_bad_config_are_clear_errors(tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text("customer_id,order_ts,amount\na,2024-01-01,5\n")
    done = run("features", "--orders", str(orders), "--as-of", "01/07/2024", "--out", str(tmp_path / "f.csv"))
    assert done.returncode == 2 and "YYYY-MM-DD" in done.stderr
    config = tmp_path / "bad.yaml"
    config.write_text("features:\n  windows_days: [-3]\n")
    done = run("features", "--orders", str(orders), "--as-of", "2024-07-01", "--out", str(tmp_path / "f.csv"),
               "--config", str(config))
    assert done.returncode == 2 and "windows_days" in done.stderr and "Traceback" not in done.stderr


def test_the_tag_reference_in_the_docs_is_current(config) -> None:  # noqa: ANN001
    from pathlib import Path

    from serving.tags import tags_table_markdown

    docs = (Path(__file__).resolve().parents[2] / "docs" / "tags.md").read_text()
    assert tags_table_markdown(config) in docs, "regenerate the table in docs/tags.md"


EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def test_the_readme_invoice_lines_example_runs_as_documented(tmp_path):
    """README's worked example: computed columns over an Online Retail style export, as it comes."""
    args = ["features", "--orders", str(EXAMPLES / "online_retail.csv"), "--config", str(EXAMPLES / "online_retail.yaml"),
            "--as-of", "2010-03-01", "--out", str(tmp_path / "f.csv")]
    stopped = run(*args)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert "column 'Customer ID' has 2 rows with an empty customer id (rows 8, 9" in stopped.stderr.replace("\n", " ")
    done = run(*args, "--quarantine", str(tmp_path / "no_customer.csv"))
    assert done.returncode == 0, done.stderr
    assert "read 17 = used 15 + quarantined 2" in done.stdout
    assert pd.read_csv(tmp_path / "no_customer.csv")["reason"].tolist() == ["empty customer_id"] * 2
    frame = pd.read_csv(tmp_path / "f.csv", dtype={"customer_id": str}).set_index("customer_id")
    assert sorted(frame.index) == ["13078", "13085", "15362", "16321"]
    # Cancellation invoice C489449 (-35.40 - 9.90) nets against 16321's purchase (30.00 + 15.00).
    assert frame.loc["16321", "monetary_total"] == pytest.approx(-0.30)
    assert frame.loc["16321", "return_count"] == 1
    assert frame.loc["13085", "frequency"] == 4 and frame.loc["13085", "monetary_total"] == pytest.approx(362.10)


ORDERS_CSV = "customer_id,order_ts,amount\na,2022-01-03,5\nb,2022-02-01,abc\nb,2022-03-01,7\n"


@pytest.mark.parametrize("outputs, says", [
    (["--out", "{orders}"], "--out {orders} is the same file as --orders {orders}"),
    (["--out", "{tmp}/f.csv", "--quarantine", "{orders}"], "--quarantine {orders} is the same file as --orders {orders}"),
    (["--out", "{tmp}/kept.csv", "--quarantine", "{tmp}/kept.csv"], "--quarantine {tmp}/kept.csv and --out {tmp}/kept.csv are the same file"),
], ids=["out-is-orders", "quarantine-is-orders", "quarantine-is-out"])
def test_an_output_on_an_input_or_another_output_is_refused_and_every_file_survives(outputs, says, tmp_path):
    orders, kept = tmp_path / "orders.csv", tmp_path / "kept.csv"
    orders.write_text(ORDERS_CSV)
    kept.write_text("an earlier run's output\n")
    args = [a.format(orders=orders, tmp=tmp_path) for a in outputs]

    done = run("features", "--orders", str(orders), "--as-of", "2023-01-01", *args)

    assert done.returncode == 2 and "Traceback" not in done.stderr
    message = done.stderr.strip()
    assert message.startswith("error: " + says.format(orders=orders, tmp=tmp_path)) and "\n" not in message
    assert orders.read_text() == ORDERS_CSV and kept.read_text() == "an earlier run's output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.csv", "orders.csv"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_as_of_before_the_first_order_exits_2_saying_when_the_first_order_is(suffix, tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text(ORDERS_CSV.replace("abc", "6"))
    out = tmp_path / f"features{suffix}"

    done = run("features", "--orders", str(orders), "--as-of", "2019-01-01", "--out", str(out))

    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: {orders}: no orders before --as-of 2019-01-01: the first order is on "
                                   "2022-01-03; pick a later --as-of.")
    assert not out.exists()


def test_version_and_exit_codes_in_help():
    from importlib.metadata import version

    assert run("--version").stdout.strip() == f"lifetag {version('lifetag')}"
    for command in ([], ["features"], ["score"]):
        helped = " ".join(run(*command, "--help").stdout.split())
        assert "Exit codes: 0 done; 2 bad input or config" in helped and "1 a bug in lifetag" in helped, command


def test_piped_output_keeps_long_lines_whole(tmp_path):
    folder = tmp_path / ("a-folder-with-a-long-name-as-ci-runners-make-them-" * 2)
    folder.mkdir()
    orders = folder / "orders.csv"
    orders.write_text(ORDERS_CSV.replace("abc", "6"))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    with (tmp_path / "stdout.txt").open("w") as stdout:
        done = subprocess.run([*LIFETAG, "features", "--orders", str(orders), "--as-of", "2023-01-01",
                               "--out", str(folder / "features.csv")], stdout=stdout, stderr=subprocess.PIPE,
                              text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"-> {folder / 'features.csv'} in " in (tmp_path / "stdout.txt").read_text()


def test_a_failing_command_does_not_import_the_model_libraries(tmp_path):
    """Start-up: a bad input is answered without loading MLflow, LightGBM, scikit-learn or Optuna."""
    empty = tmp_path / "empty.csv"
    empty.write_text("customer_id,order_ts,amount\n")
    probe = ("import sys\nfrom serving.cli import main\n"
             f"sys.argv = ['lifetag', 'features', '--orders', {str(empty)!r}, '--as-of', '2024-01-01', "
             f"'--out', {str(tmp_path / 'f.csv')!r}]\n"
             "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
             "heavy = ('mlflow', 'lightgbm', 'sklearn', 'optuna', 'matplotlib')\n"
             "print(code, sorted(m for m in heavy if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.stdout.strip() == "2 []", done.stdout + done.stderr


def test_every_error_of_lifetag_is_one_kind_that_the_cli_answers_with_exit_2():
    """One base class: the CLI maps it to exit 2 (the service will map it to a 4xx), everything else is a bug."""
    from configs.errors import LifetagError
    from configs.schema import ConfigError
    from features.intake import IntakeError
    from features.output import OutputError
    from serving.bundle import BundleError
    from serving.scoring import ScoringError
    from training.pipeline import TrainingError

    for error in (ConfigError, IntakeError, OutputError, BundleError, ScoringError, TrainingError):
        assert issubclass(error, LifetagError), error

    from typer.testing import CliRunner

    from serving.cli import app, friendly_errors

    @app.command("_lifetag_error_probe", hidden=True)
    @friendly_errors
    def probe() -> None:
        raise TrainingError("the probe's one paragraph.")

    try:
        done = CliRunner().invoke(app, ["_lifetag_error_probe"])
    finally:
        app.registered_commands.pop()
    assert done.exit_code == 2 and "error: the probe's one paragraph." in done.output
