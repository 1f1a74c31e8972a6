"""One MLflow run per training: params, config, data fingerprint, metrics, plots, the registered bundle
and the champion decision (the champion is re-scored on this run's validation data to compare)."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np

from serving.bundle import Bundle, BundleError, LifetagPyfunc
from serving import registry
from training.evaluate import (
    calibration_plot,
    classifier_metrics,
    cumulative_gain_plot,
    feature_importance_plot,
    ltv_decile_plot,
    ltv_metrics,
)
from training.pipeline import TargetResult, TrainResult, validation_score

__all__ = ["Recorded", "bundle_score_on", "champion_score_on", "record_training"]

_BASELINES = {"classifier": ("recency_heuristic", "bgnbd"), "regressor": ("run_rate", "bgnbd_gg")}


@dataclass
class Recorded:
    """Where a training was recorded and what happened to the champion alias."""

    run_id: str
    version: str
    promotion: registry.Promotion
    champion_score: float | None


def record_training(result: TrainResult, promote: bool, trials: int, tolerance: float = 0.0) -> Recorded:
    """Log the run, register the bundle as a new `lifetag` version, and move `champion` if it is no worse.

    Both sides of the comparison are scored alike: each bundle as it will serve (final calibrators)
    on this training's validation examples.
    """
    champion_score = champion_score_on(result.results)
    new_score = bundle_score_on(result.bundle, result.results) if champion_score is not None else result.score
    with registry.start_run(run_name=f"train as_of {result.as_of.date()}") as run:
        _log_params(result, trials)
        _log_metrics(result)
        registry.log_figures(_figures(result))
        with tempfile.TemporaryDirectory() as folder:
            result.bundle.save(folder)
            version = registry.register_bundle(
                LifetagPyfunc(), artifacts={"bundle": folder}, code_paths=None, input_example=None,
                metadata={"as_of": result.bundle.as_of, "validation_score": result.score},
            )
        if champion_score is not None:
            mlflow.log_metrics({"promotion.new_score": new_score, "promotion.champion_score": champion_score})
        promotion = registry.decide_and_promote(str(version.version), new_score, champion_score, promote, tolerance)
        mlflow.set_tags({"model_version": version.version, "promoted": str(promotion.promoted)})
    return Recorded(run.info.run_id, str(version.version), promotion, champion_score)


def champion_score_on(results: dict[str, TargetResult]) -> float | None:
    """The current champion's validation score on this training's validation examples (None: no champion or incompatible)."""
    if registry.champion_version() is None:
        return None
    try:
        champion = registry.load_bundle().unwrap_python_model().bundle
    except registry.RegistryError:
        return None
    return bundle_score_on(champion, results)


def bundle_score_on(bundle: Bundle, results: dict[str, TargetResult]) -> float | None:
    """A bundle's validation score (as it would serve) on the validation examples of `results`; None if incompatible."""
    scored: dict[str, TargetResult] = {}
    for name, result in results.items():
        if result.valid_features is None or name not in bundle.models:
            return None
        try:
            matrix = bundle.spec.matrix(result.valid_features)
            predicted = bundle.models[name].predict(matrix, result.valid_features)
        except (BundleError, KeyError, ValueError):
            return None
        labels = result.valid_features["label"]
        metric = classifier_metrics if result.target.kind == "classifier" else ltv_metrics
        scored[name] = TargetResult(result.target, bundle.models[name], result.cutoffs,
                                    metrics={"model": metric(labels, predicted)})
    return validation_score(scored)


def _log_params(result: TrainResult, trials: int) -> None:
    bundle = result.bundle
    params: dict[str, Any] = {"as_of": bundle.as_of, "trials": trials, "horizons": bundle.horizons,
                              "features": len(result.spec.columns)}
    params.update({f"data.{k}": v for k, v in result.fingerprint.items()})
    params.update({"intake.rows_read": result.intake.rows_read, "intake.rows_quarantined": result.intake.rows_quarantined})
    for name, r in result.results.items():
        params[f"{name}.model"] = r.model.kind + ("" if r.model.offset == "none" else f"+{r.model.offset}_offset")
        params[f"{name}.cutoffs"] = ",".join(str(c.date()) for c in r.cutoffs)
        if r.tuning:
            params[f"{name}.rounds"] = r.tuning.rounds
            params.update({f"{name}.{k}": v for k, v in r.tuning.params.items()})
        if r.chosen:
            params[f"{name}.chosen"] = r.chosen
        if r.level:
            params[f"{name}.level"] = r.level
            params[f"{name}.scale"] = r.model.scale
        if r.fallback_reason:
            mlflow.set_tag(f"fallback.{name}", r.fallback_reason)
    if result.customers is not None and result.customers.customers is not None:
        report = result.customers.customers
        params.update({"customers.rows_read": report.rows_read, "customers.rows_quarantined": report.rows_quarantined,
                       "customers.unmatched_buyers": result.unmatched_customers})
    if result.first_purchase is not None:
        mlflow.set_tag("first_purchase", result.first_purchase.note)
        params.update({f"first_purchase.{k}": v for k, v in result.first_purchase.rows.items()})
        if result.first_purchase.chosen:
            params["first_purchase.chosen"] = result.first_purchase.chosen
    mlflow.log_params(params)
    mlflow.log_dict(bundle.config, "config.yaml")
    mlflow.log_dict(result.fingerprint, "data_fingerprint.json")


def _log_metrics(result: TrainResult) -> None:
    metrics = {"validation_score": result.score}
    for name, r in result.results.items():
        for model, values in r.metrics.items():
            metrics.update({f"{name}.{model}.{k}": float(v) for k, v in values.items() if np.isfinite(v)})
        for candidate, values in r.candidates.items():
            metrics.update({f"{name}.candidate.{candidate}.{k}": float(v) for k, v in values.items() if np.isfinite(v)})
        metrics.update({f"{name}.level_check.{k}": float(v) for k, v in r.level_check.items()})
        metrics.update({f"{name}.rounds_check.{k}": float(v) for k, v in r.rounds_check.items()})
        if r.explainer_r2 is not None:
            metrics[f"{name}.reasons_explainer_r2"] = r.explainer_r2
        if r.tuning:
            metrics[f"{name}.tuning.best_loss"] = r.tuning.best_loss
            metrics[f"{name}.tuning.pruned_trials"] = r.tuning.pruned
    if result.first_purchase is not None:
        for model, values in result.first_purchase.metrics.items():
            metrics.update({f"first_purchase.{model}.{k}": float(v) for k, v in values.items() if np.isfinite(v)})
    mlflow.log_metrics(metrics)


def _figures(result: TrainResult) -> dict[str, Any]:
    figures = {}
    for name, r in result.results.items():
        if r.valid is None:
            continue
        columns = [c for c in ("model", *_BASELINES[r.target.kind]) if c in r.valid and np.isfinite(r.valid[c]).all()]
        predictions = {c: r.valid[c].to_numpy() for c in columns}
        title = f"{name} ({r.target.horizon_days} days), validation cut-off"
        if r.target.kind == "classifier":
            figures[f"{name}_calibration"] = calibration_plot(r.valid["label"], predictions, f"Calibration: {title}")
            figures[f"{name}_cumulative_gain"] = cumulative_gain_plot(r.valid["label"], predictions, f"Cumulative gain: {title}")
        else:
            figures[f"{name}_by_decile"] = ltv_decile_plot(r.valid["label"], predictions, f"LTV by predicted decile: {title}")
        if r.importance is not None and len(r.importance):
            figures[f"{name}_feature_importance"] = feature_importance_plot(r.importance, f"Feature importance (gain): {name}")
    return figures
