"""Optuna tuning of LightGBM parameters on time-based folds (seeded TPE, median pruning)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import pandas as pd

from serving.bundle import FeatureSpec
from training.models import DEFAULT_PARAMS, train_booster

__all__ = ["TuningResult", "time_folds", "tune"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class TuningResult:
    """Chosen parameters, boosting rounds, and the study's record."""

    params: dict[str, Any]
    rounds: int
    best_loss: float
    trials: int
    pruned: int = 0
    history: list[float] = field(default_factory=list)
    default_rounds: int = 0  # rounds chosen for the default parameters (trial 0)


def time_folds(examples: pd.DataFrame, max_folds: int = 2) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Expanding-window folds over the training cut-offs: train on earlier cut-offs, validate on the next."""
    cutoffs = sorted(examples["cutoff"].unique())
    folds = []
    for i in range(1, len(cutoffs)):
        train = examples[examples["cutoff"] < cutoffs[i]]
        valid = examples[examples["cutoff"] == cutoffs[i]]
        folds.append((train, valid))
    return folds[-max_folds:]


def subsample_customers(examples: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """At most about `max_rows` examples, keeping whole customers (all their cut-offs) together."""
    if len(examples) <= max_rows:
        return examples
    customers = examples["customer_id"].unique()
    rng = np.random.default_rng(seed)
    keep = rng.choice(customers, size=max(1, int(len(customers) * max_rows / len(examples))), replace=False)
    return examples[examples["customer_id"].isin(set(keep))]


def _search_space(trial: optuna.Trial, objective: str) -> dict[str, Any]:
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 20, 500, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
    }
    if objective == "tweedie":
        params["tweedie_variance_power"] = trial.suggest_float("tweedie_variance_power", 1.1, 1.8)
    return params


def _fold_loss(params: dict[str, Any], objective: str, spec: FeatureSpec, train: pd.DataFrame,
               valid: pd.DataFrame, max_rounds: int, early_stopping: int, seed: int, threads: int) -> tuple[float, int]:
    booster = train_booster(
        params, objective, seed, spec.matrix(train), train["label"].to_numpy(dtype=float), max_rounds,
        valid=(spec.matrix(valid), valid["label"].to_numpy(dtype=float)), early_stopping=early_stopping,
        threads=threads,
    )
    loss = next(iter(booster.best_score["valid_0"].values()))
    return float(loss), int(booster.best_iteration or max_rounds)


def tune(
    objective: str, spec: FeatureSpec, folds: list[tuple[pd.DataFrame, pd.DataFrame]], trials: int, seed: int,
    max_rounds: int, early_stopping: int, on_trial: Callable[[], None] | None = None, threads: int = 0,
) -> TuningResult:
    """Minimise the mean validation loss over the time folds; the defaults are always the first trial.

    objective: LightGBM objective ('binary' or 'tweedie'); its own loss is the tuning criterion,
    a proper scoring rule, so calibration and ranking both count. With trials=0 the defaults are
    only evaluated, to choose the number of rounds.
    """
    rounds_of: dict[int, int] = {}

    def evaluate(trial: optuna.Trial) -> float:
        params = _search_space(trial, objective) if trial.number > 0 else dict(DEFAULT_PARAMS)
        losses, rounds = [], []
        for step, (train, valid) in enumerate(folds):
            loss, best_rounds = _fold_loss(params, objective, spec, train, valid, max_rounds, early_stopping, seed,
                                                threads)
            losses.append(loss)
            rounds.append(best_rounds)
            trial.report(float(np.mean(losses)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        rounds_of[trial.number] = int(np.mean(rounds))
        return float(np.mean(losses))

    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
    )
    callbacks = [lambda study, trial: on_trial()] if on_trial else []
    study.optimize(evaluate, n_trials=max(1, trials), callbacks=callbacks)
    best = study.best_trial
    params = dict(DEFAULT_PARAMS) if best.number == 0 else {**_fixed(), **best.params}
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    history = [t.value for t in study.trials if t.value is not None]
    return TuningResult(params, rounds_of[best.number], float(best.value), len(study.trials), pruned, history,
                        rounds_of.get(0, rounds_of[best.number]))


def _fixed() -> dict[str, Any]:
    return {"bagging_freq": 1}
