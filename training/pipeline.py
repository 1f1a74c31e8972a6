"""`lifetag train`: rolling cut-offs -> tuned, calibrated LightGBM per target -> validation against
baselines -> one MLflow run and one registered bundle, promoted to champion when no worse."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from configs.errors import LifetagError
from configs.schema import Config
from features.behaviour import as_timestamp
from features.clusters import ClusterError, fit_clusters
from features.engine import connect
from features.intake import Intake, IntakeReport
from features.segments import RfmCutPoints
from serving.bundle import Bundle, Calibrator, FeatureSpec, TargetModel
from training.baselines import RecencyBaseline
from training.dataset import CutoffStore, Target, cross_fitted, last_year_level_cutoff, plan_cutoffs, targets
from training.evaluate import (classifier_metrics, gini_difference_interval, log_loss, log_loss_difference_interval,
                               ltv_metrics)
from training.first_purchase import FirstPurchaseResult, fit_first_purchase
from training.history import History, embedded_history, span_of
from training.models import (DEFAULT_PARAMS, FittedModel, bag_fitted_model, fit_target_model, model_features,
                             train_booster)
from training.tuning import TuningResult, subsample_customers, time_folds, tune

__all__ = ["TargetResult", "TrainingError", "TrainResult", "default_training_as_of", "fit_bundle", "validation_score"]


class TrainingError(LifetagError, ValueError):
    """The history cannot support even the fallback models; the message states the minimum."""


@dataclass
class TargetResult:
    """What training did for one target: the model, its validation predictions and metrics."""

    target: Target
    model: TargetModel
    cutoffs: list[pd.Timestamp]
    valid: pd.DataFrame | None = None  # validation examples, with prediction columns per model/baseline
    valid_features: pd.DataFrame | None = None  # the validation examples' full features (champion comparison)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model/baseline -> metrics
    tuning: TuningResult | None = None
    importance: pd.Series | None = None
    candidates: dict[str, dict[str, float]] = field(default_factory=dict)  # LTV: tweedie vs hurdle
    fallback_reason: str = ""
    level: str = ""  # LTV: whose total at as_of the predictions take (_level_scale): "model" its own,
    # "bgnbd" BG/NBD's, "offset" the BG/NBD-offset candidate's (level_model), or a blend "model+offset"
    level_model: TargetModel | None = None
    level_models: list[TargetModel] = field(default_factory=list)  # LTV level "candidates": every candidate
    level_check: dict[str, float] = field(default_factory=dict)  # LTV: the long-gap totals behind `level`
    # LTV: last year's miss of BG/NBD + Gamma-Gamma over the same calendar window, applied on top of the
    # level (training.ltv_last_year_level, _last_year_level); 1.0 when off or not applicable.
    level_factor: float = 1.0
    chosen: str = ""  # the winning candidate, e.g. "binary_bgnbd_offset" or "hurdle/default_params"
    rounds_check: dict[str, float] = field(default_factory=dict)  # rounds kept out of time (_gap_rounds)
    explainer_r2: float | None = None  # churn: how much of the model's log-odds the reasons' additive model explains


@dataclass
class TrainResult:
    """A fitted bundle with everything needed to log, compare and report it."""

    bundle: Bundle
    results: dict[str, TargetResult]
    as_of: pd.Timestamp
    intake: IntakeReport
    fingerprint: dict[str, Any]
    spec: FeatureSpec
    customers: Intake | None = None  # both sources' reports when a customers table was given
    first_purchase: FirstPurchaseResult | None = None
    unmatched_customers: int = 0  # buyers at as_of without a row in the customers table

    @property
    def score(self) -> float:
        """The single validation score used to decide promotion."""
        return validation_score(self.results)


Progress = Callable[[str, int], Callable[[], None]]
# (con, orders, config, customers, quarantine, as_of or None) -> the history's facts and a store of its
# training set, both built by another engine (training.spark_dataset.spark_training_set).
StoreFactory = Callable[[Any, Any, Config, Any, Any, "pd.Timestamp | None"], "tuple[History, CutoffStore]"]


def _no_progress(description: str, total: int) -> Callable[[], None]:
    return lambda: None


def validation_score(results: dict[str, TargetResult]) -> float:
    """Mean of churn ROC AUC, repurchase ROC AUC and LTV normalised Gini of the models on validation."""
    keys = {"churn": "roc_auc", "repurchase": "roc_auc", "ltv": "gini_normalised"}
    values = [r.metrics.get("model", {}).get(keys[name], np.nan) for name, r in results.items()]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def fit_bundle(
    orders: str | os.PathLike[str], config: Config, as_of: str | pd.Timestamp | None = None,
    trials: int | None = None, quarantine: str | os.PathLike[str] | None = None, progress: Progress = _no_progress,
    customers: str | os.PathLike[str] | None = None, training_set: StoreFactory | None = None,
) -> TrainResult:
    """Read the orders (and customers table), build rolling training sets and fit, tune, calibrate and
    validate all three targets, and the first-purchase model when sign-ups allow it.

    `training_set(con, orders, config, customers, quarantine, as_of)`: intake, the history's shop-wide facts
    (training.history) and a CutoffStore of features and labels, all built by another engine
    (training.spark_dataset); default: this connection's DuckDB reads the sources and builds them.
    """
    con = connect(config.engine)
    try:
        cut = as_timestamp(as_of) if as_of is not None else None
        if training_set is None:
            history = embedded_history(con, orders, config, customers, quarantine, cut)
            store = CutoffStore(con, "_history", config, "customers" if history.intake.customers is not None else None)
        else:
            history, store = training_set(con, orders, config, customers, quarantine, cut)
        sources, as_of_ts, first_order = history.intake, history.as_of, history.first_order
        intake, fingerprint = sources.orders, history.fingerprint
        table = "customers" if sources.customers is not None else None
        plans = {t.name: plan_cutoffs(as_of_ts, t.horizon_days, first_order, config, t.name) for t in targets(config)}
        now = store.features(as_of_ts) if fingerprint["rows"] else pd.DataFrame()
        _check_minimum_history(now, as_of_ts, first_order, config)
        advance = progress("Building features at cut-offs", len({c for cs in plans.values() for c in cs}))
        for cutoff in sorted({c for cs in plans.values() for c in cs}):
            store.features(cutoff)
            advance()
        spec = _feature_spec(store, plans, now, config)
        trials = config.training.trials if trials is None else trials
        prepared = {t.name: _examples_or_fallback(t, plans[t.name], store, config) for t in targets(config)}
        results = _fit_targets(prepared, plans, spec, config, trials, progress)
        if "ltv" in results and config.training.ltv_last_year_level:
            _last_year_level(results["ltv"], store, as_of_ts, first_order, config)
        has_signup = table is not None and "signup_ts" in config.customers.columns.mapped() and \
            "signup_ts" not in sources.customers.missing_optional
        first_purchase = fit_first_purchase(con, "_history", table, as_of_ts, first_order, config, has_signup,
                                            history.first_purchase_examples)
        bundle = _assemble(results, spec, store, now, as_of_ts, config, fingerprint, history)
        bundle.first_purchase, bundle.first_purchase_spec = first_purchase.model, first_purchase.spec
        bundle.metadata["first_purchase_note"] = first_purchase.note
        return TrainResult(bundle, results, as_of_ts, intake, fingerprint, spec, sources if table else None,
                           first_purchase, history.unmatched)
    finally:
        con.close()


def default_training_as_of(con: Any, source: str) -> pd.Timestamp:
    """The day after the last order, but never after today (UTC): a default as_of is never in the future.

    Intake already refuses orders more than a day ahead; an order later today must not move the
    training date to tomorrow, where the newest label windows would end in the future.
    """
    return span_of(con, source, None)[0]


def _check_minimum_history(now: pd.DataFrame, as_of: pd.Timestamp, first_order: pd.Timestamp, config: Config) -> None:
    repeaters = int((now["repeat_orders"] > 0).sum()) if len(now) else 0
    if len(now) < 20 or repeaters < 5:
        raise TrainingError(
            f"too little history before {as_of.date()} to train anything: {len(now)} customers, {repeaters} with a "
            f"repeat order (history from {first_order.date()}). The BG/NBD fallback needs at least 20 customers and "
            f"5 repeat buyers; the LightGBM models need {config.training.min_history_days} days of history plus the "
            f"longest horizon ({max(config.horizons.model_dump().values())} days) plus one cut-off step "
            f"({config.training.cutoff_step_days} days) before as_of."
        )


def _feature_spec(store: CutoffStore, plans: dict[str, list[pd.Timestamp]], now: pd.DataFrame,
                  config: Config) -> FeatureSpec:
    frames = [store.features(c) for cs in plans.values() for c in cs] or [now]
    sample = pd.concat([f.head(0) for f in frames] + frames, ignore_index=True)
    attributes = [n for n, a in config.customers.attributes.items() if a.type == "categorical"]
    numeric, categorical = model_features(sample, config.training.exclude_features, attributes)
    return FeatureSpec.fit(sample, numeric, categorical)


def _examples_or_fallback(target: Target, cutoffs: list[pd.Timestamp], store: CutoffStore,
                          config: Config) -> TargetResult | tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) examples for LightGBM, or the BG/NBD fallback when they cannot support it."""
    n_valid = config.training.validation_cutoffs
    train_cuts, valid_cuts = cutoffs[:-n_valid], cutoffs[-n_valid:]
    if not train_cuts:
        return _fallback(target, cutoffs, store, config,
                         f"only {len(cutoffs)} cut-off(s) fit the history for a {target.horizon_days}-day horizon; "
                         f"LightGBM needs {n_valid + 1} (training plus validation)")
    train, valid = store.examples(target, train_cuts), store.examples(target, valid_cuts)
    too_few = _too_few(target, train, valid, config)
    if too_few:
        return _fallback(target, cutoffs, store, config, too_few)
    return train, valid


def _fit_targets(prepared: dict[str, TargetResult | tuple[pd.DataFrame, pd.DataFrame]],
                 plans: dict[str, list[pd.Timestamp]], spec: FeatureSpec, config: Config, trials: int,
                 progress: Progress) -> dict[str, TargetResult]:
    """Tune and fit the targets one after another, every booster on one thread.

    One thread per booster makes the models the same whatever the machine's core count. The
    targets used to be fitted side by side in Python threads (one core each), but LightGBM's native
    calls are not safe to run at once: dataset construction in one thread and prediction in another
    crashed the process (a segmentation fault, several times in one test run).
    """
    single = config.model_copy(update={"engine": config.engine.model_copy(update={"threads": 1})})
    by_target = {t.name: t for t in targets(config)}
    return {name: data if isinstance(data, TargetResult)
            else _fit_lightgbm(by_target[name], plans[name], data[0], data[1], spec, single, trials, progress)
            for name, data in prepared.items()}


def _fit_lightgbm(target: Target, cutoffs: list[pd.Timestamp], train: pd.DataFrame, valid: pd.DataFrame,
                  spec: FeatureSpec, config: Config, trials: int, progress: Progress) -> TargetResult:
    """Tune, fit, calibrate and evaluate one target's LightGBM model against the baselines."""
    tuning = _tune(target, train, spec, config, trials, progress)
    if target.kind == "classifier":
        result = _choose_classifier(target, spec, train, valid, tuning, config, cutoffs)
        if target.name == "churn":
            result.explainer_r2 = _fit_explainer(result.model, spec, train, valid, config)
    else:
        result = _choose_ltv_model(target, spec, train, valid, tuning, config, cutoffs)
    _evaluate(result, train, valid)
    result.valid_features = valid
    return result


def _too_few(target: Target, train: pd.DataFrame, valid: pd.DataFrame, config: Config) -> str:
    minimum = config.training.min_examples
    if len(train) < minimum or len(valid) < minimum:
        return f"{len(train)} training and {len(valid)} validation examples; at least {minimum} of each are needed"
    if target.kind == "classifier" and (train["label"].nunique() < 2 or valid["label"].nunique() < 2):
        return "the outcome never varies on the training or validation cut-offs"
    if target.kind == "regressor" and (train["label"] > 0).sum() < 20:
        return "fewer than 20 training examples with any spend in the horizon"
    return ""


def _tune(target: Target, train: pd.DataFrame, spec: FeatureSpec, config: Config, trials: int,
          progress: Progress) -> TuningResult:
    folds = time_folds(subsample_customers(train, config.training.max_tuning_rows, config.training.seed))
    objective = "binary" if target.kind == "classifier" else "tweedie"
    advance = progress(f"Tuning {target.name} ({objective})", max(1, trials))
    if not folds:
        folds = [(train, train)]  # one training cut-off: rounds are capped by the fixed maximum instead
    return tune(objective, spec, folds, trials, config.training.seed, config.training.max_rounds,
                config.training.early_stopping_rounds, on_trial=advance, threads=config.engine.threads or 0)


def _calibrate(result: TargetResult, fitted: FittedModel, valid: pd.DataFrame, method: str) -> None:
    """Calibration (training.calibration) fitted on validation; metrics use cross-fitted (out-of-half)
    predictions, so a calibration is never scored on its own fit."""
    raw, outcome = fitted.valid_raw, valid["label"].to_numpy()
    result.valid = valid[["customer_id", "cutoff", "label", "future_spend", "recency_days"]].copy()
    result.valid["model_uncalibrated"] = raw
    if method == "none":
        result.model.calibrator = None
        result.valid["model"] = raw
        return
    result.model.calibrator = Calibrator.fit(raw, outcome, method)
    result.valid["model"] = cross_fitted(raw, outcome, valid["customer_id"], method)


EXPLAINER_PARAMS = {"objective": "regression", "max_depth": 1, "num_leaves": 2, "learning_rate": 0.1,
                    "min_data_in_leaf": 50, "verbosity": -1}
EXPLAINER_ROUNDS = 300


def _fit_explainer(model: TargetModel, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
                   config: Config) -> float:
    """Fit the additive model behind the churn `reasons`; returns its R^2 on the validation cut-off.

    Exact per-feature contributions of the full model (TreeSHAP over hundreds of deep trees) cost
    about a minute per 20k customers, far beyond a nightly batch. Boosted stumps (one feature per
    tree) fitted to the model's own log-odds are additive, so each feature's contribution is exact
    for them and costs microseconds; their fidelity to the model is measured here and logged.
    """
    X_train, X_valid = spec.matrix(train), spec.matrix(valid)
    target_train = _log_odds(model, X_train, train)
    params = {**EXPLAINER_PARAMS, "seed": config.training.seed, "num_threads": config.engine.threads or 0,
              "deterministic": True, "force_col_wise": True}
    import lightgbm as lgb

    explainer = lgb.train(params, lgb.Dataset(X_train, target_train), num_boost_round=EXPLAINER_ROUNDS)
    model.boosters["explain"] = explainer.model_to_string()
    target_valid = _log_odds(model, X_valid, valid)
    residual = np.mean((explainer.predict(X_valid) - target_valid) ** 2)
    return float(1 - residual / np.var(target_valid)) if np.var(target_valid) > 0 else float("nan")


def _log_odds(model: TargetModel, matrix: pd.DataFrame, features: pd.DataFrame) -> np.ndarray:
    p = np.clip(model.raw_predict(matrix, features), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _parameter_sets(tuning: TuningResult) -> dict[str, tuple[dict[str, Any], int]]:
    """The tuned parameters and, when tuning moved away from them, the defaults too.

    Tuning scores parameters on folds of the training cut-offs only; the held-out validation
    cut-off then decides between tuned and default, so a search that overfits its folds is caught.
    """
    sets = {"": (tuning.params, tuning.rounds)}
    if tuning.params != DEFAULT_PARAMS:
        sets["/default_params"] = (dict(DEFAULT_PARAMS), tuning.default_rounds or tuning.rounds)
    return sets


def _choose_classifier(target: Target, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
                       tuning: TuningResult, config: Config, cutoffs: list[pd.Timestamp]) -> TargetResult:
    """Fit the plain and the BG/NBD-offset classifier (tuned and default parameters), each with the rounds
    that still help a horizon out of time (_gap_rounds); keep the lowest validation log loss, then calibrate."""
    seed = config.training.seed
    variants = {"binary": "none", "binary_bgnbd_offset": "bgnbd"} if config.training.bgnbd_offset else {"binary": "none"}
    candidates: dict[str, FittedModel] = {}
    checks: dict[str, dict[str, float]] = {}
    fits: dict[str, tuple[str, dict[str, Any], int]] = {}
    folds = _target_gap_folds(target, train, valid)
    for name, offset in variants.items():
        for suffix, (params, rounds) in _parameter_sets(tuning).items():
            kept, checks[name + suffix] = _gap_rounds(target, offset, spec, train, valid, params, rounds, config,
                                                      folds)
            fits[name + suffix] = (offset, params, kept)
            candidates[name + suffix] = (
                fit_target_model(target, "lgbm", spec, train, valid, params, kept, seed, offset,
                                 config.engine.threads or 0)
                if kept > 0 else _offset_only(target, valid))
    outcome = valid["label"].to_numpy()
    scores = {name: classifier_metrics(outcome, fitted.valid_raw) for name, fitted in candidates.items()}
    best = min(scores, key=lambda k: scores[k]["log_loss"])
    if config.training.classifier_choice == "margin":
        anchored = {name + suffix for name, offset in variants.items() if offset == "bgnbd"
                    for suffix in _parameter_sets(tuning)}
        best = _anchored_unless_clearly_beaten(best, anchored, candidates, scores, outcome, seed)
    offset, params, kept = fits[best]
    chosen = bag_fitted_model(candidates[best], target, "lgbm", spec, train, valid, params, kept, seed,
                              config.training.bag_members, offset, config.engine.threads or 0)
    result = TargetResult(target, chosen.model, cutoffs, tuning=tuning, importance=chosen.importance,
                          candidates=scores, chosen=best, rounds_check=checks[best])
    _calibrate(result, chosen, valid, config.training.calibration)
    return result


def _anchored_unless_clearly_beaten(best: str, anchored: set[str], candidates: dict[str, FittedModel],
                                    scores: dict[str, dict[str, float]], outcome: np.ndarray, seed: int) -> str:
    """The lowest-log-loss classifier, but one that ignores BG/NBD must beat the best one boosted from its
    offset clearly: the lower end of a 90% paired-bootstrap interval of the log-loss difference above 0.

    training.classifier_choice "margin"; off by default, as it did not win out of time on the holdout
    harness (the 16-month shop's churn ranked worse with it; README, "Accuracy").
    """
    anchors = [name for name in anchored if name in scores]
    if best in anchored or not anchors:
        return best
    anchor = min(anchors, key=lambda k: scores[k]["log_loss"])
    low, high = log_loss_difference_interval(outcome, candidates[anchor].valid_raw, candidates[best].valid_raw,
                                             seed=seed)
    scores[best]["log_loss_margin_low"], scores[best]["log_loss_margin_high"] = low, high
    return best if low > 0 else anchor


def _gap_folds(examples: pd.DataFrame, horizon_days: int,
               longest_if_none: bool = False) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Out-of-time folds as at as_of: each later cut-off validates a model of the cut-offs whose label
    window ended by then (at least one horizon earlier), so no outcome is shared between the two.

    With `longest_if_none`, a horizon longer than the cut-offs span (LTV's year) gets the longest
    gap they offer instead: the earliest cut-off validates the latest. Their outcome windows
    overlap, but the features are as far apart as the history allows, which is what drifts.
    """
    cutoffs = sorted(examples["cutoff"].unique())
    folds = []
    for later in cutoffs:
        earlier = [c for c in cutoffs if c + pd.Timedelta(days=horizon_days) <= later]
        if earlier:
            folds.append((examples[examples["cutoff"].isin(earlier)], examples[examples["cutoff"] == later]))
    if not folds and longest_if_none and len(cutoffs) >= 2:
        folds = [(examples[examples["cutoff"] == cutoffs[0]], examples[examples["cutoff"] == cutoffs[-1]])]
    return folds


def _target_gap_folds(target: Target, train: pd.DataFrame,
                      valid: pd.DataFrame) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """A target's out-of-time folds over all its cut-offs (_gap_folds); LTV takes the longest gap when no
    pair of cut-offs is a whole horizon apart. Built once per target: every candidate shares them."""
    return _gap_folds(pd.concat([train, valid], ignore_index=True), target.horizon_days,
                      longest_if_none=target.kind == "regressor")


def tweedie_loss(y: np.ndarray, predicted: np.ndarray, power: float) -> float:
    """Mean Tweedie negative log-likelihood (up to a constant), as LightGBM's `tweedie` metric reports it."""
    mu = np.clip(predicted, 1e-10, None)
    return float(np.mean(-y * mu ** (1 - power) / (1 - power) + mu ** (2 - power) / (2 - power)))


LEVEL_FREE_METRIC = "tweedie_level_free"


def level_free_tweedie_loss(y: np.ndarray, predicted: np.ndarray, power: float) -> float:
    """tweedie_loss of the predictions scaled to the actual total: how well they share it out, whatever
    their level (training.ltv_gap_rounds "level_free"; the LTV level is set apart, _level_scale)."""
    total = float(np.sum(predicted))
    if total <= 0 or not np.isfinite(total):
        return float("inf")
    return tweedie_loss(y, predicted * (float(np.sum(y)) / total), power)


def _level_free_tweedie(power: float) -> Callable[[np.ndarray, Any], tuple[str, float, bool]]:
    """A LightGBM eval function (its predictions are on the value scale) for level_free_tweedie_loss."""
    def evaluate(predicted: np.ndarray, data: Any) -> tuple[str, float, bool]:
        return LEVEL_FREE_METRIC, level_free_tweedie_loss(data.get_label(), predicted, power), False
    return evaluate


def _gap_rounds(target: Target, offset: str, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
                params: dict[str, Any], rounds: int, config: Config,
                folds: list[tuple[pd.DataFrame, pd.DataFrame]] | None = None) -> tuple[int, dict[str, float]]:
    """How many of the tuned boosting rounds still lower the loss a horizon or more out of time.

    Tuning and the validation cut-off measure the next cut-off, whose outcome window overlaps the
    training ones; the shipped model is used a horizon or more after its latest training label
    window. Refitted on the gap folds (_gap_folds), the loss (log loss; Tweedie for LTV) is read
    after every round: the round with the lowest mean loss is kept (never more than tuned). For a
    model boosted from the BG/NBD offset, round 0 is the offset itself: when no round beats it, 0
    is returned and the offset kept.
    """
    ltv = target.kind == "regressor"
    folds = _target_gap_folds(target, train, valid) if folds is None else folds
    if not folds:
        return rounds, {}
    objective, metric = ("tweedie", "tweedie") if ltv else ("binary", "binary_logloss")
    power = float(params.get("tweedie_variance_power", DEFAULT_PARAMS["tweedie_variance_power"]))
    mode = config.training.ltv_gap_rounds if ltv else "loss"
    curves, free_curves = [], []
    for fold_train, fold_valid in folds:
        model = TargetModel(target.name, target.horizon_days, "lgbm", offset=offset)
        start = model.init_score(fold_valid)
        y = fold_valid["label"].to_numpy(dtype=float)
        record: dict[str, dict[str, list[float]]] = {}
        train_booster(params, objective, config.training.seed, spec.matrix(fold_train),
                      fold_train["label"].to_numpy(dtype=float), rounds,
                      valid=(spec.matrix(fold_valid), y), init_score=(model.init_score(fold_train), start),
                      threads=config.engine.threads or 0, record=record,
                      feval=_level_free_tweedie(power) if mode != "loss" else None)
        if start is None:
            at_start = np.inf
        elif ltv:
            at_start = tweedie_loss(y, np.exp(start), power)
        else:
            at_start = log_loss(y, 1 / (1 + np.exp(-start)))
        curves.append([at_start, *record["valid_0"][metric]])
        if mode != "loss":
            free_start = np.inf if start is None else level_free_tweedie_loss(y, np.exp(start), power)
            free_curves.append([free_start, *record["valid_0"][LEVEL_FREE_METRIC]])
    mean = np.mean(curves, axis=0)
    kept = int(np.argmin(mean))
    # "level_free" always; "level_free_if_none" only when the loss keeps no round of an offset model, where
    # a gap across a season can blame the boosting for the season's level (the gift shop's Jul-Dec).
    level_free = mode == "level_free" or (mode == "level_free_if_none" and kept == 0 and offset != "none")
    if level_free:
        mean = np.mean(free_curves, axis=0)
        kept = int(np.argmin(mean))
    gaps = [(v["cutoff"].iloc[0] - t["cutoff"].max()).days for t, v in folds]
    check = {"folds": float(len(folds)), "min_gap_days": float(min(gaps)), "rounds_tuned": float(rounds),
             "rounds_kept": float(kept), "loss_kept": float(mean[kept]), "loss_tuned": float(mean[-1])}
    if mode != "loss":
        check["level_free"] = float(level_free)  # the losses below are then level-free ones
    if offset != "none":
        check["loss_offset"] = float(mean[0])
    return kept, check


def _offset_only(target: Target, valid: pd.DataFrame) -> FittedModel:
    """The BG/NBD (+ Gamma-Gamma) prediction itself, kept when boosting from it does not beat it out of time."""
    model = TargetModel(target.name, target.horizon_days, "bgnbd",
                        note="boosting from the BG/NBD offset did not beat the offset out of time")
    return FittedModel(model, model.raw_predict(pd.DataFrame(index=valid.index), valid), pd.Series(dtype=float))


def _choose_ltv_model(target: Target, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
                      tuning: TuningResult, config: Config, cutoffs: list[pd.Timestamp]) -> TargetResult:
    """Fit the LTV candidates (training.ltv_models, tuned and default parameters; the Tweedie ones with the
    rounds that still help out of time) and keep the best normalised Gini on the longest out-of-time gap
    (training.ltv_choice "gap"; "validation": on the validation cut-off), ties by validation Gini, then
    by the total closer to actual."""
    seed = config.training.seed
    variants = {"tweedie": ("lgbm", "none"), "hurdle": ("hurdle", "none"), "tweedie_bgnbd_offset": ("lgbm", "bgnbd")}
    sets = _parameter_sets(tuning)
    plan = {name + suffix: (kind, offset, params, rounds)
            for name, (kind, offset) in variants.items() if name in config.training.ltv_models
            for suffix, (params, rounds) in sets.items()}
    checks: dict[str, dict[str, float]] = {}
    candidates: dict[str, FittedModel] = {}
    folds = _target_gap_folds(target, train, valid)
    for name, (kind, offset, params, rounds) in list(plan.items()):
        if kind == "lgbm":  # the hurdle's two boosters keep their tuned rounds
            rounds, checks[name] = _gap_rounds(target, offset, spec, train, valid, params, rounds, config, folds)
            plan[name] = (kind, offset, params, rounds)
        if rounds == 0:  # no round beat the BG/NBD + Gamma-Gamma starting point out of time
            candidates[name] = _offset_only(target, valid)
            del plan[name]
            continue
        candidates[name] = fit_target_model(target, kind, spec, train, valid, params, rounds, seed, offset,
                                            config.engine.threads or 0)
    if "bgnbd_gg" in config.training.ltv_models:
        candidates["bgnbd_gg"] = _offset_only(target, valid)
    actual = valid["label"].to_numpy()
    scores = {kind: ltv_metrics(actual, fitted.valid_raw) for kind, fitted in candidates.items()}
    gap = {}
    if config.training.ltv_choice == "gap":
        for name in scores:
            kind, offset, params, rounds = plan.get(name, ("bgnbd", "bgnbd", {}, 0))
            predictions = _gap_predictions(target, kind, offset, spec, folds, params, rounds, config)
            if predictions is not None:
                gap[name] = predictions
    if gap:
        anchored = {n for n in scores if n not in plan or plan[n][1] == "bgnbd"}
        best = _choose_over_gap(scores, gap, anchored, seed)
    else:
        best = max(scores, key=lambda k: (round(scores[k]["gini_normalised"], 3), -abs(np.log(scores[k]["total_ratio"]))))
    if best in plan:  # the chosen learned model as a seed bag (training.bag_members), before its level is set
        kind, offset, params, rounds = plan[best]
        candidates[best] = bag_fitted_model(candidates[best], target, kind, spec, train, valid, params, rounds, seed,
                                            config.training.bag_members, offset, config.engine.threads or 0)
    chosen = candidates[best]
    result = TargetResult(target, chosen.model, cutoffs, tuning=tuning, importance=chosen.importance,
                          candidates=scores, chosen=best, rounds_check=checks.get(best, {}))
    # The chosen model and the fitted candidates the gap cannot tell from it (all of them without a
    # gap): one that ranks clearly worse gets no vote on the level, nor does BG/NBD + Gamma-Gamma,
    # whose total is not learned from spend (on growing shops it ran 30-46% high at as_of). BG/NBD
    # chosen itself keeps its own level: its predictions take no scale. With no candidate tied to the
    # winner, the gap check below picks the level instead (training.ltv_level).
    learned = [fitted.model for name, fitted in candidates.items() if fitted.model.kind != "bgnbd"
               and (name == best or scores[name].get("gap_tied", 1.0) == 1.0)]
    if config.training.ltv_level == "candidates" and len(learned) > 1 and chosen.model.kind != "bgnbd":
        result.level, result.level_models = "candidates", learned
    elif best in plan:
        kind, offset, params, rounds = plan[best]
        anchored = {name: plan[name] for name in plan if plan[name][1] == "bgnbd" and name != best}
        anchor = max(anchored, key=lambda k: scores[k].get("gap_gini_normalised", scores[k]["gini_normalised"]),
                     default=None) if offset == "none" else None
        result.level, result.level_check = _choose_ltv_level(target, kind, offset, spec, train, valid, params,
                                                             rounds, config, plan.get(anchor))
        if "offset" in result.level.split("+"):
            result.level_model = candidates[anchor].model
    else:  # BG/NBD + Gamma-Gamma itself: its level is its own
        result.level = "model"
    result.valid = valid[["customer_id", "cutoff", "label", "future_spend", "recency_days"]].copy()
    result.valid["model"] = chosen.valid_raw * _level_scale(result, chosen.valid_raw, valid, spec.matrix(valid))
    return result


def _gap_predictions(target: Target, kind: str, offset: str, spec: FeatureSpec,
                     folds: list[tuple[pd.DataFrame, pd.DataFrame]], params: dict[str, Any], rounds: int,
                     config: Config) -> tuple[np.ndarray, np.ndarray] | None:
    """An LTV candidate's (actual, predicted) over the longest out-of-time gap the cut-offs offer
    (_gap_folds): refitted with its own rounds on the earlier cut-off(s), predicting the later one.
    `kind` "bgnbd" is BG/NBD + Gamma-Gamma itself. None when the cut-offs offer no gap."""
    if not folds:
        return None
    actual, predicted = [], []
    for fold_train, fold_valid in folds:
        if kind == "bgnbd":
            values = fold_valid[f"bg_ltv_{target.horizon_days}d"].to_numpy(dtype=float)
        else:
            values = fit_target_model(target, kind, spec, fold_train, fold_valid, params, rounds,
                                      config.training.seed, offset, config.engine.threads or 0).valid_raw
        actual.append(fold_valid["label"].to_numpy(dtype=float))
        predicted.append(values)
    return np.concatenate(actual), np.concatenate(predicted)


def _choose_over_gap(scores: dict[str, dict[str, float]], gap: dict[str, tuple[np.ndarray, np.ndarray]],
                     anchored: set[str], seed: int) -> str:
    """The LTV candidate with the best Gini over the gap, but a candidate that ignores BG/NBD must beat the
    best one anchored on it (boosted from its offset, or BG/NBD + Gamma-Gamma itself) clearly: the lower
    end of a 90% paired-bootstrap interval of the difference above 0. One gap fold is noisy, and a
    correction of the baseline has to earn its place (on a generated shop one seed in three chose a
    free model by a hair that lost 0.06 Gini at as_of)."""
    for name, (actual, predicted) in gap.items():
        scores[name]["gap_gini_normalised"] = ltv_metrics(actual, predicted)["gini_normalised"] \
            if np.isfinite(predicted).all() else float("nan")
    usable = [n for n in gap if np.isfinite(scores[n]["gap_gini_normalised"])]
    if not usable:
        return max(scores, key=lambda k: (round(scores[k]["gini_normalised"], 3), -abs(np.log(scores[k]["total_ratio"]))))
    best = max(usable, key=lambda k: (round(scores[k]["gap_gini_normalised"], 3), round(scores[k]["gini_normalised"], 3)))
    anchors = [n for n in usable if n in anchored]
    if best not in anchored and anchors:
        anchor = max(anchors, key=lambda k: scores[k]["gap_gini_normalised"])
        low, high = gini_difference_interval(gap[best][0], gap[best][1], gap[anchor][1], seed=seed)
        scores[best]["gap_gini_margin_low"], scores[best]["gap_gini_margin_high"] = low, high
        best = best if low > 0 else anchor
    # Which others the gap cannot tell from the winner (their LTV level gets a vote, _level_scale).
    for name in usable:
        if name != best:
            low, _ = gini_difference_interval(gap[best][0], gap[best][1], gap[name][1], seed=seed)
            scores[name]["gap_tied"] = float(low <= 0)
    return best


def _level_scale(result: TargetResult, predicted: np.ndarray, features: pd.DataFrame, matrix: pd.DataFrame) -> float:
    """The factor that gives `predicted` the total `result.level` names over the same customers: the
    geometric mean of the totals of its sources ("model" its own, "bgnbd" BG/NBD + Gamma-Gamma's,
    "offset" the BG/NBD-offset candidate's, "candidates" that of every candidate's total), e.g.
    "model+offset"; 1.0 for "model" alone.

    It uses predictions only, never outcomes, so it can be fixed at as_of and applied to later scores.
    """
    if result.level in ("", "model"):
        return 1.0
    own_total = float(np.sum(predicted))
    totals = {"model": own_total,
              "bgnbd": float(np.nansum(features[f"bg_ltv_{result.target.horizon_days}d"].to_numpy(dtype=float)))}
    if result.level_model is not None:
        totals["offset"] = float(np.sum(result.level_model.raw_predict(matrix, features)))
    if result.level_models:
        each = [float(np.sum(model.raw_predict(matrix, features))) for model in result.level_models]
        each = [t for t in each if np.isfinite(t) and t > 0]
        totals["candidates"] = float(np.exp(np.mean(np.log(each)))) if each else np.nan
    sources = [totals.get(name, np.nan) for name in (result.level or "model").split("+")]
    if own_total <= 0 or not all(np.isfinite(t) and t > 0 for t in sources):
        return 1.0
    return float(np.exp(np.mean(np.log(sources)))) / own_total


# Levels whose out-of-time totals are this close (in log ratio) to the closest one cannot be told
# apart by one gap fold: on CDNOW the closest level at a 90-day gap was the furthest at as_of in
# one of two runs. Their geometric mean is taken instead of betting on one.
LEVEL_TIE_LOG_RATIO = 0.10


def _choose_ltv_level(target: Target, kind: str, offset: str, spec: FeatureSpec, train: pd.DataFrame,
                      valid: pd.DataFrame, params: dict[str, Any], rounds: int, config: Config,
                      anchor: tuple[str, str, dict[str, Any], int] | None = None) -> tuple[str, dict[str, float]]:
    """Whose total to trust when the model is applied far beyond its training cut-offs: its own, BG/NBD's,
    or (`anchor`, for a model without the offset) the best candidate boosted from the BG/NBD offset.

    Deployed, the LTV model scores customers a whole horizon (or more) after its latest training
    cut-off; a shop whose customers age or drift can move the level of its predictions while their
    ranking holds. The one-step validation cannot see that, so this refits the chosen model (and
    the anchor) on the earliest training cut-off only and compares the levels on the validation
    cut-off, the longest out-of-time gap the history offers. BG/NBD models ageing explicitly, and a
    model boosted from it inherits that; the level closest to the actual total there is taken.
    """
    earliest = train["cutoff"].min()
    if train["cutoff"].nunique() < 2:
        return "model", {}
    early = train[train["cutoff"] == earliest]
    actual = float(valid["label"].sum())
    if actual <= 0:
        return "model", {}

    def gap_ratio(kind: str, offset: str, params: dict[str, Any], rounds: int) -> float:
        refit = fit_target_model(target, kind, spec, early, valid, params, rounds, config.training.seed,
                                 offset, config.engine.threads or 0)
        return float(np.sum(refit.valid_raw)) / actual

    ratios = {"model": gap_ratio(kind, offset, params, rounds),
              "bgnbd": float(np.nansum(valid[f"bg_ltv_{target.horizon_days}d"].to_numpy(dtype=float))) / actual}
    if anchor is not None:
        ratios["offset"] = gap_ratio(*anchor)
    check = {"gap_days": float((valid["cutoff"].iloc[0] - earliest).days),
             **{f"{name}_total_ratio": ratio for name, ratio in ratios.items()}}
    usable = {name: abs(np.log(ratio)) for name, ratio in ratios.items() if np.isfinite(ratio) and ratio > 0}
    if "model" not in usable:
        return "model", check
    closest = min(usable.values())
    return "+".join(name for name in ratios if name in usable and usable[name] <= closest + LEVEL_TIE_LOG_RATIO), check


# Last year's miss is applied only when it is at least this large either way (a factor of 1.5 or 1 / 1.5)
# and never beyond LAST_YEAR_LEVEL_BOUND. BG/NBD + Gamma-Gamma's total over [as_of - 365 d, + h) against
# its total over [as_of, + h), on the harness shops' history (horizons of 90 and 180 days): a miss of 1.5x
# or more a year earlier came back (default 30k 0.65 -> 0.72, 16-month 20k 0.48 -> 0.65, gift Jul-Dec
# 2.00 -> 2.10), smaller ones did not (10k shop 180 days 0.87 -> 1.01, wholesale 1.10 -> 0.99).
LAST_YEAR_LEVEL_MIN = 1.5
LAST_YEAR_LEVEL_BOUND = 3.0


def _last_year_level(result: TargetResult, store: CutoffStore, as_of: pd.Timestamp, first_order: pd.Timestamp,
                     config: Config) -> None:
    """Set `result.level_factor` to BG/NBD + Gamma-Gamma's actual / predicted total over last year's same
    window (training.ltv_last_year_level), where the LTV level shipped is BG/NBD's own.

    A residual of the baseline, not the shop's raw season ratio: the shop's growth is already in
    BG/NBD's prediction (the raw last-year ratio on the gift shop, 4.7, was twice the 2.1 needed), and
    BG/NBD learns nothing from outcomes, so the cut-off a year back is out of time for it. Applied only
    when the horizon is under a year (a full year's window has no season to correct, and its cut-off
    is the latest training one), the history reaches min_history_days before that cut-off, the miss is
    LAST_YEAR_LEVEL_MIN or more either way, and bounded by LAST_YEAR_LEVEL_BOUND. Said in level_check
    (logged in MLflow) and the model's note. The factor goes to TargetModel.scale, which serving applies
    to every kind of model, BG/NBD + Gamma-Gamma itself (kind "bgnbd") included.
    """
    target, h = result.target, result.target.horizon_days
    cutoff = last_year_level_cutoff(as_of, first_order, config)
    if cutoff is None or not (result.model.kind == "bgnbd" or result.level == "bgnbd"):
        return
    examples = store.examples(target, [cutoff])
    predicted = float(np.nansum(examples[f"bg_ltv_{h}d"].to_numpy(dtype=float)))
    actual = float(examples["label"].sum())
    if predicted <= 0 or actual <= 0:
        return
    miss = actual / predicted
    result.level_check["last_year_bgnbd_ratio"] = miss
    if abs(np.log(miss)) >= np.log(LAST_YEAR_LEVEL_MIN):
        result.level_factor = float(np.clip(miss, 1 / LAST_YEAR_LEVEL_BOUND, LAST_YEAR_LEVEL_BOUND))
        result.level_check["last_year_factor"] = result.level_factor
        result.model.note = (f"{result.model.note}; " if result.model.note else "") + \
            f"level x{result.level_factor:.3f}: BG/NBD + Gamma-Gamma's miss over the same window last year"


def _evaluate(result: TargetResult, train: pd.DataFrame, valid_features: pd.DataFrame) -> None:
    """Model and baselines on the same validation examples (BG/NBD fitted at the validation cut-off)."""
    target, valid = result.target, result.valid
    h = target.horizon_days
    if target.kind == "classifier":
        recency = RecencyBaseline.fit(train["recency_days"].to_numpy(), train["label"].to_numpy())
        valid["recency_heuristic"] = recency.predict_proba(valid["recency_days"].to_numpy())
        p_none = valid_features[f"bg_p_none_{h}d"].to_numpy(dtype=float)
        valid["bgnbd"] = p_none if target.name == "churn" else 1.0 - p_none
        for name in ("model", "recency_heuristic", "bgnbd"):
            if np.isfinite(valid[name]).all():
                result.metrics[name] = classifier_metrics(valid["label"], valid[name])
    else:
        valid["run_rate"] = RecencyBaseline.run_rate_ltv(valid_features, h)
        valid["bgnbd_gg"] = valid_features[f"bg_ltv_{h}d"].to_numpy(dtype=float)
        for name in ("model", "run_rate", "bgnbd_gg"):
            if np.isfinite(valid[name]).all():
                result.metrics[name] = ltv_metrics(valid["label"], valid[name])


def _fallback(target: Target, cutoffs: list[pd.Timestamp], store: CutoffStore, config: Config,
              reason: str) -> TargetResult:
    """BG/NBD + Gamma-Gamma for this target; validated on the latest cut-off when there is one."""
    model = TargetModel(target.name, target.horizon_days, "bgnbd", note=f"BG/NBD + Gamma-Gamma fallback: {reason}")
    result = TargetResult(target, model, cutoffs, fallback_reason=reason)
    if cutoffs:
        valid = store.examples(target, cutoffs[-1:])
        result.valid = valid[["customer_id", "cutoff", "label", "future_spend", "recency_days"]].copy()
        result.valid["model"] = model.predict(pd.DataFrame(index=valid.index), valid)
        result.valid_features = valid
        metric = classifier_metrics if target.kind == "classifier" else ltv_metrics
        if np.isfinite(result.valid["model"]).all() and (target.kind != "classifier" or valid["label"].nunique() == 2):
            result.metrics["model"] = metric(result.valid["label"], result.valid["model"])
            result.metrics["bgnbd" if target.kind == "classifier" else "bgnbd_gg"] = result.metrics["model"]
    return result


def _assemble(results: dict[str, TargetResult], spec: FeatureSpec, store: CutoffStore, now: pd.DataFrame,
              as_of: pd.Timestamp, config: Config, fingerprint: dict[str, Any], history: History) -> Bundle:
    """The bundle: models, the CLV parameters, RFM cut points and category re-buy intervals fitted on the whole
    history at as_of (the store's orders before it)."""
    baseline = store.baseline(as_of)
    ltv = results.get("ltv")
    if ltv is not None and ltv.level not in ("", "model") and len(now):
        # `now` already carries the bg_* columns of this very baseline (CutoffStore.features).
        matrix = spec.matrix(now)
        ltv.model.scale = _level_scale(ltv, ltv.model.unscaled_predict(matrix, now), now, matrix)
    if ltv is not None:
        ltv.model.scale *= ltv.level_factor
    bundle = Bundle(
        spec=spec,
        models={name: r.model for name, r in results.items()},
        clv=baseline.to_dict() if baseline else None,
        horizons=store.horizons,
        config=config.model_dump(mode="json"),
        rfm_cut_points=RfmCutPoints.fit(now).to_dict(),
        as_of=str(as_of.date()),
        metadata={"fingerprint": fingerprint, "validation_score": validation_score(results),
                  # Per target, the model's and each baseline's metrics on the validation cut-off, for
                  # whoever serves or reports the model without its MLflow run at hand.
                  "validation_metrics": {name: {who: {k: float(v) for k, v in metrics.items()}
                                                for who, metrics in r.metrics.items()}
                                         for name, r in results.items()},
                  "trained_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")},
        # Shop-wide, so learned here once: scoring one customer's orders could not learn them.
        rebuy_days=history.rebuy_days,
    )
    bundle.metadata["tier_cut_points"] = _tier_cut_points(bundle, now, config)
    # Also shop-wide, so learned here: the behavioural clusters `score --clusters` and the report use.
    try:
        bundle.clusters = fit_clusters(history.cluster_sample, config).to_dict()
    except ClusterError as exc:
        bundle.metadata["clusters_note"] = str(exc)
    return bundle


def _tier_cut_points(bundle: Bundle, now: pd.DataFrame, config: Config) -> dict[str, dict[str, float]]:
    """Value-tier cut points of predicted LTV and of past spend, from the population at as_of.

    Stored with the model so that nightly scores keep the same tiers until the next training.
    """
    shares = config.scoring.value_tier_top_share
    predicted_ltv = bundle.predict(now)["ltv"].to_numpy(dtype=float)
    past_spend = now["monetary_total"].to_numpy(dtype=float)

    def cuts(values: np.ndarray) -> dict[str, float]:
        return {"high": float(np.nanquantile(values, 1 - shares.high)),
                "medium": float(np.nanquantile(values, 1 - shares.medium))}

    return {"ltv": cuts(predicted_ltv), "monetary_total": cuts(past_spend)}
