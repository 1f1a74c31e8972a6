"""The model bundle: everything that turns a features frame into churn_risk, repurchase_prob and ltv.

One bundle holds the three target models, their calibrators, the feature list, the BG/NBD +
Gamma-Gamma parameters behind the `bg_*` columns, the RFM cut points, the category re-buy intervals
behind `categories_due` and the training config: everything learned from history that scoring
needs, fixed at training time. It is saved as plain files (JSON and LightGBM model text, no
pickles) and registered in MLflow as a pyfunc (`LifetagPyfunc`), so batch scoring, notebooks and
the HTTP service all load the same thing.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightgbm as lgb
import mlflow.pyfunc
import numpy as np
import pandas as pd

from configs.errors import LifetagError
from features.clv import ClvBaseline, add_bg_columns

__all__ = ["Bundle", "BundleError", "Calibrator", "FeatureSpec", "LifetagPyfunc", "TargetModel", "OUTPUTS",
           "booster_predict", "load_model"]

OUTPUTS = ("churn_risk", "repurchase_prob", "ltv")
BUNDLE_FILE = "bundle.json"
REBUY_FILE = "rebuy_intervals.json"
CLUSTERS_FILE = "clusters.json"


class BundleError(LifetagError, ValueError):
    """Features that do not fit the bundle (missing columns), or a bundle folder that is not complete."""


@dataclass
class FeatureSpec:
    """Model inputs: numeric columns, and categorical columns with the categories seen in training."""

    numeric: list[str]
    categorical: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> "FeatureSpec":
        """Record the categories of the categorical columns as seen in `frame`."""
        cats = {c: sorted(str(v) for v in frame[c].dropna().unique()) for c in categorical}
        return cls(numeric=list(numeric), categorical=cats)

    @property
    def columns(self) -> list[str]:
        """All input columns, in model order."""
        return self.numeric + list(self.categorical)

    def matrix(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The model input matrix; categories unseen in training become missing."""
        return pd.DataFrame(self._columns(frame), index=frame.index)

    def array(self, frame: pd.DataFrame) -> np.ndarray:
        """The model matrix of `frame` as the float array LightGBM makes of it to predict: numbers as they are,
        categories as their codes in the training categories, missing (and unseen) as NaN."""
        out = np.empty((len(frame), len(self.columns)), dtype="float64")
        for i, values in enumerate(self._numeric(frame).values()):
            out[:, i] = values
        for i, (column, categories) in enumerate(self.categorical.items(), start=len(self.numeric)):
            out[:, i] = _category_codes(frame[column], categories)
        return out

    def _columns(self, frame: pd.DataFrame) -> dict[str, np.ndarray | pd.Categorical]:
        """The model's input columns of `frame`, in model order: float arrays and categoricals."""
        data: dict[str, np.ndarray | pd.Categorical] = dict(self._numeric(frame))
        for column, categories in self.categorical.items():
            codes = _category_codes(frame[column], categories)
            data[column] = pd.Categorical.from_codes(np.where(np.isnan(codes), -1, codes).astype("int64"),
                                                     categories=categories)
        return data

    def _numeric(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The numeric input columns of `frame` as float arrays (anything not a number missing)."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise BundleError(
                f"the features do not match the model: {len(missing)} column(s) the model needs are missing "
                f"({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}). Build features with the same "
                "lifetag version and config the model was trained with."
            )
        numeric = frame[self.numeric]
        if all(pd.api.types.is_numeric_dtype(kind) for kind in numeric.dtypes):
            # One conversion for the whole block: per column it costs a third of tagging one customer online.
            block = numeric.to_numpy(dtype="float64", na_value=np.nan)
            return {c: block[:, i] for i, c in enumerate(self.numeric)}
        return {c: pd.to_numeric(frame[c], errors="coerce").astype("float64").to_numpy() for c in self.numeric}


def _category_codes(values: pd.Series, categories: list[str]) -> np.ndarray:
    """Each value's position in `categories`, compared as text, as a float; missing values and categories
    unseen in training NaN. The one rule of both `FeatureSpec.array` and `FeatureSpec.matrix` (a lookup:
    series operations for it cost more than the lookup for one customer)."""
    position = {category: float(i) for i, category in enumerate(categories)}
    missing = values.isna().to_numpy()
    return np.array([np.nan if gone else position.get(str(value), np.nan)
                     for value, gone in zip(values.tolist(), missing)], dtype="float64")


@dataclass
class Calibrator:
    """Map from raw to calibrated probability, fitted on held-out predictions.

    `isotonic`: piecewise linear between the fitted steps (x, y); it can tie large groups of
    customers on one value and reach exactly 0 or 1. `logistic`: p = sigmoid(a * logit(raw) + b)
    with a >= 0 (coef = [a, b]); strictly keeps the model's order and never reaches 0 or 1.
    """

    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    method: Literal["isotonic", "logistic"] = "isotonic"
    coef: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, raw: np.ndarray, outcome: np.ndarray,
            method: Literal["isotonic", "logistic"] = "isotonic") -> "Calibrator":
        """Fit on held-out (validation) predictions and outcomes, never on training data.

        `logistic` needs probabilities as `raw`; `isotonic` takes any score.
        """
        raw, outcome = np.asarray(raw, dtype=float), np.asarray(outcome, dtype=float)
        if method == "logistic":
            return cls(method="logistic", coef=_fit_logistic(_logit(raw), outcome))
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, outcome)
        return cls(x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities."""
        if self.method == "logistic":
            a, b = self.coef
            return 1 / (1 + np.exp(-(a * _logit(np.asarray(raw, dtype=float)) + b)))
        return np.interp(raw, self.x, self.y)


# A request's few rows: waking LightGBM's OpenMP threads costs more than predicting them on one.
_FEW_ROWS = 64


def booster_predict(booster: lgb.Booster, matrix: pd.DataFrame | np.ndarray, **kwargs: Any) -> np.ndarray:
    """`booster.predict(matrix, **kwargs)`, on one thread when `matrix` has a few rows (same numbers)."""
    if len(matrix) <= _FEW_ROWS:
        kwargs["num_threads"] = 1
    return booster.predict(matrix, **kwargs)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _fit_logistic(z: np.ndarray, y: np.ndarray) -> list[float]:
    """Slope and intercept of a one-feature logistic regression by Newton steps, slope kept >= 0.

    A negative slope would reverse the model's order; a calibration must never do that, so the
    slope is then 0 (everyone gets the base rate) rather than negative.
    """
    base = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6)) if len(y) else 0.5
    a, b = 1.0, 0.0
    X = np.column_stack([z, np.ones_like(z)])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ np.array([a, b]))))
        w = p * (1 - p) + 1e-9
        gradient = X.T @ (y - p)
        hessian = (X * w[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        a, b = a + step[0], b + step[1]
        if not np.isfinite([a, b]).all():
            break
        if np.abs(step).max() < 1e-10:
            break
    if not np.isfinite([a, b]).all() or a < 0:
        return [0.0, float(np.log(base / (1 - base)))]
    return [float(a), float(b)]


@dataclass
class TargetModel:
    """The model of one target: LightGBM (one or two boosters) or the BG/NBD fallback."""

    target: Literal["churn", "repurchase", "ltv"]
    horizon_days: int
    kind: Literal["lgbm", "hurdle", "bgnbd"]
    boosters: dict[str, str] = field(default_factory=dict)
    calibrator: Calibrator | None = None
    note: str = ""
    # "bgnbd": boosting starts from the BG/NBD prediction and learns corrections to it, so the
    # prediction level follows BG/NBD's extrapolation for customers older than any in training.
    offset: Literal["none", "bgnbd"] = "none"
    # LTV only: a constant factor on every prediction, fixed at training time, whatever the kind. 1.0 keeps
    # the model's own level; otherwise it sets the level of the training population at as_of to BG/NBD +
    # Gamma-Gamma's, chosen when a long-gap out-of-time check shows the model's level drifts, and/or
    # carries last year's miss over the same calendar window (training.ltv_last_year_level).
    scale: float = 1.0
    _loaded: dict[str, lgb.Booster] = field(default_factory=dict, repr=False, compare=False)

    def booster(self, name: str) -> lgb.Booster:
        """A booster, parsed once from its model text."""
        if name not in self._loaded:
            self._loaded[name] = lgb.Booster(model_str=self.boosters[name])
        return self._loaded[name]

    def init_score(self, bg: pd.DataFrame) -> np.ndarray | None:
        """The starting point of boosting on the link scale (None without an offset)."""
        if self.offset == "none":
            return None
        prior = np.nan_to_num(self._predict_bgnbd(bg), nan=0.5 if self.target != "ltv" else 1.0)
        if self.target == "ltv":
            return np.log(np.clip(prior, 0.01, None))
        prior = np.clip(prior, 1e-4, 1 - 1e-4)
        return np.log(prior / (1 - prior))

    def raw_predict(self, matrix: pd.DataFrame, bg: pd.DataFrame) -> np.ndarray:
        """Uncalibrated predictions (probability or value) for one target."""
        return self.unscaled_predict(matrix, bg) * self.scale

    def unscaled_predict(self, matrix: pd.DataFrame, bg: pd.DataFrame) -> np.ndarray:
        """The model's own predictions (the boosters', or BG/NBD + Gamma-Gamma's), before the LTV level factor."""
        if self.kind == "bgnbd":
            return self._predict_bgnbd(bg)
        if self.kind == "hurdle":
            return booster_predict(self.booster("buy"), matrix) * booster_predict(self.booster("value"), matrix)
        booster = self.booster("main")
        offset = self.init_score(bg)
        if offset is None:
            return booster_predict(booster, matrix)
        score = booster_predict(booster, matrix, raw_score=True) + offset
        return 1 / (1 + np.exp(-score)) if self.target != "ltv" else np.exp(score)

    def predict(self, matrix: pd.DataFrame, bg: pd.DataFrame) -> np.ndarray:
        """Predictions for one target from the model matrix and the `bg_*` columns."""
        raw = self.raw_predict(matrix, bg)
        return self.calibrator.apply(raw) if self.calibrator is not None else raw

    def _predict_bgnbd(self, bg: pd.DataFrame) -> np.ndarray:
        h = self.horizon_days
        if self.target == "churn":
            return bg[f"bg_p_none_{h}d"].to_numpy(dtype=float)
        if self.target == "repurchase":
            return 1.0 - bg[f"bg_p_none_{h}d"].to_numpy(dtype=float)
        return bg[f"bg_ltv_{h}d"].to_numpy(dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (boosters are stored beside it as text files)."""
        return {
            "target": self.target, "horizon_days": self.horizon_days, "kind": self.kind, "note": self.note,
            "offset": self.offset, "scale": self.scale,
            "boosters": sorted(self.boosters), "calibrator": asdict(self.calibrator) if self.calibrator else None,
        }


@dataclass
class Bundle:
    """Everything needed to score: models per target, feature spec, CLV parameters, RFM cut points, config,
    and the category re-buy intervals."""

    spec: FeatureSpec
    models: dict[str, TargetModel]
    clv: dict[str, float | None] | None
    horizons: list[int]
    config: dict[str, Any]
    rfm_cut_points: dict[str, list[float]]
    as_of: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Registered customers who have not ordered: P(first order within its horizon), when learnable.
    first_purchase: TargetModel | None = None
    first_purchase_spec: FeatureSpec | None = None
    # Shop-wide re-buy interval per category, {category: days} (features.scenarios.learn_rebuy_intervals,
    # from the history before as_of). None: a bundle saved before lifetag stored them (`rebuy_intervals`).
    rebuy_days: dict[str, float] | None = None
    # The behavioural clusters (features.clusters.ClusterModel.to_dict), learned at training time; None:
    # a bundle saved before lifetag stored them, or a shop too small to cluster (metadata says why).
    clusters: dict[str, Any] | None = None
    # Whether the boosters take `FeatureSpec.array` inputs (`inputs`), found out once.
    _array_inputs: bool | None = field(default=None, repr=False, compare=False)

    def cluster_model(self) -> Any:
        """The behavioural clusters learned at training time (a features.clusters.ClusterModel); a BundleError
        saying why and what to do when the model has none."""
        from features.clusters import ClusterModel

        if self.clusters is None:
            why = self.metadata.get("clusters_note") or "it was saved by an older lifetag that did not learn them"
            raise BundleError(f"the model (trained at as_of {self.as_of}) has no behavioural clusters: {why}. Retrain "
                              "it with `lifetag train` (clusters are learned with the model, report.clusters_k), "
                              "or score without --clusters.")
        return ClusterModel.from_dict(self.clusters)

    def rebuy_intervals(self) -> dict[str, float]:
        """The category re-buy intervals (days) that `categories_due` is counted against, learned at training time.

        A bundle saved before lifetag stored them raises a BundleError saying to retrain: one customer's
        orders cannot teach a shop-wide interval.
        """
        if self.rebuy_days is None:
            raise BundleError(
                f"the model (trained at as_of {self.as_of}) was saved by an older lifetag that did not store the "
                "category re-buy intervals behind categories_due (and the cross_sell_window tag) with the model, so "
                "it cannot tag customers from their own orders alone. Retrain it with `lifetag train`; until then "
                "only the batch `lifetag score` can use it (it learns the intervals from the orders it scores, and "
                "says so)."
            )
        return self.rebuy_days

    def predict_first_purchase(self, registered: pd.DataFrame) -> np.ndarray:
        """first_purchase_prob per row of a registered-customers frame (NaN when the bundle has no such model)."""
        if self.first_purchase is None or self.first_purchase_spec is None:
            return np.full(len(registered), np.nan)
        matrix = self.first_purchase_spec.matrix(registered)
        return self.first_purchase.predict(matrix, registered)

    def bg_columns(self, features: pd.DataFrame) -> pd.DataFrame:
        """The features with `bg_*` columns from the stored BG/NBD + Gamma-Gamma parameters."""
        baseline = ClvBaseline(**self.clv) if self.clv else None
        return add_bg_columns(features.reset_index(drop=True), baseline, self.horizons)

    def predict(self, features: pd.DataFrame) -> pd.DataFrame:
        """`customer_id`, `churn_risk`, `repurchase_prob`, `ltv` for every row of a features frame."""
        enriched = self.bg_columns(features)
        return self.predict_enriched(enriched, self.spec.matrix(enriched))

    def inputs(self, enriched: pd.DataFrame) -> pd.DataFrame | np.ndarray:
        """The model matrix of `enriched` as the boosters take it fastest: the float array of `FeatureSpec.array`
        when every booster was trained on this spec's categories (LightGBM converts a frame to that array on
        each call, a third of the time of tagging one customer online), otherwise `FeatureSpec.matrix`."""
        if self._array_inputs is None:
            categories = [list(values) for values in self.spec.categorical.values()]
            self._array_inputs = all(
                (model.booster(name).pandas_categorical or []) == categories
                for model in self.models.values() if model.kind != "bgnbd" for name in model.boosters)
        return self.spec.array(enriched) if self._array_inputs else self.spec.matrix(enriched)

    def predict_enriched(self, enriched: pd.DataFrame, matrix: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """`predict` for features that already carry the `bg_*` columns, with their model matrix (or its
        `inputs`)."""
        predicted = {_output(model.target): model.predict(matrix, enriched) for model in self.models.values()}
        predicted["ltv"] = np.clip(predicted["ltv"], 0, None)
        # Gathered, then framed once: column by column on a frame was a thirtieth of tagging one customer online.
        return pd.DataFrame({"customer_id": enriched["customer_id"].astype(str),
                             **{column: predicted[column] for column in OUTPUTS}})

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write bundle.json and one LightGBM text file per booster into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        extra = [self.first_purchase] if self.first_purchase is not None else []
        for model in [*self.models.values(), *extra]:
            for name, text in model.boosters.items():
                (folder / f"{model.target}_{name}.txt").write_text(text)
        document = {
            "spec": asdict(self.spec), "models": {k: m.to_dict() for k, m in self.models.items()},
            "clv": self.clv, "horizons": self.horizons, "config": self.config,
            "rfm_cut_points": self.rfm_cut_points, "as_of": self.as_of, "metadata": self.metadata,
            "first_purchase": ({"model": self.first_purchase.to_dict(), "spec": asdict(self.first_purchase_spec)}
                               if self.first_purchase is not None and self.first_purchase_spec is not None else None),
        }
        (folder / BUNDLE_FILE).write_text(json.dumps(document, indent=2, default=str))
        if self.rebuy_days is not None:
            (folder / REBUY_FILE).write_text(json.dumps(self.rebuy_days, indent=2))
        if self.clusters is not None:
            (folder / CLUSTERS_FILE).write_text(json.dumps(self.clusters, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> "Bundle":
        """Read a bundle written by `save`."""
        folder = Path(folder)
        try:
            document = json.loads((folder / BUNDLE_FILE).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"{folder}: not a lifetag model bundle ({exc}).") from None
        def model(info: dict[str, Any]) -> TargetModel:
            boosters = {name: (folder / f"{info['target']}_{name}.txt").read_text() for name in info["boosters"]}
            # Bundles before the logistic calibration stored only x and y (isotonic).
            calibrator = Calibrator(**info["calibrator"]) if info["calibrator"] else None
            return TargetModel(info["target"], info["horizon_days"], info["kind"], boosters, calibrator,
                               info["note"], info.get("offset", "none"), info.get("scale", 1.0))

        models = {key: model(info) for key, info in document["models"].items()}
        spec = FeatureSpec(**document["spec"])
        first = document.get("first_purchase")
        return cls(spec, models, document["clv"], document["horizons"], document["config"],
                   document["rfm_cut_points"], document["as_of"], document.get("metadata", {}),
                   model(first["model"]) if first else None, FeatureSpec(**first["spec"]) if first else None,
                   _load_rebuy_days(folder), _load_clusters(folder))


def _load_clusters(folder: Path) -> dict[str, Any] | None:
    """The stored behavioural clusters; None when the bundle has none (no file)."""
    path = folder / CLUSTERS_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable clusters file ({exc}).") from None


def _load_rebuy_days(folder: Path) -> dict[str, float] | None:
    """The stored re-buy intervals; None when the bundle predates them (no file)."""
    path = folder / REBUY_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text())
        return {str(category): float(days) for category, days in document.items()}
    except (OSError, json.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: not the bundle's category re-buy intervals ({exc}); the bundle folder is "
                          "damaged: save or register the model again.") from None


def _output(target: str) -> str:
    return {"churn": "churn_risk", "repurchase": "repurchase_prob", "ltv": "ltv"}[target]


class LifetagPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper: given a features frame, returns churn_risk, repurchase_prob and ltv."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load the bundle files logged with the model."""
        self.bundle = Bundle.load(context.artifacts["bundle"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Scores for each row of a `features.build` frame."""
        return self.bundle.predict(model_input)


def load_model(uri: str | None) -> tuple[Bundle, str]:
    """The bundle at `uri` and its version label: a registry URI (default the champion) or a bundle folder."""
    if uri and Path(uri).is_dir():
        try:
            return Bundle.load(uri), f"bundle:{Path(uri).resolve().name}"
        except (BundleError, OSError, KeyError) as exc:
            raise BundleError(f"--model {uri}: not a usable lifetag bundle folder ({exc}).") from None
    from serving import registry

    target = uri or registry.CHAMPION_URI
    try:
        model = registry.load_bundle(target)
    except registry.RegistryError as exc:
        raise BundleError(f"--model {target}: {exc}") from None
    bundle = model.unwrap_python_model().bundle
    return bundle, registry.version_of(target)
