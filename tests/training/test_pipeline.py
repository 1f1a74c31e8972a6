"""Training end to end: `fit_bundle` on a small generated shop, the bundle it builds, and `record_training`.

Real DuckDB, LightGBM, Optuna and MLflow (a SQLite store in each test's own LIFETAG_HOME); nothing
is mocked. Trainings are expensive (15-20 s each on a busy 2-core machine), so each distinct one
runs once per module and the tests share it read-only.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

import features
from configs.schema import Config
from features.synthetic import generate_orders, write_shop
from serving.bundle import Bundle
from serving import registry
from training.evaluate import classifier_metrics
from training.pipeline import TrainingError, TrainResult, fit_bundle
from training.tracking import record_training
from support import generated_shop, use_embedded_store

CUSTOMERS = 2_000
SEED = 5
AS_OF = pd.Timestamp("2025-01-01")  # the day after the generated shop's last order (it ends 2024-12-31)
TRIALS = 2  # the defaults plus one TPE-sampled trial, so tuning is part of what must reproduce
BASELINES = {
    "churn": {"model", "recency_heuristic", "bgnbd"},
    "repurchase": {"model", "recency_heuristic", "bgnbd"},
    "ltv": {"model", "run_rate", "bgnbd_gg"},
}
SCORE_METRIC = {"classifier": "roc_auc", "regressor": "gini_normalised"}


def _fit(orders: Path, config: Config, home: Path, **kwargs) -> TrainResult:
    # Module-scoped fixtures run before the autouse per-test LIFETAG_HOME, so set one for DuckDB's spill files.
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("LIFETAG_HOME", str(home))
        return fit_bundle(orders, config, **kwargs)


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED) / "orders.parquet"


@pytest.fixture(scope="module")
def orders(shop: Path) -> pd.DataFrame:
    return pd.read_parquet(shop)


@pytest.fixture(scope="module")
def features_at_as_of(orders: pd.DataFrame, config: Config) -> pd.DataFrame:
    return features.build(orders, AS_OF, config)


@pytest.fixture(scope="module")
def trained(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return _fit(shop, config, tmp_path_factory.mktemp("home"), trials=TRIALS)


@pytest.fixture(scope="module")
def retrained(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """A second, independent training on the same data with the same seed."""
    return _fit(shop, config, tmp_path_factory.mktemp("home"), trials=TRIALS)


@pytest.fixture(scope="module")
def trained_with_future(orders: pd.DataFrame, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """The same shop plus orders on and after as_of (repeat buyers, new customers, one exactly at as_of)."""
    repeats = orders[orders["order_ts"] >= "2024-01-01"].copy()
    repeats["order_ts"] += pd.Timedelta(days=366)  # 2024-01-01 -> 2025-01-01 = as_of
    repeats["order_id"] = "F" + repeats["order_id"]
    newcomers = generate_orders(300, seed=SEED + 1, start="2025-01-01", end="2025-06-30")
    newcomers["customer_id"] = "N" + newcomers["customer_id"]
    newcomers["order_id"] = "N" + newcomers["order_id"]
    at_as_of = orders.iloc[[0]].assign(order_ts=AS_OF, order_id="AT-AS-OF", amount=5_000.0)
    future = pd.concat([repeats, newcomers, at_as_of], ignore_index=True)
    assert future["order_ts"].min() == AS_OF and len(future) > 1_000
    path = tmp_path_factory.mktemp("shop_with_future") / "orders.parquet"
    pd.concat([orders, future], ignore_index=True).to_parquet(path)
    return _fit(path, config, tmp_path_factory.mktemp("home"), as_of=str(AS_OF.date()), trials=TRIALS)


@pytest.fixture
def mlflow_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path) -> Path:
    """LIFETAG_HOME holding an empty MLflow store of this test's own."""
    use_embedded_store(monkeypatch, tmp_path)
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    registry.configure()
    return tmp_path


# --- end to end ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_target_is_trained_by_lightgbm_on_a_shop_with_enough_history(trained: TrainResult) -> None:
    assert trained.as_of == AS_OF
    assert set(trained.results) == {"churn", "repurchase", "ltv"}
    for name, result in trained.results.items():
        assert result.fallback_reason == "", f"{name} fell back to BG/NBD: {result.fallback_reason}"
        assert result.model.kind in ("lgbm", "hurdle") and result.model.boosters
        assert result.tuning is not None and result.tuning.trials == TRIALS
    for name in ("churn", "repurchase"):  # the default ships raw scores (training.calibration: none)
        assert trained.results[name].model.calibrator is None
        assert trained.results[name].valid["model"].equals(trained.results[name].valid["model_uncalibrated"])


@pytest.mark.slow
def test_the_bundle_scores_every_customer_at_as_of_within_range(
    trained: TrainResult, orders: pd.DataFrame, features_at_as_of: pd.DataFrame
) -> None:
    scores = trained.bundle.predict(features_at_as_of)

    assert sorted(scores["customer_id"]) == sorted(orders["customer_id"].unique())
    for column in ("churn_risk", "repurchase_prob", "ltv"):
        assert np.isfinite(scores[column]).all(), column
        assert scores[column].std() > 0, f"{column} is constant"
    assert scores["churn_risk"].between(0, 1).all()
    assert scores["repurchase_prob"].between(0, 1).all()
    assert (scores["ltv"] >= 0).all()
    assert trained.bundle.as_of == "2025-01-01"


@pytest.mark.slow
def test_validation_reports_the_model_and_every_baseline_on_the_same_examples(trained: TrainResult) -> None:
    for name, result in trained.results.items():
        assert set(result.metrics) == BASELINES[name]
        key = SCORE_METRIC[result.target.kind]
        for model, metrics in result.metrics.items():
            assert np.isfinite(metrics[key]), (name, model)
            assert metrics["n"] == len(result.valid) > 0, (name, model)
        assert result.metrics["model"][key] > (0.7 if key == "roc_auc" else 0.4), f"{name}: no better than chance"
    expected = np.mean([r.metrics["model"][SCORE_METRIC[r.target.kind]] for r in trained.results.values()])
    assert trained.score == pytest.approx(expected)
    assert trained.bundle.metadata["validation_score"] == trained.score


@pytest.mark.slow
def test_validation_is_out_of_time_and_no_label_window_reaches_past_as_of(trained: TrainResult) -> None:
    for name, result in trained.results.items():
        horizon = pd.Timedelta(days=result.target.horizon_days)
        *training_cutoffs, validation_cutoff = result.cutoffs
        assert training_cutoffs, f"{name}: no training cut-off"
        assert set(result.valid["cutoff"]) == set(result.valid_features["cutoff"]) == {validation_cutoff}
        assert all(cutoff < validation_cutoff for cutoff in training_cutoffs), name
        assert all(cutoff + horizon <= AS_OF for cutoff in result.cutoffs), name
        # The latest cut-off uses every outcome the history has: its label window ends exactly at as_of.
        assert validation_cutoff + horizon == AS_OF, name


@pytest.mark.slow
def test_the_data_fingerprint_describes_the_history_trained_on(trained: TrainResult, orders: pd.DataFrame) -> None:
    fingerprint = trained.fingerprint

    assert fingerprint["rows"] == len(orders)
    assert fingerprint["customers"] == orders["customer_id"].nunique() == CUSTOMERS
    assert pd.Timestamp(fingerprint["first_order_ts"]) == orders["order_ts"].min()
    assert pd.Timestamp(fingerprint["last_order_ts"]) == orders["order_ts"].max()
    assert len(fingerprint["content_hash"]) == 16 and int(fingerprint["content_hash"], 16) > 0
    assert trained.bundle.metadata["fingerprint"] == fingerprint
    assert trained.intake.rows_read == len(orders) and trained.intake.rows_quarantined == 0


# --- reproducibility and round trips -------------------------------------------------------------------


@pytest.mark.slow
def test_the_same_data_and_seed_train_the_same_models(
    trained: TrainResult, retrained: TrainResult, features_at_as_of: pd.DataFrame
) -> None:
    for name in trained.results:
        assert retrained.results[name].tuning.params == trained.results[name].tuning.params, name
        assert retrained.results[name].metrics == trained.results[name].metrics, name
    pd.testing.assert_frame_equal(
        retrained.bundle.predict(features_at_as_of), trained.bundle.predict(features_at_as_of), check_exact=True
    )


@pytest.mark.slow
def test_a_saved_bundle_loads_and_predicts_identically(
    trained: TrainResult, features_at_as_of: pd.DataFrame, tmp_path: Path
) -> None:
    loaded = Bundle.load(trained.bundle.save(tmp_path / "bundle"))

    assert loaded.spec == trained.bundle.spec
    assert {n: (m.kind, m.offset, m.scale) for n, m in loaded.models.items()} == {
        n: (m.kind, m.offset, m.scale) for n, m in trained.bundle.models.items()
    }
    pd.testing.assert_frame_equal(
        loaded.predict(features_at_as_of), trained.bundle.predict(features_at_as_of), check_exact=True
    )


@pytest.mark.slow
def test_the_registered_champion_predicts_like_the_bundle_through_mlflow_pyfunc(
    trained: TrainResult, features_at_as_of: pd.DataFrame, mlflow_home: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    recorded = record_training(trained, promote=False, trials=TRIALS)
    logged = capfd.readouterr()
    signature = mlflow.models.get_model_info(f"models:/{registry.MODEL_NAME}/{recorded.version}").signature

    assert "signature" not in logged.err + logged.out and "input example" not in logged.err + logged.out
    assert signature.inputs.input_names() == [c for c in features_at_as_of.columns]
    assert signature.outputs.input_names() == ["customer_id", "churn_risk", "repurchase_prob", "ltv"]

    champion = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}@{registry.CHAMPION}")

    assert recorded.version == "1" and recorded.promotion.promoted
    assert champion.metadata.run_id == recorded.run_id
    pd.testing.assert_frame_equal(
        champion.predict(features_at_as_of), trained.bundle.predict(features_at_as_of), check_exact=True
    )


@pytest.mark.slow
def test_the_registered_model_keeps_the_bundles_re_buy_intervals_through_mlflow_pyfunc(
    trained: TrainResult, mlflow_home: Path
) -> None:
    recorded = record_training(trained, promote=False, trials=TRIALS)

    served = mlflow.pyfunc.load_model(f"models:/{registry.MODEL_NAME}/{recorded.version}").unwrap_python_model()

    assert trained.bundle.rebuy_days, "the generated shop has categories with enough re-buys"
    assert served.bundle.rebuy_days == trained.bundle.rebuy_days


# --- point in time -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_orders_on_or_after_as_of_do_not_change_the_trained_bundle(
    trained: TrainResult, trained_with_future: TrainResult, features_at_as_of: pd.DataFrame
) -> None:
    assert trained_with_future.as_of == AS_OF
    assert trained_with_future.fingerprint == trained.fingerprint
    for name, result in trained.results.items():
        assert trained_with_future.results[name].metrics == result.metrics, name
    pd.testing.assert_frame_equal(
        trained_with_future.bundle.predict(features_at_as_of), trained.bundle.predict(features_at_as_of),
        check_exact=True,
    )


@pytest.mark.slow
def test_orders_on_or_after_as_of_do_not_change_the_stored_re_buy_intervals(
    trained: TrainResult, trained_with_future: TrainResult
) -> None:
    assert trained.bundle.rebuy_days
    assert trained_with_future.bundle.rebuy_days == trained.bundle.rebuy_days


# --- too little history ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_short_history_falls_back_to_bgnbd_for_ltv_and_still_scores_everyone(
    config: Config, tmp_path: Path
) -> None:
    # Five months: the 30-day repurchase target has cut-offs to learn from; a 365-day LTV cannot.
    write_shop(tmp_path / "shop", n_customers=CUSTOMERS, seed=8, start="2024-01-01", end="2024-05-31")
    orders = pd.read_parquet(tmp_path / "shop" / "orders.parquet")

    result = fit_bundle(tmp_path / "shop" / "orders.parquet", config, trials=0)

    ltv = result.results["ltv"]
    assert ltv.model.kind == "bgnbd" and not ltv.model.boosters
    assert "365-day" in ltv.fallback_reason
    assert result.results["repurchase"].fallback_reason == ""
    assert result.results["repurchase"].model.kind in ("lgbm", "hurdle")
    at_as_of = features.build(orders, result.as_of, config)
    scores = result.bundle.predict(at_as_of)
    assert len(scores) == orders["customer_id"].nunique()
    assert scores[["churn_risk", "repurchase_prob", "ltv"]].notna().all().all()
    assert scores["churn_risk"].between(0, 1).all() and scores["repurchase_prob"].between(0, 1).all()
    bg_ltv = result.bundle.bg_columns(at_as_of)["bg_ltv_365d"].to_numpy()
    np.testing.assert_allclose(scores["ltv"].to_numpy(), np.clip(bg_ltv, 0, None))


def test_too_little_history_is_refused_with_the_minimum_it_needs(config: Config, tmp_path: Path) -> None:
    tiny = tmp_path / "orders.csv"
    tiny.write_text("customer_id,order_ts,amount\na,2024-01-01,10\na,2024-02-01,12\nb,2024-03-01,7\n")

    with pytest.raises(TrainingError) as raised:
        fit_bundle(tiny, config, trials=0)

    message = str(raised.value)
    assert "too little history" in message and "2 customers, 1 with a repeat order" in message
    assert "at least 20 customers and 5 repeat buyers" in message
    assert f"{config.training.min_history_days} days of history" in message
    assert f"longest horizon ({config.horizons.ltv_days} days)" in message


# --- promotion -------------------------------------------------------------------------------------------


def _trained_earlier(result: TrainResult) -> TrainResult:
    """The same models, recorded as trained at the earliest validation cut-off: every validation row of a
    training at the real as_of then lies after everything this one saw."""
    import copy
    import dataclasses

    first_cutoff = min(r.valid["cutoff"].min() for r in result.results.values() if r.valid is not None)
    bundle = copy.deepcopy(result.bundle)
    bundle.as_of = str(first_cutoff.date())
    return dataclasses.replace(result, bundle=bundle)


@pytest.mark.slow
def test_a_worse_version_loses_to_an_older_champion_on_rows_neither_saw_unless_forced(
    trained: TrainResult, mlflow_home: Path, degrade
) -> None:
    worse = degrade(trained)
    first = record_training(_trained_earlier(trained), promote=False, trials=TRIALS)
    kept = record_training(worse, promote=False, trials=TRIALS)
    forced = record_training(worse, promote=True, trials=TRIALS)
    overtaken = record_training(trained, promote=False, trials=TRIALS)

    assert (first.version, first.promotion.promoted, first.champion_score) == ("1", True, None)
    assert first.promotion.reason == f"version 1 is now champion: there was no champion yet (validation score {trained.score:.4f})"
    assert (kept.version, kept.promotion.promoted) == ("2", False)
    assert kept.promotion.reason == (f"version 2 registered but not promoted: its validation score {worse.score:.4f} "
                                     f"is no better than chance ({worse.score:.4f}); use --promote to force")
    assert (forced.version, forced.promotion.promoted, forced.promotion.previous) == ("3", True, "1")
    assert "forced with --promote" in forced.promotion.reason
    # The real models against the forced, degraded champion (same as_of): no row is unseen by both.
    assert (overtaken.version, overtaken.promotion.promoted) == ("4", False)
    assert "no validation example comes after champion v3's as_of" in overtaken.promotion.reason
    tags = MlflowClient().get_model_version(registry.MODEL_NAME, "2").tags
    assert tags["promotion_reason"] == kept.promotion.reason
    assert float(tags["validation_score"]) == worse.score


@pytest.mark.slow
def test_a_version_is_compared_with_an_older_champion_on_rows_neither_saw_with_one_score_per_model(
    trained: TrainResult, retrained: TrainResult, mlflow_home: Path
) -> None:
    record_training(_trained_earlier(trained), promote=False, trials=TRIALS)

    second = record_training(retrained, promote=False, trials=TRIALS)

    # Every validation row is after the champion's recorded as_of, so the new version's comparison
    # score is its validation score, the number the training table shows. (Which side wins is not the
    # point here: this champion's calibrators did see these rows, its as_of being moved for the test.)
    reason = second.promotion.reason
    assert reason.startswith("version 2 ")
    assert ": on rows neither model was trained on (churn 90d: " in reason
    # Three decimals, or more where three would show two different scores as equal.
    shown = re.search(r", score (\d\.\d{3,}) [<>]=? champion v1's (\d\.\d{3,})", reason)
    assert shown, reason
    assert float(shown[1]) == pytest.approx(retrained.score, abs=5e-4)
    assert float(shown[2]) == pytest.approx(second.champion_score, abs=5e-4)
    assert reason.split("; use")[0].endswith(f"(validation score {retrained.score:.4f})")


@pytest.mark.slow
def test_retraining_at_the_same_as_of_keeps_the_champion_there_being_no_row_neither_saw(
    trained: TrainResult, retrained: TrainResult, mlflow_home: Path
) -> None:
    record_training(trained, promote=False, trials=TRIALS)

    second = record_training(retrained, promote=False, trials=TRIALS)

    assert not second.promotion.promoted
    assert second.champion_score is None
    assert second.promotion.reason == (
        f"version 2 registered but not promoted: no validation example comes after champion v1's as_of "
        f"{trained.bundle.as_of} (it was trained on all of them), so the two cannot be compared on data neither has "
        "seen; use --promote to force"
    )


@pytest.mark.slow
def test_a_model_that_loses_to_the_baselines_is_not_promoted_even_on_an_empty_registry(
    trained: TrainResult, mlflow_home: Path
) -> None:
    import dataclasses

    from training.tracking import baseline_score

    best = baseline_score(trained.results)
    # The real bundle, with validation figures just under the best baseline of every target.
    keys = {"classifier": "roc_auc", "regressor": "gini_normalised"}
    below = {}
    for name, r in trained.results.items():
        key = keys[r.target.kind]
        baseline = max(r.metrics[b][key] for b in r.metrics if b != "model")
        below[name] = dataclasses.replace(r, metrics={**r.metrics, "model": {**r.metrics["model"], key: baseline - 0.02}})
    losing = dataclasses.replace(trained, results=below)

    recorded = record_training(losing, promote=False, trials=TRIALS)

    assert not recorded.promotion.promoted and registry.champion_version() is None
    assert recorded.promotion.reason == (
        f"version 1 registered but not promoted: there is no champion yet, but its validation score "
        f"{losing.score:.4f} loses to the baselines' {best:.4f}; use --promote to force"
    )
    forced = record_training(losing, promote=True, trials=TRIALS)
    assert forced.promotion.promoted and registry.champion_version().version == 2


def test_the_default_as_of_is_the_day_after_the_last_order_but_never_in_the_future() -> None:
    import duckdb

    from training.pipeline import default_training_as_of

    today = pd.Timestamp.now(tz="UTC").tz_localize(None).normalize()
    with duckdb.connect() as con:
        con.execute("CREATE TABLE past AS SELECT TIMESTAMP '2024-03-05 17:00' AS order_ts")
        assert default_training_as_of(con, "past") == pd.Timestamp("2024-03-06")
        # An order later today (intake allows a day of clock slack) does not move as_of to tomorrow.
        later_today = (today + pd.Timedelta(hours=23)).to_pydatetime()
        con.execute("CREATE TABLE later_today AS SELECT ? AS order_ts", [later_today])
        assert default_training_as_of(con, "later_today") == today


def test_a_typo_date_in_the_future_stops_training_before_it_sets_as_of(config: Config, tmp_path: Path) -> None:
    from features.intake import IntakeError

    path = tmp_path / "orders.csv"
    path.write_text("customer_id,order_id,order_ts,amount\na,1,2024-01-01,10\nb,2,2099-01-01,20\n")
    with pytest.raises(IntakeError, match=r"'order_ts' has 1 row that are in the future .*\(row 2: '2099-01-01'\)"):
        fit_bundle(path, config)



# --- out-of-time rounds (how much of the boosting from the BG/NBD offset is kept) --------------------


@pytest.mark.slow
def test_the_rounds_kept_out_of_time_are_reported_and_logged_per_classifier(
    trained: TrainResult, mlflow_home: Path
) -> None:
    recorded = record_training(trained, promote=False, trials=TRIALS)

    logged = MlflowClient().get_run(recorded.run_id).data.metrics
    for name in ("churn", "repurchase"):
        check = trained.results[name].rounds_check
        assert check["folds"] >= 1 and check["min_gap_days"] >= trained.results[name].target.horizon_days
        assert logged[f"{name}.rounds_check.rounds_kept"] == check["rounds_kept"] <= check["rounds_tuned"]
        assert check["loss_kept"] <= min(check.get("loss_offset", np.inf), check["loss_tuned"])


def _offset_examples(signal: float, seed: int = 3, per_cutoff: int = 3_000) -> pd.DataFrame:
    """Churn examples at four monthly cut-offs: BG/NBD's p(no order) is the truth's starting point, and
    `x` moves the true log-odds by `signal` (0: the offset is already the truth, `x` is noise)."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, cutoff in enumerate(pd.date_range("2024-01-01", periods=4, freq="30D")):
        p_bg = rng.uniform(0.2, 0.9, per_cutoff)
        x = rng.normal(size=per_cutoff)
        logit = np.log(p_bg / (1 - p_bg)) + signal * x
        label = (rng.uniform(size=per_cutoff) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        parts.append(pd.DataFrame({"customer_id": np.arange(per_cutoff) + k * per_cutoff, "cutoff": cutoff,
                                   "x": x, "noise": rng.normal(size=per_cutoff), "bg_p_none_90d": p_bg,
                                   "label": label}))
    return pd.concat(parts, ignore_index=True)


def _gap_check(examples: pd.DataFrame, config: Config, target: tuple = ("churn", 90, "classifier"),
               rounds: int = 150) -> tuple[int, dict[str, float]]:
    """_gap_rounds boosting from the BG/NBD offset on `x` and `noise`, the latest cut-off held out."""
    from serving.bundle import FeatureSpec
    from training.dataset import Target
    from training.models import DEFAULT_PARAMS
    from training.pipeline import _gap_rounds

    spec = FeatureSpec.fit(examples, ["x", "noise"], [])
    last = examples["cutoff"].max()
    train, valid = examples[examples["cutoff"] < last], examples[examples["cutoff"] == last]
    return _gap_rounds(Target(*target), "bgnbd", spec, train, valid, dict(DEFAULT_PARAMS), rounds, config)


def test_gap_folds_never_share_an_outcome_window_between_training_and_validation() -> None:
    from training.pipeline import _gap_folds

    examples = _offset_examples(0.0, per_cutoff=10)
    cutoffs = sorted(examples["cutoff"].unique())
    churn = _gap_folds(examples, 90)  # cut-offs 30 days apart: only the first is a horizon before the last
    assert [(sorted(t["cutoff"].unique()), v["cutoff"].iloc[0]) for t, v in churn] == [([cutoffs[0]], cutoffs[3])]
    repurchase = _gap_folds(examples, 30)
    assert [len(t["cutoff"].unique()) for t, _ in repurchase] == [1, 2, 3]


def test_boosting_that_cannot_beat_its_bgnbd_offset_out_of_time_keeps_the_offset(config: Config) -> None:
    kept, check = _gap_check(_offset_examples(signal=0.0), config)
    assert kept == 0
    assert check["rounds_tuned"] == 150 and check["loss_kept"] == check["loss_offset"] < check["loss_tuned"]


def test_boosting_keeps_the_rounds_that_beat_its_offset_out_of_time(config: Config) -> None:
    kept, check = _gap_check(_offset_examples(signal=1.0), config)
    assert 0 < kept <= 150
    assert check["loss_kept"] < check["loss_offset"]


def _ltv_examples(signal: float, seed: int = 5, per_cutoff: int = 3_000) -> pd.DataFrame:
    """LTV examples at four monthly cut-offs: BG/NBD + GG's value is the truth's mean when `signal` is 0;
    otherwise `x` moves the mean by exp(signal * x)."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, cutoff in enumerate(pd.date_range("2024-01-01", periods=4, freq="30D")):
        bg = rng.gamma(1.0, 100.0, per_cutoff)
        x = rng.normal(size=per_cutoff)
        mean = bg * np.exp(signal * x - signal ** 2 / 2)
        spend = np.where(rng.uniform(size=per_cutoff) < 0.5, rng.gamma(2.0, 2 * mean / 2.0 / 0.5 / 2), 0.0)
        parts.append(pd.DataFrame({"customer_id": np.arange(per_cutoff) + k * per_cutoff, "cutoff": cutoff,
                                   "x": x, "noise": rng.normal(size=per_cutoff), "bg_ltv_365d": bg,
                                   "label": spend}))
    return pd.concat(parts, ignore_index=True)


def _ltv_gap_check(examples: pd.DataFrame, config: Config) -> tuple[int, dict[str, float]]:
    return _gap_check(examples, config, ("ltv", 365, "regressor"), rounds=120)


def test_ltv_takes_the_longest_gap_the_cut_offs_offer_when_none_is_a_whole_horizon_apart() -> None:
    from training.pipeline import _gap_folds

    examples = _ltv_examples(0.0, per_cutoff=10)
    cutoffs = sorted(examples["cutoff"].unique())
    assert _gap_folds(examples, 365) == []
    longest = _gap_folds(examples, 365, longest_if_none=True)
    assert [(sorted(t["cutoff"].unique()), v["cutoff"].iloc[0]) for t, v in longest] == [([cutoffs[0]], cutoffs[3])]


def test_ltv_boosting_from_bgnbd_keeps_the_offset_when_it_is_the_truth_and_rounds_when_they_help(
        config: Config) -> None:
    kept, check = _ltv_gap_check(_ltv_examples(signal=0.0), config)
    assert kept <= 5 and check["loss_kept"] <= check["loss_tuned"]
    kept, check = _ltv_gap_check(_ltv_examples(signal=0.8), config)
    assert kept > 5 and check["loss_kept"] < check["loss_offset"]


def test_the_tweedie_loss_is_the_one_lightgbm_reports() -> None:
    import lightgbm as lgb

    from training.pipeline import tweedie_loss

    rng = np.random.default_rng(0)
    X, start = rng.normal(size=(2_000, 2)), np.full(2_000, np.log(50.0))
    y = rng.gamma(1.0, 50.0 * np.exp(X[:, 0])) * (rng.uniform(size=2_000) < 0.5)
    record: dict = {}
    train = lgb.Dataset(X, y, init_score=start)
    booster = lgb.train({"objective": "tweedie", "tweedie_variance_power": 1.3, "verbosity": -1}, train, 20,
                        valid_sets=[lgb.Dataset(X, y, init_score=start, reference=train)],
                        callbacks=[lgb.record_evaluation(record)])
    predicted = np.exp(start + booster.predict(X, raw_score=True))
    assert tweedie_loss(y, predicted, 1.3) == pytest.approx(record["valid_0"]["tweedie"][-1], rel=1e-9)


def test_the_level_free_loss_ignores_the_level_and_is_read_after_every_round() -> None:
    import pandas as pd

    from training.models import train_booster
    from training.pipeline import LEVEL_FREE_METRIC, _level_free_tweedie, level_free_tweedie_loss, tweedie_loss

    rng = np.random.default_rng(0)
    X, start = rng.normal(size=(2_000, 2)), np.full(2_000, np.log(50.0))
    y = rng.gamma(1.0, 50.0 * np.exp(X[:, 0])) * (rng.uniform(size=2_000) < 0.5)
    shares = np.exp(X[:, 0])
    # The same shares at any level: the same loss, that of the shares scaled to the actual total.
    losses = [level_free_tweedie_loss(y, level * shares, 1.3) for level in (0.1, 1.0, 7.0)]
    assert losses == pytest.approx([tweedie_loss(y, shares * y.sum() / shares.sum(), 1.3)] * 3, rel=1e-12)
    assert level_free_tweedie_loss(y, np.zeros_like(y), 1.3) == np.inf
    # As an eval function, LightGBM hands it the predictions on the value scale, offset included (its labels
    # are float32, hence the tolerance).
    record: dict = {}
    frame = pd.DataFrame(X, columns=["a", "b"])
    booster = train_booster({"tweedie_variance_power": 1.3}, "tweedie", 0, frame, y, 20, valid=(frame, y),
                            init_score=(start, start), threads=1, record=record, feval=_level_free_tweedie(1.3))
    assert len(record["valid_0"][LEVEL_FREE_METRIC]) == 20
    for rounds in (1, 20):
        predicted = np.exp(start + booster.predict(frame, raw_score=True, num_iteration=rounds))
        assert record["valid_0"][LEVEL_FREE_METRIC][rounds - 1] == pytest.approx(
            level_free_tweedie_loss(y, predicted, 1.3), rel=1e-6)


def test_a_free_ltv_candidate_replaces_the_anchored_one_only_by_a_clear_margin() -> None:
    from training.pipeline import _choose_over_gap

    rng = np.random.default_rng(3)
    actual = rng.gamma(0.5, 100.0, 4_000)
    gap = {"tweedie": (actual, actual + rng.normal(0, 58, actual.size)),  # Gini 0.002 higher, by chance
           "tweedie_bgnbd_offset": (actual, actual + rng.normal(0, 60, actual.size)),
           "hurdle": (actual, rng.uniform(size=actual.size))}              # ranks nothing
    scores = {name: {"gini_normalised": 0.5} for name in gap}
    assert _choose_over_gap(scores, gap, {"tweedie_bgnbd_offset"}, seed=0) == "tweedie_bgnbd_offset"
    assert scores["tweedie"]["gap_gini_normalised"] > scores["tweedie_bgnbd_offset"]["gap_gini_normalised"]
    assert scores["tweedie"]["gap_gini_margin_low"] < 0 < scores["tweedie"]["gap_gini_margin_high"]
    gap["tweedie"] = (actual, actual)  # now clearly better
    assert _choose_over_gap(scores, gap, {"tweedie_bgnbd_offset"}, seed=0) == "tweedie"


def test_a_classifier_without_the_offset_replaces_the_anchored_one_only_by_a_clear_log_loss_margin() -> None:
    from training.models import FittedModel
    from training.pipeline import _anchored_unless_clearly_beaten

    rng = np.random.default_rng(4)
    truth = rng.uniform(0.05, 0.95, 20_000)
    outcome = (rng.uniform(size=truth.size) < truth).astype(float)

    def fitted(noise: float) -> FittedModel:
        logit = np.log(truth / (1 - truth)) + rng.normal(0, noise, truth.size)
        return FittedModel(None, 1 / (1 + np.exp(-logit)), pd.Series(dtype=float))  # type: ignore[arg-type]

    candidates = {"binary": fitted(0.30), "binary_bgnbd_offset": fitted(0.31)}
    scores = {name: classifier_metrics(outcome, c.valid_raw) for name, c in candidates.items()}
    best = min(scores, key=lambda k: scores[k]["log_loss"])
    assert best == "binary"  # lower log loss by a hair
    assert _anchored_unless_clearly_beaten(best, {"binary_bgnbd_offset"}, candidates, scores, outcome, 0) == \
        "binary_bgnbd_offset"
    assert scores["binary"]["log_loss_margin_low"] < 0 < scores["binary"]["log_loss_margin_high"]
    candidates["binary"] = fitted(0.0)  # the truth itself: clearly better
    scores["binary"] = classifier_metrics(outcome, candidates["binary"].valid_raw)
    assert _anchored_unless_clearly_beaten("binary", {"binary_bgnbd_offset"}, candidates, scores, outcome, 0) == "binary"
    assert scores["binary"]["log_loss_margin_low"] > 0


def test_the_candidates_level_is_the_geometric_mean_of_their_totals_and_never_uses_outcomes() -> None:
    from training.dataset import Target
    from training.pipeline import TargetResult, _level_scale
    from serving.bundle import TargetModel

    class Fixed:  # a fitted candidate that predicts a fixed total
        def __init__(self, each: float) -> None:
            self.each = each

        def raw_predict(self, matrix: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
            return np.full(len(features), self.each)

    target = Target("ltv", 365, "regressor")
    features = pd.DataFrame({"bg_ltv_365d": np.full(4, 100.0), "label": [0.0, 1e6, 0.0, 0.0]})
    result = TargetResult(target, TargetModel("ltv", 365, "lgbm"), [], level="candidates",
                          level_models=[Fixed(10.0), Fixed(40.0)])
    predicted = np.full(4, 5.0)
    assert _level_scale(result, predicted, features, features) == pytest.approx(20.0 / 5.0)  # sqrt(10 x 40) = 20
    result.level = "model"
    assert _level_scale(result, predicted, features, features) == 1.0
    result.level = "bgnbd"
    assert _level_scale(result, predicted, features, features) == pytest.approx(100.0 / 5.0)


@pytest.mark.parametrize("boost", [1.0, 3.0, 5.0], ids=["small miss: none", "applied", "bounded"])
def test_last_year_level_is_bgnbds_miss_over_the_same_window_a_year_back(small_shop, config, boost) -> None:
    from features.behaviour import orders_view
    from features.engine import connect
    from serving.bundle import TargetModel
    from training.dataset import CutoffStore, Target
    from training.pipeline import LAST_YEAR_LEVEL_BOUND, TargetResult, _last_year_level

    as_of, first_order = pd.Timestamp("2024-07-01"), pd.Timestamp("2022-01-01")
    on = config.model_copy(deep=True)
    on.horizons.ltv_days, on.training.ltv_last_year_level = 180, True
    target = Target("ltv", 180, "regressor")
    # Spend in last year's window multiplied by `boost`: BG/NBD fitted before it cannot know (miss ~0.95 x boost).
    shop = small_shop[small_shop["order_ts"] < as_of].copy()
    window = shop["order_ts"].between(as_of - pd.Timedelta(days=365), as_of - pd.Timedelta(days=185), inclusive="left")
    shop.loc[window, "amount"] *= boost
    con = connect(on.engine)
    try:
        orders_view(con, shop)
        store = CutoffStore(con, "orders", on)
        last_year = store.examples(target, [as_of - pd.Timedelta(days=365)])
        miss = last_year["label"].sum() / last_year["bg_ltv_180d"].sum()
        bgnbd = TargetResult(target, TargetModel("ltv", 180, "bgnbd"), [])
        _last_year_level(bgnbd, store, as_of, first_order, on)
        assert bgnbd.level_check["last_year_bgnbd_ratio"] == pytest.approx(miss)
        expected = float(np.clip(miss, 1 / LAST_YEAR_LEVEL_BOUND, LAST_YEAR_LEVEL_BOUND)) \
            if abs(np.log(miss)) >= np.log(1.5) else 1.0
        assert bgnbd.level_factor == pytest.approx(expected)
        assert (bgnbd.level_factor == 1.0) == (boost == 1.0) and bgnbd.level_factor <= LAST_YEAR_LEVEL_BOUND
        # A learned level of its own, a year-long horizon, a history too short, or the switch off: untouched.
        learned = TargetResult(target, TargetModel("ltv", 180, "lgbm"), [], level="candidates")
        _last_year_level(learned, store, as_of, first_order, on)
        off = config.model_copy(deep=True)
        off.horizons.ltv_days = 180
        for result, cfg, first in [(learned, on, first_order),
                                   (TargetResult(target, TargetModel("ltv", 180, "bgnbd"), []), off, first_order),
                                   (TargetResult(target, TargetModel("ltv", 180, "bgnbd"), []), on,
                                    pd.Timestamp("2023-06-01"))]:
            _last_year_level(result, store, as_of, first, cfg)
            assert result.level_factor == 1.0 and "last_year_factor" not in result.level_check
    finally:
        con.close()
