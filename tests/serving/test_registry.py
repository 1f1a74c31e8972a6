"""The MLflow registry: where the store lives, versions, the champion alias, loading bundles.

Real MLflow on a SQLite store in each test's own LIFETAG_HOME; nothing is mocked.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import matplotlib.pyplot as plt
import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient

from serving import registry
from support import use_embedded_store

REPO = Path(__file__).resolve().parents[2]


class Doubler(mlflow.pyfunc.PythonModel):
    """Stand-in for the lifetag bundle: doubles column ``x``."""

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame({"x2": model_input["x"] * 2})


# MLflow cloudpickles a PythonModel *by reference* to its class when the class's module is
# importable, and this module's import name depends on how pytest was started (rootdir, import
# mode), so a by-reference pickle would only load inside this very pytest process. Pickling the
# module's classes by value makes the logged test bundle load anywhere, as the fresh-process test
# below checks. The real bundle class lives in the installed lifetag package, so by reference is
# right for it.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXAMPLE = pd.DataFrame({"x": [1.0, 2.5]})


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LIFETAG_HOME in an empty temporary folder; MLflow creates its store there."""
    use_embedded_store(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def home(fresh_home: Path, empty_store: Path) -> Path:
    """LIFETAG_HOME holding an empty MLflow store (copied, to skip the migrations)."""
    shutil.copyfile(empty_store, fresh_home / "mlflow.db")
    return fresh_home


def _register(score: float | None = None) -> str:
    """One training: a run that registers a Doubler; returns the new version number."""
    with registry.start_run(run_name="test"):
        if score is not None:
            mlflow.log_metric("validation_score", score)
        version = registry.register_bundle(Doubler(), {}, None, EXAMPLE)
    return str(version.version)


def test_embedded_store_lives_under_lifetag_home_and_nothing_lands_in_the_working_directory(
    fresh_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fresh_home / "not yet created"
    monkeypatch.setenv("LIFETAG_HOME", str(state))
    elsewhere = fresh_home / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    uri = registry.configure()
    _register()

    assert uri == f"sqlite:///{(state / 'mlflow.db').as_posix()}"
    assert (state / "mlflow.db").is_file()
    assert any((state / "mlartifacts").rglob("MLmodel"))
    assert list(elsewhere.iterdir()) == []
    experiment = MlflowClient().get_experiment_by_name(registry.EXPERIMENT)
    assert experiment.artifact_location == (state / "mlartifacts").as_uri()


def test_a_relative_lifetag_home_becomes_an_absolute_uri(fresh_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(fresh_home)
    monkeypatch.setenv("LIFETAG_HOME", "state")

    assert registry.tracking_uri() == f"sqlite:///{(fresh_home / 'state' / 'mlflow.db').as_posix()}"


def test_mlflow_tracking_uri_overrides_the_embedded_store(
    home: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    team = home / "team"
    team.mkdir()
    shutil.copyfile(empty_store, team / "server.db")
    monkeypatch.chdir(home)
    registry.configure()  # first the embedded store, as a long-lived process would have it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(team / 'server.db').as_posix()}")

    assert registry.configure() == f"sqlite:///{(team / 'server.db').as_posix()}"
    with registry.start_run() as run:
        mlflow.log_metric("validation_score", 0.5)
        registry.log_figures({"empty": plt.figure()})

    assert mlflow.get_registry_uri() == registry.tracking_uri()
    assert MlflowClient().get_run(run.info.run_id).data.metrics == {"validation_score": 0.5}
    # Without a server, a SQLite store keeps its artifacts beside itself, not in ./mlruns.
    assert list((team / "mlartifacts").rglob("empty.png"))
    assert not (home / "mlartifacts").exists()
    assert not (home / "mlruns").exists()


def test_unsetting_mlflow_tracking_uri_returns_to_the_embedded_store(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(home / 'team.db').as_posix()}")
    registry.configure()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("LIFETAG_HOME", str(home / "other"))

    assert registry.configure() == f"sqlite:///{(home / 'other' / 'mlflow.db').as_posix()}"
    assert mlflow.get_registry_uri() == registry.tracking_uri()


def test_each_registration_is_a_new_version_and_the_first_becomes_champion(home: Path) -> None:
    assert registry.champion_version() is None

    first = _register()
    outcome = registry.decide_and_promote(first, 0.80, None, force=False)
    second = _register()

    assert (first, second) == ("1", "2")
    assert outcome == registry.Promotion(
        promoted=True,
        version="1",
        previous=None,
        reason="version 1 is now champion: there was no champion yet (validation score 0.8000)",
    )
    assert registry.champion_version().version == 1
    tags = MlflowClient().get_model_version(registry.MODEL_NAME, "1").tags
    assert tags == {"validation_score": "0.8", "promotion_reason": outcome.reason}


def test_a_worse_version_is_registered_but_the_champion_stays_unless_forced(home: Path) -> None:
    registry.decide_and_promote(_register(), 0.799, None, force=False)
    worse = _register()

    kept = registry.decide_and_promote(worse, 0.780, 0.799, force=False)

    assert not kept.promoted
    assert kept.previous == "1"
    assert kept.reason == (
        "version 2 registered but not promoted: validation score 0.780 < champion v1's 0.799; "
        "use --promote to force"
    )
    assert registry.champion_version().version == 1

    forced = registry.decide_and_promote(worse, 0.780, 0.799, force=True)

    assert forced.promoted
    assert forced.reason == (
        "version 2 is now champion (forced with --promote): validation score 0.780 < champion v1's 0.799"
    )
    assert registry.champion_version().version == 2


def test_a_version_below_the_baselines_or_chance_is_not_promoted_even_on_an_empty_registry(home: Path) -> None:
    losing = registry.decide_and_promote(_register(), 0.74, None, force=False, baseline_score=0.75, chance_score=0.5)
    chance = registry.decide_and_promote(_register(), -0.128, None, force=False, baseline_score=-0.2, chance_score=0.0)

    assert not losing.promoted and not chance.promoted and registry.champion_version() is None
    assert losing.reason == ("version 1 registered but not promoted: there is no champion yet, but its validation "
                             "score 0.7400 loses to the baselines' 0.7500; use --promote to force")
    assert chance.reason == ("version 2 registered but not promoted: there is no champion yet, but its validation "
                             "score -0.1280 is no better than chance (0.0000); use --promote to force")
    forced = registry.decide_and_promote("1", 0.74, None, force=True, baseline_score=0.75, chance_score=0.5)
    assert forced.promoted and registry.champion_version().version == 1


def test_a_better_or_equal_version_takes_over_the_champion(home: Path) -> None:
    registry.decide_and_promote(_register(), 0.799, None, force=False)
    better = _register()

    outcome = registry.decide_and_promote(better, 0.812, 0.799, force=False)

    assert outcome == registry.Promotion(
        promoted=True,
        version="2",
        previous="1",
        reason="version 2 is now champion: validation score 0.812 >= champion v1's 0.799",
    )
    assert registry.champion_version().version == 2


def test_the_promotion_reason_shows_enough_decimals_to_tell_scores_apart(home: Path) -> None:
    registry.decide_and_promote(_register(), 0.79912, None, force=False)
    close = _register()

    outcome = registry.decide_and_promote(close, 0.79905, 0.79912, force=False, tolerance=0.001)

    assert outcome.promoted
    assert outcome.reason == (
        "version 2 is now champion: validation score 0.79905 < champion v1's 0.79912 within tolerance 0.001"
    )


def test_load_bundle_of_the_champion_predicts(home: Path) -> None:
    registry.decide_and_promote(_register(), 0.8, None, force=False)

    bundle = registry.load_bundle()

    assert bundle.predict(pd.DataFrame({"x": [1.0, 4.0]}))["x2"].tolist() == [2.0, 8.0]


@pytest.mark.slow
def test_the_champion_loads_in_a_fresh_process_from_any_working_directory(home: Path) -> None:
    registry.decide_and_promote(_register(), 0.8, None, force=False)
    elsewhere = home / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import pandas as pd; from serving import registry; "
        "print(registry.load_bundle().predict(pd.DataFrame({'x': [3.0]}))['x2'].tolist())"
    )
    # Only LIFETAG_HOME tells the new process where the store is (MLflow exported the URI here).
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PYTHONPATH"] = str(REPO)

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[6.0]"
    assert list(elsewhere.iterdir()) == []


# Each process imports lifetag, says it is ready, waits for the others, then logs its first run.
RACE = """
import sys, time
from pathlib import Path
from serving import registry
import mlflow
ready = Path(sys.argv[1])
(ready / sys.argv[2]).touch()
deadline = time.monotonic() + 120
while len(list(ready.iterdir())) < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.001)
with registry.start_run(run_name="race " + sys.argv[2]):
    mlflow.log_metric("m", 1.0)
"""


@pytest.mark.slow
def test_first_runs_of_several_processes_on_a_fresh_home_all_succeed(fresh_home: Path, tmp_path: Path) -> None:
    # Without the store lock, MLflow's schema migration runs in each process at once and all but
    # one fail ("duplicate column name: step", or alembic finding another's version row).
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env.update({"PYTHONPATH": str(REPO), "LIFETAG_HOME": str(fresh_home)})
    runs = [subprocess.Popen([sys.executable, "-c", RACE, str(ready), str(i), "3"], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(3)]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]

    assert [code for code, _ in outcomes] == [0, 0, 0], [err[-400:] for _, err in outcomes]
    registry.configure()
    assert len(MlflowClient().search_runs([registry._experiment_id()])) == 3


def test_load_bundle_without_a_champion_says_how_to_get_one(home: Path) -> None:
    _register()

    with pytest.raises(registry.RegistryError) as raised:
        registry.load_bundle()

    assert str(raised.value) == (
        "no model at models:/lifetag@champion: no version of 'lifetag' has the alias 'champion' yet. "
        "Train one with `lifetag train`, or pass --model with a model URI."
    )


def test_load_bundle_of_an_unknown_model_or_version_names_it(home: Path) -> None:
    registry.configure()
    unknown_model = r"^no model at models:/nope@champion: there is no registered model 'nope' in sqlite:///"
    with pytest.raises(registry.RegistryError, match=unknown_model):
        registry.load_bundle("models:/nope@champion")

    _register()
    unknown_version = r"^no model at models:/lifetag/7: .*version=7.* Train one with `lifetag train`"
    with pytest.raises(registry.RegistryError, match=unknown_version):
        registry.load_bundle("models:/lifetag/7")


def test_logging_outside_a_run_is_refused_rather_than_starting_one_in_mlruns(home: Path) -> None:
    registry.configure()
    with pytest.raises(registry.RegistryError, match="inside `with registry.start_run"):
        registry.register_bundle(Doubler(), {}, None, EXAMPLE)


def test_log_figures_puts_pngs_in_the_runs_artifacts_and_closes_them(home: Path) -> None:
    figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])

    with registry.start_run() as run:
        registry.log_figures({"calibration": figure, "lift.png": plt.figure()})

    paths = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "plots")}
    assert paths == {"plots/calibration.png", "plots/lift.png"}
    png = Path(run.info.artifact_uri.removeprefix("file://")) / "plots" / "calibration.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(figure.number)


ORDERS = pd.DataFrame(
    {
        "customer_id": ["a", "a", "b", "c"],
        "order_ts": pd.to_datetime(
            ["2024-01-05", "2024-03-01", "2024-02-10", "2024-06-30"], utc=True
        ),
        "amount": [10.0, 20.0, 5.5, 7.0],
    }
)


def test_data_fingerprint_summarises_the_orders() -> None:
    fingerprint = registry.data_fingerprint(ORDERS)

    assert {k: v for k, v in fingerprint.items() if k != "content_sha256"} == {
        "rows": 4,
        "customers": 3,
        "first_order_ts": "2024-01-05T00:00:00+00:00",
        "last_order_ts": "2024-06-30T00:00:00+00:00",
    }
    assert len(fingerprint["content_sha256"]) == 64


def test_data_fingerprint_ignores_row_and_column_order() -> None:
    shuffled = ORDERS.sample(frac=1, random_state=3).reset_index(drop=True)[["amount", "order_ts", "customer_id"]]

    assert registry.data_fingerprint(shuffled) == registry.data_fingerprint(ORDERS)


def test_data_fingerprint_changes_when_a_value_or_a_duplicate_row_changes() -> None:
    changed = ORDERS.copy()
    changed.loc[2, "amount"] = 5.51
    duplicated = pd.concat([ORDERS, ORDERS.iloc[[0]]], ignore_index=True)

    hashes = {registry.data_fingerprint(f)["content_sha256"] for f in (ORDERS, changed, duplicated)}

    assert len(hashes) == 3
