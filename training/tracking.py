"""One MLflow run per training: params, config, data fingerprint, metrics, plots, the registered bundle
and the champion decision (both models scored on validation rows neither was trained on)."""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, replace
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature

from serving.bundle import Bundle, BundleError, LifetagPyfunc
from serving import registry
from training.evaluate import (
    calibration_curve,
    calibration_plot,
    classifier_metrics,
    cumulative_gain_curve,
    cumulative_gain_plot,
    feature_importance_plot,
    ltv_decile_plot,
    ltv_metrics,
)
from training.pipeline import TargetResult, TrainResult, validation_score

__all__ = ["CURVES_ARTIFACT", "Comparison", "Recorded", "baseline_score", "chance_score", "compare_with_champion",
           "model_signature", "record_training", "validation_curves"]

_BASELINES = {"classifier": ("recency_heuristic", "bgnbd"), "regressor": ("run_rate", "bgnbd_gg")}
_KEY = {"classifier": "roc_auc", "regressor": "gini_normalised"}  # the metric validation_score takes
_CHANCE = {"classifier": 0.5, "regressor": 0.0}
CURVES_ARTIFACT = "validation/curves.json"  # the classifiers' calibration and gain curves on the held-out cut-off


@dataclass
class Recorded:
    """Where a training was recorded and what happened to the champion alias."""

    run_id: str
    version: str
    promotion: registry.Promotion
    champion_score: float | None


def record_training(result: TrainResult, promote: bool, trials: int, tolerance: float = 0.0) -> Recorded:
    """Log the run, register the bundle as a new `lifetag` version, and move `champion` if it earns it.

    The version must beat the baselines on its validation examples, and the current champion on
    the validation rows neither model was trained on (see `compare_with_champion`).
    """
    comparison = compare_with_champion(result.results)
    with registry.start_run(run_name=f"train as_of {result.as_of.date()}") as run:
        _log_params(result, trials)
        _log_metrics(result)
        registry.log_figures(_figures(result))
        mlflow.log_dict(validation_curves(result), CURVES_ARTIFACT)
        with tempfile.TemporaryDirectory() as folder:
            result.bundle.save(folder)
            version = registry.register_bundle(
                LifetagPyfunc(), artifacts={"bundle": folder}, code_paths=None, input_example=None,
                signature=model_signature(result),
                metadata={"as_of": result.bundle.as_of, "validation_score": result.score},
            )
        if comparison is not None and comparison.champion_score is not None:
            mlflow.log_metrics({"promotion.new_score": comparison.new_score,
                                "promotion.champion_score": comparison.champion_score})
        promotion = registry.decide_and_promote(
            str(version.version), comparison.new_score if comparison else result.score,
            comparison.champion_score if comparison else None, promote, tolerance,
            validation_score=result.score, baseline_score=baseline_score(result.results),
            chance_score=chance_score(result.results), compared_on=comparison.compared_on if comparison else "",
        )
        mlflow.set_tags({"model_version": version.version, "promoted": str(promotion.promoted)})
    return Recorded(run.info.run_id, str(version.version), promotion,
                    comparison.champion_score if comparison else None)


@dataclass
class Comparison:
    """The new version and the champion scored alike on validation rows neither was trained on."""

    new_score: float | None
    champion_score: float | None
    compared_on: str  # which rows, in words (or why there are none)


def compare_with_champion(results: dict[str, TargetResult]) -> Comparison | None:
    """Score both on this training's validation rows whose cut-off is on or after the champion's as_of.

    Those rows' outcomes lie after everything the champion was trained (and calibrated) on, and
    the new version only validated on them. The new version's predictions are the cross-fitted
    ones its validation table shows; the champion's are as it serves. None without a champion.
    """
    current = registry.champion_version()
    if current is None:
        return None
    try:
        champion = registry.load_bundle().unwrap_python_model().bundle
    except registry.RegistryError as error:
        return Comparison(None, None, f"champion v{current.version} could not be loaded ({error})")
    seen_until = pd.Timestamp(champion.as_of)
    new, old, described = {}, {}, []
    for name, r in results.items():
        if r.valid is None or r.valid_features is None or "model" not in r.metrics or name not in champion.models:
            continue
        unseen = (r.valid["cutoff"] >= seen_until).to_numpy()
        if not unseen.any():
            continue
        try:
            predicted = _served(champion, name, r.valid_features[unseen])
        except (BundleError, KeyError, ValueError):
            return Comparison(None, None, f"champion v{current.version} cannot score these features")
        metric = classifier_metrics if r.target.kind == "classifier" else ltv_metrics
        labels = r.valid.loc[unseen, "label"]
        new[name] = replace(r, metrics={"model": metric(labels, r.valid.loc[unseen, "model"])})
        old[name] = replace(r, metrics={"model": metric(labels, predicted)})
        described.append(f"{name} {r.target.horizon_days}d: {int(unseen.sum()):,} examples")
    if not new:
        return Comparison(None, None, f"no validation example comes after champion v{current.version}'s as_of "
                                      f"{champion.as_of} (it was trained on all of them), so the two cannot be "
                                      "compared on data neither has seen")
    return Comparison(validation_score(new), validation_score(old),
                      f"rows neither model was trained on ({', '.join(described)})")


def _served(bundle: Bundle, target: str, features: pd.DataFrame) -> np.ndarray:
    """One target's predictions of `bundle` as it serves, for validation examples (their bg_* columns rebuilt)."""
    base = features.drop(columns=[c for c in features.columns if c.startswith(("bg_", "gg_"))])
    enriched = bundle.bg_columns(base)
    return bundle.models[target].predict(bundle.spec.matrix(enriched), enriched)


def baseline_score(results: dict[str, TargetResult]) -> float | None:
    """The best baseline per target, averaged as `validation_score` averages the models (None: no baseline)."""
    best = {}
    for name, r in results.items():
        scored = [validation_score({name: replace(r, metrics={"model": r.metrics[b]})})
                  for b in _BASELINES[r.target.kind] if b in r.metrics]
        scored = [v for v in scored if np.isfinite(v)]
        if scored:
            best[name] = replace(r, metrics={"model": {_KEY[r.target.kind]: max(scored)}})
    return validation_score(best) if best else None


def chance_score(results: dict[str, TargetResult]) -> float:
    """What `validation_score` gives predictions that know nothing (ROC AUC 0.5, Gini 0)."""
    return validation_score({name: replace(r, metrics={"model": {_KEY[r.target.kind]: _CHANCE[r.target.kind]}})
                             for name, r in results.items()})


# Columns of a training example that are not features: the cut-off, the outcome, and the BG/NBD and
# Gamma-Gamma columns the bundle computes itself from its stored parameters.
_NOT_INPUTS = ("cutoff", "label", "future_orders", "future_spend")


def model_signature(result: TrainResult) -> ModelSignature:
    """The pyfunc's signature: a features frame (`lifetag features` columns) in, the three predictions out.

    Taken from the validation examples' features, so the types are those the bundle was trained on;
    the service and MLflow check requests against it.
    """
    examples = next((r.valid_features for r in result.results.values() if r.valid_features is not None), None)
    if examples is None or not len(examples):
        raise ValueError("no validation examples to take the model's input columns from")
    inputs = examples[[c for c in examples.columns
                       if c not in _NOT_INPUTS and not c.startswith(("bg_", "gg_"))]].head(500).reset_index(drop=True)
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold missing values: the counts are never missing
        # for a customer with an order (the only rows the model scores), and `lifetag features`
        # writes them as integers, which a double column would refuse.
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column")
        return infer_signature(inputs, result.bundle.predict(inputs))


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
        if r.target.kind == "classifier" and not r.fallback_reason:
            params[f"{name}.calibration"] = r.model.calibrator.method if r.model.calibrator else "none"
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


def validation_curves(result: TrainResult) -> dict[str, Any]:
    """The calibration and cumulative gain curves of each classifier target on its held-out validation
    cut-off, for the model and each baseline: the numbers behind the run's plots, which `lifetag report`
    draws. {target: {"horizon_days", "cutoff", "examples", "positive_rate", "models": {name:
    {"calibration": ..., "gain": ...}}}}; targets without validation rows (fallbacks) are left out."""
    curves: dict[str, Any] = {}
    for name, r in result.results.items():
        if r.valid is None or r.target.kind != "classifier" or not 0 < r.valid["label"].sum() < len(r.valid):
            continue
        labels = r.valid["label"].to_numpy()
        models = {c: {"calibration": calibration_curve(labels, r.valid[c]),
                      "gain": cumulative_gain_curve(labels, r.valid[c])}
                  for c in ("model", *_BASELINES["classifier"]) if c in r.valid and np.isfinite(r.valid[c]).all()}
        curves[name] = {"horizon_days": r.target.horizon_days, "cutoff": str(pd.Timestamp(r.valid["cutoff"].max()).date()),
                        "examples": int(len(labels)), "positive_rate": float(labels.mean()), "models": models}
    return curves


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
