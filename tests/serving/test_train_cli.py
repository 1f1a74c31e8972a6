"""`lifetag train` as a user runs it (in process, through typer's CliRunner): output, exit codes, the MLflow store.

Real training, DuckDB and MLflow (a SQLite store in a temporary LIFETAG_HOME). The command trains
once per module; the promotion test replays that training's result through the command instead
of training three more times.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import Result
from mlflow import MlflowClient
from typer.testing import CliRunner

from features.synthetic import write_shop
from serving.cli import app
from serving import registry
from training import pipeline
from training.pipeline import TrainResult
from support import use_embedded_store

CUSTOMERS = 2_000
RUN_LINE = re.compile(r"^MLflow run ([0-9a-f]{32}), model lifetag version (\d+)$", re.MULTILINE)
PLOTS = {
    f"plots/{name}.png"
    for name in (
        "churn_calibration", "churn_cumulative_gain", "churn_feature_importance",
        "repurchase_calibration", "repurchase_cumulative_gain", "repurchase_feature_importance",
        "ltv_by_decile", "ltv_feature_importance",
    )
}


@dataclass
class Trained:
    """One `lifetag train` invocation: what it printed, what it trained, where MLflow keeps it."""

    done: Result
    result: TrainResult
    home: Path
    orders: Path


def _train(*args: str) -> Result:
    return CliRunner().invoke(app, ["train", *args])


def _table_rows(out: str) -> set[tuple[str, str]]:
    """(target, model) of each row of the printed validation table."""
    rows = (line.strip("│ ").split("│") for line in out.splitlines() if line.startswith("│"))
    return {(row[0].strip(), row[1].strip()) for row in rows if len(row) > 2}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shop")
    write_shop(folder, n_customers=CUSTOMERS, seed=3)
    return folder / "orders.parquet"


@pytest.fixture(scope="module")
def trained(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """`lifetag train --orders shop --trials 0` into an empty LIFETAG_HOME; keeps the TrainResult it made."""
    home = tmp_path_factory.mktemp("home")
    made: list[TrainResult] = []
    real_fit = pipeline.fit_bundle

    def keep_result(*args, **kwargs) -> TrainResult:
        made.append(real_fit(*args, **kwargs))
        return made[-1]

    with pytest.MonkeyPatch.context() as monkeypatch:
        use_embedded_store(monkeypatch, home)
        monkeypatch.setattr(pipeline, "fit_bundle", keep_result)
        done = _train("--orders", str(shop), "--trials", "0")
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    return Trained(done, made[0], home, shop)


@pytest.fixture
def store(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client on the MLflow store the module's `lifetag train` wrote."""
    use_embedded_store(monkeypatch, trained.home)
    registry.configure()
    return MlflowClient()


@pytest.mark.slow
def test_train_prints_the_validation_table_with_every_baseline_and_where_the_model_went(trained: Trained) -> None:
    out = trained.done.stdout
    rows = len(pd.read_parquet(trained.orders))

    # Between the two: what intake counted (e.g. the generated shop's repeated lines).
    assert f"Orders: read {rows:,} = used {rows:,} + quarantined 0" in out
    assert "; trained at as_of 2025-01-01 on 2,000 customers" in out
    assert f"Validation (out of time) - score {trained.result.score:.4f}" in out
    table = _table_rows(out)
    for target in ("churn 90d", "repurchase 30d"):
        assert {(target, "recency_heuristic"), (target, "bgnbd")} <= table, out
    assert {("ltv 365d", "run_rate"), ("ltv 365d", "bgnbd_gg")} <= table, out
    assert {target for target, model in table if model.startswith("lifetag (")} == {
        "churn 90d", "repurchase 30d", "ltv 365d"}
    assert "fallback" not in out
    for name in ("churn", "repurchase"):
        check = trained.result.results[name].rounds_check
        kept, tuned = int(check["rounds_kept"]), int(check["rounds_tuned"])
        said = (f"{name}: {kept} of {tuned} boosting rounds kept (" if kept
                else f"{name}: no boosting round beat the BG/NBD offset out of time (")
        assert said in out, out
    assert RUN_LINE.search(out).group(2) == "1"
    assert out.rstrip().endswith("version 1 is now champion: there was no champion yet "
                                 f"(validation score {trained.result.score:.4f})")


@pytest.mark.slow
def test_train_records_one_run_with_the_data_fingerprint_metrics_plots_and_the_champion(
    trained: Trained, store: MlflowClient
) -> None:
    orders = pd.read_parquet(trained.orders)
    experiment = store.get_experiment_by_name(registry.EXPERIMENT)

    runs = store.search_runs([experiment.experiment_id])

    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == RUN_LINE.search(trained.done.stdout).group(1)
    params = run.data.params
    assert params["data.rows"] == str(len(orders))
    assert params["data.customers"] == str(orders["customer_id"].nunique()) == str(CUSTOMERS)
    assert re.fullmatch(r"[0-9a-f]{16}", params["data.content_hash"])
    assert params["data.content_hash"] == trained.result.fingerprint["content_hash"]
    assert params["as_of"] == "2025-01-01" and params["trials"] == "0"
    assert {params[f"{name}.model"].split("+")[0] for name in ("churn", "repurchase", "ltv")} <= {"lgbm", "hurdle"}
    metrics = run.data.metrics
    assert metrics["validation_score"] == pytest.approx(trained.result.score)
    for name, models in {"churn": ("model", "recency_heuristic", "bgnbd"),
                         "repurchase": ("model", "recency_heuristic", "bgnbd"),
                         "ltv": ("model", "run_rate", "bgnbd_gg")}.items():
        key = "gini_normalised" if name == "ltv" else "roc_auc"
        for model in models:
            expected = trained.result.results[name].metrics[model][key]
            assert metrics[f"{name}.{model}.{key}"] == pytest.approx(expected), (name, model)
    plots = {a.path for a in store.list_artifacts(run.info.run_id, "plots")}
    assert plots == PLOTS
    local = Path(run.info.artifact_uri.removeprefix("file://"))
    assert all((local / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for plot in PLOTS)
    assert {"config.yaml", "data_fingerprint.json"} <= {a.path for a in store.list_artifacts(run.info.run_id)}
    champion = store.get_model_version_by_alias(registry.MODEL_NAME, registry.CHAMPION)
    assert (str(champion.version), champion.run_id) == ("1", run.info.run_id)
    assert run.data.tags["promoted"] == "True"


@pytest.mark.slow
def test_train_says_when_a_worse_model_is_registered_but_not_promoted_and_when_promote_forces_it(
    trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, degrade
) -> None:
    use_embedded_store(monkeypatch, tmp_path)
    worse = degrade(trained.result)
    replay = [trained.result, worse, worse]
    monkeypatch.setattr(pipeline, "fit_bundle", lambda *args, **kwargs: replay.pop(0))
    orders = ("--orders", str(trained.orders), "--trials", "0")

    first, kept, forced = _train(*orders), _train(*orders), _train(*orders, "--promote")

    assert [done.exit_code for done in (first, kept, forced)] == [0, 0, 0]
    assert "version 1 is now champion: there was no champion yet" in first.stdout
    assert re.search(r"^version 2 registered but not promoted: its validation score 0\.3333 is no better than "
                     r"chance \(0\.3333\); use --promote to force$", kept.stdout, re.MULTILINE), kept.stdout
    assert re.search(r"^version 3 is now champion \(forced with --promote\): its validation score 0\.3333 is no "
                     r"better than chance \(0\.3333\)$", forced.stdout, re.MULTILINE), forced.stdout
    assert registry.champion_version().version == 3


def test_too_little_history_exits_2_with_one_paragraph_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_embedded_store(monkeypatch, tmp_path)
    tiny = tmp_path / "orders.csv"
    tiny.write_text("customer_id,order_ts,amount\na,2024-01-01,10\na,2024-02-01,12\nb,2024-03-01,7\n")

    done = _train("--orders", str(tiny), "--trials", "0")

    assert done.exit_code == 2, f"exit code {done.exit_code}: {done.exception!r}"
    message = done.stderr.strip()
    assert message.startswith("error: too little history before 2024-03-02") and "\n\n" not in message
    assert "at least 20 customers and 5 repeat buyers" in message
    assert "Traceback" not in done.output
    assert not list(tmp_path.glob("mlflow.db"))


@pytest.mark.slow
def test_train_prints_plain_progress_lines_when_stderr_is_not_a_terminal(trained: Trained) -> None:
    """CI and `2> train.log`: rich's live bar shows nothing there, so each stage is a line with the elapsed time."""
    lines = [line for line in trained.done.stderr.splitlines() if line.startswith("[")]
    # Stages that end within the first 2 s print nothing (which ones depends on the machine's speed),
    # but every line has the plain form and the last stage, after training, always shows its end.
    assert lines and all(re.fullmatch(r"\[\d+ s\] [^:]+: \d+/\d+", line) for line in lines), lines
    assert re.fullmatch(r"\[\d+ s\] Logging to MLflow and registering: 1/1", lines[-1]), lines


def test_quarantine_on_the_orders_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_embedded_store(monkeypatch, tmp_path)
    orders = tmp_path / "orders.csv"
    text = "customer_id,order_ts,amount\na,2024-01-01,10\na,2024-02-01,abc\n"
    orders.write_text(text)

    done = _train("--orders", str(orders), "--quarantine", str(orders), "--trials", "0")

    assert done.exit_code == 2, f"exit code {done.exit_code}: {done.exception!r}"
    assert done.stderr.strip() == (f"error: --quarantine {orders} is the same file as --orders {orders}: writing it "
                                   "would destroy the input. Give --quarantine another file name.")
    assert orders.read_text() == text and not list(tmp_path.glob("mlflow.db"))


def test_as_of_before_the_first_order_exits_2_saying_when_the_first_order_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_embedded_store(monkeypatch, tmp_path)
    orders = tmp_path / "orders.csv"
    orders.write_text("customer_id,order_ts,amount\na,2024-01-01,10\na,2024-02-01,12\nb,2024-03-01,7\n")

    done = _train("--orders", str(orders), "--as-of", "2023-06-01", "--trials", "0")

    assert done.exit_code == 2, f"exit code {done.exit_code}: {done.exception!r}"
    assert done.stderr.strip() == (f"error: {orders}: no orders before --as-of 2023-06-01: the first order is on "
                                   "2024-01-01; pick a later --as-of.")
