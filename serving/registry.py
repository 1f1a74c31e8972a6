"""The MLflow side of training: where runs and models live, one run per training, the `champion` alias.

State lives in an embedded MLflow store under ``LIFETAG_HOME`` (default ``./.lifetag``):

- tracking and model registry: ``sqlite:///<LIFETAG_HOME, absolute>/mlflow.db``;
- artifacts (plots, model bundles): ``<LIFETAG_HOME, absolute>/mlartifacts``.

Set ``MLFLOW_TRACKING_URI`` (and, if the registry is elsewhere, ``MLFLOW_REGISTRY_URI``) to use a
team server instead; artifacts then go where that server puts them (a ``sqlite:///`` URI, which
has no server, keeps them in ``mlartifacts`` beside the database file).

Every training is one run in the experiment ``lifetag`` and registers one version of the model
``lifetag``. The alias ``champion`` is the deployment contract: scoring loads
``models:/lifetag@champion``, and `decide_and_promote` moves the alias only to a version that is
no worse on validation than the current champion, unless forced.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.utils import logging_utils

from features.engine import lifetag_home

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "CHAMPION",
    "EXPERIMENT",
    "MODEL_NAME",
    "Promotion",
    "RegistryError",
    "champion_version",
    "configure",
    "data_fingerprint",
    "decide_and_promote",
    "load_bundle",
    "log_figures",
    "register_bundle",
    "start_run",
    "tracking_uri",
]

EXPERIMENT = "lifetag"
MODEL_NAME = "lifetag"
CHAMPION = "champion"
CHAMPION_URI = f"models:/{MODEL_NAME}@{CHAMPION}"

# mlflow.set_tracking_uri / set_registry_uri also write MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI
# into os.environ (so that subprocesses inherit them). What configure() wrote there itself is
# remembered, so that only a value the user set counts as an override.
_written: dict[str, str] = {}

# What the bundle imports at prediction time. Pinned to the versions installed at training so
# that MLflow does not infer requirements by loading the model in a subprocess (slow, noisy).
BUNDLE_PACKAGES = (
    "lightgbm",
    "scikit-learn",
    "pandas",
    "numpy",
    "duckdb",
    "pyarrow",
    "pydantic",
    "pyyaml",
    "mlflow",
    "cloudpickle",  # serialises the PythonModel; a different major version may not unpickle it
)


class RegistryError(RuntimeError):
    """A model or run that lifetag needs from MLflow is missing or unusable."""


def tracking_uri() -> str:
    """The tracking URI lifetag uses: $MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    return _set_by_user("MLFLOW_TRACKING_URI") or f"sqlite:///{_db_path().as_posix()}"


def configure() -> str:
    """Point MLflow's tracking and registry at `tracking_uri()` and quieten it; returns the URI.

    Creates ``LIFETAG_HOME`` when the embedded store is used. Safe to call more than once, and
    picks up changes of ``LIFETAG_HOME`` or ``MLFLOW_TRACKING_URI`` since the last call.
    """
    _quieten_mlflow()
    uri = tracking_uri()
    registry_uri = _set_by_user("MLFLOW_REGISTRY_URI") or uri
    if not _set_by_user("MLFLOW_TRACKING_URI"):
        _db_path().parent.mkdir(parents=True, exist_ok=True)
        _written["MLFLOW_TRACKING_URI"] = uri
    if not _set_by_user("MLFLOW_REGISTRY_URI"):
        _written["MLFLOW_REGISTRY_URI"] = registry_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry_uri)
    _create_store_once(uri, registry_uri)
    return uri


_created: set[tuple[str, str]] = set()


def _create_store_once(uri: str, registry_uri: str) -> None:
    """Open (creating and migrating if new) a SQLite store under a file lock, once per process and store.

    MLflow creates a new SQLite store's tables and runs its schema migrations on first use, with
    nothing to stop two processes doing it at once: two first trainings on a fresh LIFETAG_HOME
    then fail one of them after training ("duplicate column name: step") and lose its model. The
    lock beside the database makes the second wait until the first has finished the migration.
    """
    if (uri, registry_uri) in _created or not uri.startswith("sqlite:///"):
        return
    from serving.locks import store_lock

    database = Path(uri.removeprefix("sqlite:///").partition("?")[0])
    with store_lock(database.parent):
        client = MlflowClient(tracking_uri=uri, registry_uri=registry_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _created.add((uri, registry_uri))


def start_run(run_name: str | None = None, tags: dict[str, Any] | None = None) -> mlflow.ActiveRun:
    """Start a run in the ``lifetag`` experiment; use as ``with start_run(...) as run:``.

    The run ends when the ``with`` block does, marked FAILED if the block raised.
    """
    configure()
    experiment_id = _experiment_id()
    # Make `lifetag` the active experiment too, so that a stray fluent call (mlflow.log_metric
    # outside this run) lands here, not in the `Default` experiment whose artifacts go to ./mlruns.
    mlflow.set_experiment(experiment_id=experiment_id)
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)


def data_fingerprint(
    frame: pd.DataFrame, customer_col: str = "customer_id", ts_col: str = "order_ts"
) -> dict[str, Any]:
    """Summarise order lines so a run records exactly which data it was trained on.

    Returns ``rows``, ``customers`` (distinct ``customer_col`` values), ``first_order_ts`` and
    ``last_order_ts`` (ISO 8601 text, None when there are no timestamps) and ``content_sha256``.

    The hash covers column names, dtypes and every value, and does not depend on the order of
    rows or of columns: each row is hashed with `pandas.util.hash_pandas_object` (columns taken in
    name order, index ignored), the row hashes are sorted, and SHA-256 is taken over the result.
    The same data exported in another order gives the same hash; changing, adding or removing a
    row (duplicates included) or retyping a column changes it.
    """
    missing = [col for col in (customer_col, ts_col) if col not in frame.columns]
    if missing:
        raise ValueError(
            f"data_fingerprint: column(s) {missing} not found; the frame has {list(frame.columns)}. "
            "Pass customer_col= and ts_col= with the canonical column names."
        )
    timestamps = frame[ts_col].dropna()
    return {
        "rows": len(frame),
        "customers": int(frame[customer_col].nunique()),
        "first_order_ts": pd.Timestamp(timestamps.min()).isoformat() if len(timestamps) else None,
        "last_order_ts": pd.Timestamp(timestamps.max()).isoformat() if len(timestamps) else None,
        "content_sha256": _content_hash(frame),
    }


def log_figures(figures: dict[str, Figure], folder: str = "plots") -> None:
    """Log each figure as ``<folder>/<name>.png`` in the active run, then close it."""
    _require_active_run("log_figures")
    import matplotlib.pyplot as plt

    for name, figure in figures.items():
        filename = name if name.endswith(".png") else f"{name}.png"
        try:
            mlflow.log_figure(figure, f"{folder}/{filename}")
        finally:
            plt.close(figure)


def register_bundle(
    python_model: mlflow.pyfunc.PythonModel,
    artifacts: dict[str, str],
    code_paths: list[str] | None,
    input_example: pd.DataFrame | None,
    signature: Any = None,
    metadata: dict[str, Any] | None = None,
) -> ModelVersion:
    """Log the bundle as the pyfunc ``model`` of the active run and register it as a new version.

    ``python_model`` is pickled by reference to its class: the class's module must be importable
    wherever the bundle is loaded (installed with lifetag, or shipped in ``code_paths``).
    ``artifacts`` maps names to local files, copied into the bundle and handed back in
    ``context.artifacts`` at load time. Returns the new `ModelVersion` (``.version`` is its number).
    """
    _require_active_run("register_bundle")
    with warnings.catch_warnings():
        if signature is not None and input_example is None:
            # A signature is enough for MLflow and the service to check requests; an input example
            # would store real customers' rows in the registry, so lifetag does not log one.
            warnings.filterwarnings("ignore", message=".*An input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=python_model,
            artifacts=artifacts,
            code_paths=code_paths,
            input_example=input_example,
            signature=signature,
            metadata=metadata,
            pip_requirements=_pinned_requirements(),
        )
    # Registering separately from log_model only so its two progress lines ("Successfully
    # registered model ...", "Created version ...", printed, not logged) can be silenced: the
    # caller reports the outcome in its own words. Warnings from log_model stay visible.
    with _mlflow_event_stream_off():
        return mlflow.register_model(info.model_uri, MODEL_NAME)


def champion_version() -> ModelVersion | None:
    """The model version the ``champion`` alias points at, or None when there is none yet."""
    configure()
    client = MlflowClient()
    try:
        registered = client.get_registered_model(MODEL_NAME)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = registered.aliases.get(CHAMPION)
    return None if version is None else client.get_model_version(MODEL_NAME, str(version))


@dataclass(frozen=True)
class Promotion:
    """The outcome of `decide_and_promote`; ``reason`` is a sentence for the person training."""

    promoted: bool
    version: str
    previous: str | None
    reason: str


def decide_and_promote(
    version: str,
    new_score: float,
    champion_score: float | None,
    force: bool,
    tolerance: float = 0.0,
    *,
    validation_score: float | None = None,
    baseline_score: float | None = None,
    chance_score: float | None = None,
    compared_on: str = "",
) -> Promotion:
    """Move ``champion`` to ``version`` if it beats the baselines and is no worse than the current champion.

    Scores are "higher is better" (negate a loss). ``validation_score`` is the version's own
    validation score (the one the training table shows; default ``new_score``); it must be above
    ``chance_score`` and at least ``baseline_score`` (the best baselines on the same examples), or
    the version is not promoted, even on an empty registry. ``new_score`` and ``champion_score``
    are both models scored alike on rows neither was trained on (``compared_on`` says which);
    ``champion_score`` is None when there are no such rows or the champion could not be scored,
    and the champion is then kept. ``force`` (--promote) promotes whatever the scores. Tags the
    version with ``validation_score`` and ``promotion_reason``.
    """
    version = str(version)
    current = champion_version()
    previous = None if current is None else str(current.version)
    own = new_score if validation_score is None else validation_score
    gate = _baseline_gate(own, baseline_score, chance_score)
    promoted, reason = _decide(version, new_score, previous, champion_score, force, tolerance, own, gate, compared_on)
    client = MlflowClient()
    if promoted:
        client.set_registered_model_alias(MODEL_NAME, CHAMPION, version)
    client.set_model_version_tag(MODEL_NAME, version, "validation_score", repr(float(own)))
    client.set_model_version_tag(MODEL_NAME, version, "promotion_reason", reason)
    return Promotion(promoted=promoted, version=version, previous=previous, reason=reason)


def load_bundle(uri: str = CHAMPION_URI) -> mlflow.pyfunc.PyFuncModel:
    """Load a registered bundle (default: the champion) as an MLflow pyfunc model.

    Raises `RegistryError` saying what is missing when the model, version or alias does not exist,
    or when the bundle's Python code cannot be imported here.
    """
    configure()
    try:
        return mlflow.pyfunc.load_model(uri)
    except MlflowException as error:
        raise RegistryError(_missing_model_message(uri, error)) from error
    except ModuleNotFoundError as error:
        raise RegistryError(
            f"the model at {uri} needs the Python module {error.name!r}, which cannot be imported "
            "here. Install lifetag (and its dependencies) in this environment, or run from the "
            "environment that trained the model."
        ) from error


def version_of(uri: str) -> str:
    """The registered version number a `models:/name@alias` or `models:/name/N` URI points at (else the URI)."""
    configure()
    path = uri.removeprefix("models:/")
    try:
        if "@" in path:
            name, alias = path.split("@", 1)
            return str(MlflowClient().get_model_version_by_alias(name, alias).version)
        name, _, version = path.partition("/")
        return version if version.isdigit() else uri
    except MlflowException:
        return uri


def _baseline_gate(score: float, baseline: float | None, chance: float | None) -> str:
    """Why a validation score may not be promoted on its own merits ("" when it may)."""
    if not np.isfinite(score):
        return "its validation score could not be computed"
    if chance is not None and score <= chance:
        return f"its validation score {score:.4f} is no better than chance ({chance:.4f})"
    if baseline is not None and np.isfinite(baseline) and score < baseline:
        return f"its validation score {score:.4f} loses to the baselines' {baseline:.4f}"
    return ""


def _decide(
    version: str,
    new_score: float,
    previous: str | None,
    champion_score: float | None,
    force: bool,
    tolerance: float,
    own: float,
    gate: str,
    compared_on: str,
) -> tuple[bool, str]:
    if previous is None:
        if gate:
            comparison, passes = f"there is no champion yet, but {gate}", False
        else:
            comparison, passes = f"there was no champion yet (validation score {own:.4f})", True
    elif gate:
        comparison, passes = gate, False
    elif champion_score is None:
        comparison = compared_on or f"champion v{previous} could not be scored on this validation data"
        passes = False
    else:
        new_text, old_text = _distinct(new_score, champion_score)
        passes = new_score >= champion_score - tolerance
        sign = ">=" if new_score >= champion_score else "<"
        margin = f" within tolerance {tolerance:g}" if sign == "<" and passes else ""
        comparison = f"{new_text} {sign} champion v{previous}'s {old_text}{margin}"
        comparison = (f"on {compared_on}, score {comparison} (validation score {own:.4f})" if compared_on
                      else f"validation score {comparison}")
    if passes:
        return True, f"version {version} is now champion: {comparison}"
    if force:
        return True, f"version {version} is now champion (forced with --promote): {comparison}"
    return False, f"version {version} registered but not promoted: {comparison}; use --promote to force"


def _distinct(a: float, b: float) -> tuple[str, str]:
    """Format two scores with 3 decimals, or more when 3 would make different scores look equal."""
    for decimals in range(3, 8):
        a_text, b_text = f"{a:.{decimals}f}", f"{b:.{decimals}f}"
        if a_text != b_text or a == b:
            return a_text, b_text
    return repr(a), repr(b)


def _missing_model_message(uri: str, error: MlflowException) -> str:
    if not uri.startswith("models:/"):
        return f"no model at {uri}: {_sentence(error.message)} Pass --model with a model URI such as {CHAMPION_URI}."
    hint = "Train one with `lifetag train`, or pass --model with a model URI."
    name, _, alias = uri.removeprefix("models:/").partition("@")
    name = name.split("/")[0]
    if error.error_code == "RESOURCE_DOES_NOT_EXIST" and "Registered Model" in error.message:
        return (
            f"no model at {uri}: there is no registered model {name!r} in "
            f"{mlflow.get_registry_uri()}. {hint}"
        )
    if alias and "alias" in error.message:
        return f"no model at {uri}: no version of {name!r} has the alias {alias!r} yet. {hint}"
    return f"no model at {uri}: {_sentence(error.message)} {hint}"


def _sentence(text: str) -> str:
    return text.rstrip(". ") + "."


def _content_hash(frame: pd.DataFrame) -> str:
    columns = sorted(frame.columns, key=str)
    canonical = frame[columns]
    digest = hashlib.sha256()
    for col in columns:
        digest.update(f"{col}\x1f{canonical[col].dtype}\x1e".encode())
    row_hashes = np.sort(pd.util.hash_pandas_object(canonical, index=False).to_numpy())
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()


def _pinned_requirements() -> list[str]:
    pins = []
    for package in BUNDLE_PACKAGES:
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return pins


def _experiment_id() -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=_artifact_location())
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(EXPERIMENT).experiment_id  # another process won


def _require_active_run(caller: str) -> None:
    # Without an active run MLflow's fluent API would start one in the `Default` experiment,
    # whose artifacts land in ./mlruns of whatever directory the command runs in.
    if mlflow.active_run() is None:
        raise RegistryError(
            f"{caller} needs an active run: call it inside `with registry.start_run(...):`."
        )


def _artifact_location() -> str | None:
    """``mlartifacts`` beside a SQLite store; None (the server's choice) for anything else.

    Without a server, MLflow's default artifact root is ./mlruns of the current directory, so a
    SQLite store, embedded or named in MLFLOW_TRACKING_URI, keeps its artifacts next to itself.
    """
    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///").partition("?")[0]).resolve()
    return (database.parent / "mlartifacts").as_uri()


def _set_by_user(variable: str) -> str | None:
    value = os.environ.get(variable)
    return value if value and value != _written.get(variable) else None


def _db_path() -> Path:
    return lifetag_home().resolve() / "mlflow.db"


class _DropCloudPickleNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "serialized using CloudPickle" not in record.getMessage()


def _quieten_mlflow() -> None:
    # MLflow talks at INFO: "Creating initial MLflow database tables..." on a new SQLite store,
    # "Inferring model signature from input example", and artifact download progress bars when
    # a model is loaded. lifetag's commands report what happened themselves, so only MLflow's
    # warnings and errors are shown. MLFLOW_LOGGING_LEVEL, when set, wins.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if not os.environ.get("MLFLOW_LOGGING_LEVEL"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    # Alembic's migration chatter on first use of a SQLite store: MLflow already caps it at
    # WARNING; keep it there even if the host application configured logging more verbosely.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Logging a PythonModel instance warns on every call that it is pickled with CloudPickle.
    # That is lifetag's deliberate bundle format; the point to keep in mind is that loading a
    # bundle unpickles it, so load only from a registry you trust.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    if not any(isinstance(f, _DropCloudPickleNotice) for f in pyfunc_logger.filters):
        pyfunc_logger.addFilter(_DropCloudPickleNotice())


@contextmanager
def _mlflow_event_stream_off() -> Iterator[None]:
    """Silence MLflow's own console stream (its prints and log lines) inside a ``with`` block."""
    was_enabled = logging_utils.MLFLOW_LOGGING_STREAM.enabled
    logging_utils.disable_logging()
    try:
        yield
    finally:
        if was_enabled:
            logging_utils.enable_logging()
