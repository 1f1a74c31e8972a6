"""LightGBM models for churn, repurchase and LTV: fitting, and the two LTV formulations (Tweedie, hurdle)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from serving.bundle import FeatureSpec, TargetModel
from training.bagging import average_boosters, member_seeds
from training.dataset import Target

__all__ = ["DEFAULT_PARAMS", "FittedModel", "bag_fitted_model", "fit_target_model", "lgb_params", "model_features"]

# Conservative defaults: shallow-ish trees with many examples per leaf generalise across shops.
DEFAULT_PARAMS: dict[str, Any] = {
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 100,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "tweedie_variance_power": 1.3,
}
CATEGORICAL = ["first_order_channel"]


def model_features(features: pd.DataFrame, exclude: list[str] | tuple[str, ...] = (),
                   categorical_attributes: list[str] | tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """Numeric and categorical model inputs of a training frame (all features but ids, labels and `exclude`)."""
    excluded = {"customer_id", "cutoff", "future_orders", "future_spend", "label", *exclude}
    categorical = [c for c in [*CATEGORICAL, *categorical_attributes] if c in features.columns and c not in excluded]
    numeric = [c for c in features.columns if c not in excluded and c not in categorical]
    return numeric, categorical


def lgb_params(params: dict[str, Any], objective: str, seed: int, threads: int = 0) -> dict[str, Any]:
    """LightGBM parameters for one objective: tuned values plus fixed, reproducible settings (threads 0 = all cores)."""
    out = {k: v for k, v in params.items() if k != "tweedie_variance_power" or objective == "tweedie"}
    out.update({"objective": objective, "seed": seed, "deterministic": True, "force_col_wise": True,
                "verbosity": -1, "num_threads": threads})
    return out


def train_booster(
    params: dict[str, Any], objective: str, seed: int, X: pd.DataFrame, y: np.ndarray, rounds: int,
    valid: tuple[pd.DataFrame, np.ndarray] | None = None, early_stopping: int | None = None,
    init_score: tuple[np.ndarray | None, np.ndarray | None] = (None, None), threads: int = 0,
    record: dict[str, Any] | None = None, feval: Callable[..., tuple[str, float, bool]] | None = None,
) -> lgb.Booster:
    """One LightGBM booster; with `valid`, stops early on the validation loss (with `record` instead, runs all
    rounds and records the validation loss after each one there, and `feval`'s too); `init_score` = (train,
    valid) offsets."""
    train_set = lgb.Dataset(X, y, init_score=init_score[0], free_raw_data=False)
    kwargs: dict[str, Any] = {}
    if valid is not None:
        kwargs["valid_sets"] = [lgb.Dataset(valid[0], valid[1], init_score=init_score[1], reference=train_set)]
        kwargs["callbacks"] = ([lgb.record_evaluation(record)] if record is not None
                               else [lgb.early_stopping(early_stopping or 50, verbose=False)])
    if feval is not None:
        kwargs["feval"] = feval
    return lgb.train(lgb_params(params, objective, seed, threads), train_set, num_boost_round=rounds, **kwargs)


@dataclass
class FittedModel:
    """A target model ready for the bundle, with its raw validation predictions."""

    model: TargetModel
    valid_raw: np.ndarray
    importance: pd.Series


def _importance(booster: lgb.Booster) -> pd.Series:
    gain = booster.feature_importance(importance_type="gain")
    return pd.Series(gain, index=booster.feature_name()).sort_values(ascending=False)


def fit_target_model(
    target: Target, kind: str, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
    params: dict[str, Any], rounds: int, seed: int, offset: str = "none", threads: int = 0,
) -> FittedModel:
    """Fit one target's model on the training cut-offs; predict (uncalibrated) on the validation cut-off.

    kind: 'lgbm' (binary for classifiers, Tweedie for LTV) or 'hurdle' (LTV = P(buy) x value if buying).
    offset: 'bgnbd' starts boosting from the BG/NBD prediction (lgbm only).
    """
    X_train, X_valid = spec.matrix(train), spec.matrix(valid)
    y_train = train["label"].to_numpy(dtype=float)
    if kind == "lgbm":
        objective = "binary" if target.kind == "classifier" else "tweedie"
        model = TargetModel(target.name, target.horizon_days, "lgbm", offset=offset)
        booster = train_booster(params, objective, seed, X_train, y_train, rounds,
                                init_score=(model.init_score(train), None), threads=threads)
        model.boosters["main"] = booster.model_to_string()
        return FittedModel(model, model.raw_predict(X_valid, valid), _importance(booster))
    buys = y_train > 0
    buy = train_booster(params, "binary", seed, X_train, buys.astype(float), rounds, threads=threads)
    # The value model sees only customers who bought: E[spend | buy] with a gamma (log-link) loss.
    value = train_booster(params, "gamma", seed, X_train[buys], y_train[buys], rounds, threads=threads)
    model = TargetModel(target.name, target.horizon_days, "hurdle",
                        {"buy": buy.model_to_string(), "value": value.model_to_string()})
    raw = buy.predict(X_valid) * value.predict(X_valid)
    return FittedModel(model, raw, _importance(buy).add(_importance(value), fill_value=0).sort_values(ascending=False))


def bag_fitted_model(
    fitted: FittedModel, target: Target, kind: str, spec: FeatureSpec, train: pd.DataFrame, valid: pd.DataFrame,
    params: dict[str, Any], rounds: int, seed: int, members: int, offset: str = "none", threads: int = 0,
) -> FittedModel:
    """`fitted` (fit_target_model with `seed`) as a bag of `members` models: the others fitted alike with
    seeds derived from `seed` (training.bagging.member_seeds), each booster averaged with its
    counterparts on the link scale into one booster (average_boosters). One member returns `fitted`."""
    if members <= 1 or fitted.model.kind not in ("lgbm", "hurdle"):
        return fitted
    others = [fit_target_model(target, kind, spec, train, valid, params, rounds, s, offset, threads)
              for s in member_seeds(seed, members)[1:]]
    bag = [fitted, *others]
    boosters = {name: average_boosters([m.model.boosters[name] for m in bag]) for name in fitted.model.boosters}
    model = replace(fitted.model, boosters=boosters, _loaded={})
    importance = pd.concat([m.importance for m in bag], axis=1).fillna(0).mean(axis=1).sort_values(ascending=False)
    return FittedModel(model, model.unscaled_predict(spec.matrix(valid), valid), importance)
