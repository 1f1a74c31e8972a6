"""The insight report: one self-contained HTML page from a `lifetag score` output and the orders behind it.

`write_report` gathers the figures in DuckDB (aggregates over the tags file and over the validated
orders, never all orders in pandas), takes the behavioural clusters stored with the model (`features.clusters`), reads the
scoring model's validation metrics and curves from its MLflow run, draws the page
(`serving.report_page`) and writes it atomically; for a registered model version it also logs the
page as an artifact of that version's run. Every number on the page is computed here; the page
module only draws and words them.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from configs.errors import LifetagError
from configs.schema import Config
from features.behaviour import as_timestamp, build_relation, order_rows_sql
from features.engine import connect, lock_external_access, repr_ident, repr_sql
from features.intake import open_sources
from features.clusters import CLUSTER_FEATURES, ClusterError, ClusterModel, cluster_sample, fit_clusters

__all__ = ["LANGUAGES", "STAGES", "ModelSection", "ReportData", "ReportError", "ReportResult", "read_report_data",
           "write_report"]

LANGUAGES = ("en", "zh")
# Columns of a `lifetag score` output the report reads.
REQUIRED_COLUMNS = ("customer_id", "as_of", "model_version", "recency_days", "frequency", "monetary_total",
                    "churn_risk", "ltv", "value_at_risk", "churn_tier", "value_tier", "rfm_segment",
                    "lifecycle_stage", "reasons")
RETENTION_MONTHS = 12  # monthly retention: the last 12 complete months before as_of
COHORT_MONTHS = 24  # the cohort heatmap: the latest 24 first-order months, up to 24 months since
CHURN_BINS = 20  # churn risk histogram: 5-point bins
LTV_BINS = 20

Progress = Callable[[str], None]
# What `write_report` tells its progress callback, in order (each when the stage is done).
STAGES = ("Reading the tags", "Model validation", "Reading and validating the orders", "Cohorts and retention",
          "Behavioural clusters", "Drawing and writing the page")


class ReportError(LifetagError, ValueError):
    """The report cannot be made as asked: a tags file that is not a score output, a bad --out or --lang."""


@dataclass
class ModelSection:
    """What the report says about the model that scored the tags."""

    version: str  # the tags' model_version
    uri: str | None = None  # models:/lifetag/N, or a bundle folder
    run_id: str | None = None  # the MLflow run behind a registered version
    trained_as_of: str | None = None
    validation_score: float | None = None
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # target -> model -> metric
    horizons: dict[str, int] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)  # training.tracking.validation_curves
    missing: str = ""  # what the report cannot show, and why


@dataclass
class ReportData:
    """Every figure on the page."""

    as_of: pd.Timestamp
    kpis: dict[str, float]
    segments: pd.DataFrame  # rfm_segment, customers, revenue, ltv, value_at_risk, mean_churn_risk
    stages: dict[str, int]  # lifecycle_stage -> customers
    churn_histogram: pd.DataFrame  # bin_start, bin_end (probability), customers
    ltv_histogram: pd.DataFrame  # bin_start, bin_end (currency; the last bin open-ended), customers
    top_at_risk: pd.DataFrame
    scenario_columns: list[str]
    cohorts: pd.DataFrame  # cohort (month), since (months), customers, cohort_size
    clusters: ClusterModel | None
    cluster_counts: pd.DataFrame  # cluster, customers, revenue
    cluster_note: str
    model: ModelSection
    ltv_days: int


@dataclass
class ReportResult:
    """What `write_report` wrote, and where it logged it."""

    out: Path
    customers: int
    as_of: pd.Timestamp
    model_version: str
    size_bytes: int
    logged: str  # "runs:/<id>/report/<name>", or "" when not logged
    note: str  # why not logged, when it was not


def write_report(tags: str | os.PathLike[str], orders: str | os.PathLike[str], out: str | os.PathLike[str],
                 config: Config, customers: str | os.PathLike[str] | None = None, model_uri: str | None = None,
                 lang: str = "en", progress: Progress | None = None) -> ReportResult:
    """Write the report of the tags file `tags` (a `lifetag score` output) and its `orders` to `out`
    (HTML, atomically), and log it to the scoring model version's MLflow run when it is a registered one."""
    from serving.report_page import render

    out = check_report_path(out, lang)
    progress = progress or (lambda stage: None)
    data = read_report_data(tags, orders, config, customers, model_uri, progress)
    page = render(data, config, lang, tags_name=Path(str(tags).split("::", 1)[0]).name)
    _write_atomically(out, page)
    progress(STAGES[5])
    logged, note = _log_to_run(out, data.model)
    return ReportResult(out, int(data.kpis["customers"]), data.as_of, data.model.version, out.stat().st_size,
                        logged, note)


def check_report_path(out: str | os.PathLike[str], lang: str) -> Path:
    """`out` as a path, after checking it names an .html file and `lang` is a language the page speaks."""
    if lang not in LANGUAGES:
        raise ReportError(f"--lang {lang!r} is not a language of the report; use one of: {', '.join(LANGUAGES)}.")
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ReportError(f"--out {out}: the report is one HTML page; give it a .html name (e.g. report.html).")
    if path.is_dir():
        raise ReportError(f"--out {out} is a folder; give the report a file name (e.g. {path / 'report.html'}).")
    return path


def read_report_data(tags: str | os.PathLike[str], orders: str | os.PathLike[str], config: Config,
                     customers: str | os.PathLike[str] | None, model_uri: str | None,
                     progress: Progress) -> ReportData:
    """Every figure of the report, from the tags file and the orders (validated by the intake)."""
    con = _tags_connection(tags, config)
    try:
        as_of, version = _tags_identity(con, tags)
        tag_figures = _tag_figures(con, config)
    finally:
        con.close()
    progress(STAGES[0])
    model = model_section(version, model_uri)  # before the orders: a wrong --model is said at once
    progress(STAGES[1])
    con = connect(config.engine)
    try:
        open_sources(con, orders, config, customers)
        _require_orders_before(con, as_of, orders)
        progress(STAGES[2])
        cohorts, retention = _cohorts(con, as_of, config)
        progress(STAGES[3])
        clusters, counts, note = _clusters(con, as_of, config, version, model_uri)
        progress(STAGES[4])
    finally:
        con.close()
    kpis = {**tag_figures.pop("kpis"), "monthly_retention": retention}
    return ReportData(as_of=as_of, kpis=kpis, cohorts=cohorts, clusters=clusters, cluster_counts=counts,
                      cluster_note=note, model=model, ltv_days=config.horizons.ltv_days, **tag_figures)


# ---------------------------------------------------------------------------------------------
# The tags file


def _tags_connection(tags: str | os.PathLike[str], config: Config) -> duckdb.DuckDBPyConnection:
    """A connection whose `tags` view is the score output (Parquet, CSV or FILE.duckdb::TABLE) and which can
    read nothing else."""
    from serving.scoring import output_target

    text = str(tags)
    try:
        kind = output_target(text)
    except LifetagError:
        raise ReportError(f"--tags {tags}: not a `lifetag score` output; give the .parquet, .csv or "
                          "FILE.duckdb::TABLE that `lifetag score --out` wrote.") from None
    path = Path(text.split("::", 1)[0])
    if not path.is_file():
        raise ReportError(f"--tags {tags}: no such file. Give the output of `lifetag score --out`.")
    con = connect(config.engine)
    lock_external_access(con, [path, Path(str(path) + ".wal")])
    try:
        if kind == "duckdb":
            # The path is a bound parameter and the table a quoted identifier: neither becomes SQL text.
            con.execute("ATTACH ? AS _lifetag_tags (READ_ONLY)", [str(path)])
            con.execute(f"CREATE TEMP VIEW tags AS SELECT * FROM _lifetag_tags.{repr_ident(text.split('::', 1)[1])}")
        else:
            # A view may not hold bound parameters: the path is a quoted literal.
            reader = (f"read_parquet({repr_sql(str(path))})" if kind == "parquet"
                      else f"read_csv({repr_sql(str(path))}, types = {{'customer_id': 'VARCHAR'}})")
            con.execute(f"CREATE TEMP VIEW tags AS SELECT * FROM {reader}")
        columns = {row[0] for row in con.execute("DESCRIBE tags").fetchall()}
    except duckdb.Error as exc:
        con.close()
        raise ReportError(f"--tags {tags}: cannot be read ({str(exc).strip().splitlines()[0]}). Give the output of "
                          "`lifetag score --out`.") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        con.close()
        raise ReportError(f"--tags {tags}: not a `lifetag score` output: column(s) {', '.join(missing)} missing. "
                          "Give the file `lifetag score --out` wrote.")
    return con


def _tags_identity(con: duckdb.DuckDBPyConnection, tags: str | os.PathLike[str]) -> tuple[pd.Timestamp, str]:
    """The tags' as_of and model version: one of each, or the file mixes runs."""
    rows, days, versions = con.execute(
        "SELECT count(*), list(DISTINCT CAST(as_of AS VARCHAR)), list(DISTINCT model_version) FROM tags").fetchall()[0]
    if not rows:
        raise ReportError(f"--tags {tags}: the file has no rows; score the shop first (`lifetag score`).")
    days = [d for d in days if d is not None]
    versions = [v for v in versions if v is not None]
    if len(days) != 1 or len(versions) != 1:
        raise ReportError(f"--tags {tags}: the rows come from several scoring runs (as_of {', '.join(sorted(days)[:4])}; "
                          f"model versions {', '.join(sorted(versions)[:4])}); a report describes one run. Give one "
                          "`lifetag score` output.")
    return as_timestamp(days[0][:10]), str(versions[0])


def _tag_figures(con: duckdb.DuckDBPyConnection, config: Config) -> dict[str, Any]:
    """KPIs, segments, stages, distributions and the largest values at risk, aggregated in DuckDB."""
    (customers, buyers, active, repeat, revenue, ltv_total, ltv_mean, at_risk, registered) = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE frequency > 0),
               count(*) FILTER (WHERE lifecycle_stage IN ('new', 'active')),
               count(*) FILTER (WHERE frequency >= 2),
               coalesce(sum(monetary_total), 0), coalesce(sum(ltv), 0), avg(ltv), coalesce(sum(value_at_risk), 0),
               count(*) FILTER (WHERE lifecycle_stage = 'registered')
        FROM tags""").fetchall()[0]
    kpis = {"customers": customers, "buyers": buyers, "active": active, "repeat_buyers": repeat,
            "repurchase_rate": repeat / buyers if buyers else float("nan"), "revenue": float(revenue),
            "ltv_total": float(ltv_total), "ltv_mean": float(ltv_mean) if ltv_mean is not None else float("nan"),
            "value_at_risk": float(at_risk), "registered": registered}
    segments = con.execute("""
        SELECT rfm_segment, count(*) AS customers, coalesce(sum(monetary_total), 0) AS revenue,
               coalesce(sum(ltv), 0) AS ltv, coalesce(sum(value_at_risk), 0) AS value_at_risk,
               avg(churn_risk) AS mean_churn_risk
        FROM tags WHERE rfm_segment IS NOT NULL GROUP BY rfm_segment""").df()
    stages = dict(con.execute("SELECT lifecycle_stage, count(*) FROM tags GROUP BY ALL").fetchall())
    columns = {row[0] for row in con.execute("DESCRIBE tags").fetchall()}
    scenario = [name for name in config.scoring.scenarios if name in columns]
    return {"kpis": kpis, "segments": segments, "stages": {str(k): int(v) for k, v in stages.items()},
            "churn_histogram": _churn_histogram(con), "ltv_histogram": _ltv_histogram(con),
            "top_at_risk": _top_at_risk(con, scenario, config.report.top_customers), "scenario_columns": scenario}


def _churn_histogram(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Customers per 5-point bin of churn risk (registered customers, who have none, are left out)."""
    counts = dict(con.execute(f"""
        SELECT least(CAST(floor(churn_risk * {CHURN_BINS}) AS INTEGER), {CHURN_BINS - 1}) AS bin, count(*)
        FROM tags WHERE churn_risk IS NOT NULL GROUP BY ALL""").fetchall())
    bins = np.arange(CHURN_BINS)
    return pd.DataFrame({"bin_start": bins / CHURN_BINS, "bin_end": (bins + 1) / CHURN_BINS,
                         "customers": [int(counts.get(b, 0)) for b in bins]})


def _nice_width(span: float, bins: int) -> float:
    """A round bin width (1, 2 or 5 times a power of ten) giving about `bins` bins over `span`."""
    if not np.isfinite(span) or span <= 0:
        return 1.0
    raw = span / bins
    power = 10 ** np.floor(np.log10(raw))
    return float(min((m * power for m in (1, 2, 5, 10) if m * power >= raw), default=10 * power))


def _ltv_histogram(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Bins of predicted LTV up to the 99th percentile, then one open-ended bin for the rest."""
    top = con.execute("SELECT quantile_cont(ltv, 0.99) FROM tags WHERE ltv IS NOT NULL").fetchall()[0][0]
    if top is None:
        return pd.DataFrame({"bin_start": [], "bin_end": [], "customers": []})
    width = _nice_width(float(top), LTV_BINS)
    last = int(np.ceil(float(top) / width)) if top > 0 else 1
    counts = dict(con.execute(f"""
        SELECT least(greatest(CAST(floor(ltv / {width!r}) AS INTEGER), 0), {last}) AS bin, count(*)
        FROM tags WHERE ltv IS NOT NULL GROUP BY ALL""").fetchall())
    bins = np.arange(last + 1)
    return pd.DataFrame({"bin_start": bins * width, "bin_end": np.where(bins == last, np.inf, (bins + 1) * width),
                         "customers": [int(counts.get(b, 0)) for b in bins]})


def _top_at_risk(con: duckdb.DuckDBPyConnection, scenario: list[str], n: int) -> pd.DataFrame:
    """The `n` customers with the largest value at risk, with their tags and scenario flags."""
    flags = "".join(f", {repr_ident(name)}" for name in scenario)
    return con.execute(f"""
        SELECT customer_id, rfm_segment, lifecycle_stage, churn_tier, value_tier, churn_risk, ltv, value_at_risk,
               reasons{flags}
        FROM tags WHERE value_at_risk IS NOT NULL ORDER BY value_at_risk DESC, customer_id LIMIT {int(n)}""").df()


# ---------------------------------------------------------------------------------------------
# The orders


def _require_orders_before(con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp, orders: str | os.PathLike[str]) -> None:
    """Refuse orders with nothing before the tags' as_of: they cannot be the orders the tags came from."""
    first = con.execute("SELECT min(order_ts) FROM orders").fetchall()[0][0]
    if first is None or pd.Timestamp(first) >= as_of:
        since = f"the first order is on {pd.Timestamp(first).date()}" if first is not None else "it has no usable order"
        raise ReportError(f"--orders {orders}: no order before the tags' as_of {as_of.date()} ({since}), so these are "
                          "not the orders the tags were scored from. Give the --orders (and --customers) of the "
                          "`lifetag score` run.")


def _cohorts(con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp, config: Config) -> tuple[pd.DataFrame, float]:
    """Cohort retention (customers of each first-purchase month buying again k months later) and the
    pooled monthly retention of the last RETENTION_MONTHS complete months, from the purchases before as_of."""
    con.execute(f"""
CREATE OR REPLACE TEMP TABLE _lifetag_active_months AS
SELECT DISTINCT customer_id, CAST(date_trunc('month', order_ts) AS DATE) AS month
FROM ({order_rows_sql('orders', as_of, config)}) WHERE is_purchase""")
    this_month = pd.Timestamp(as_of).to_period("M").to_timestamp()
    cohorts = con.execute(f"""
WITH firsts AS (SELECT customer_id, min(month) AS cohort FROM _lifetag_active_months GROUP BY customer_id),
counts AS (
    SELECT f.cohort, datediff('month', f.cohort, a.month) AS since, count(*) AS customers
    FROM _lifetag_active_months a JOIN firsts f USING (customer_id) GROUP BY ALL)
SELECT c.cohort, c.since, c.customers, s.customers AS cohort_size
FROM counts c JOIN counts s ON s.cohort = c.cohort AND s.since = 0
WHERE c.cohort >= DATE '{(this_month - pd.DateOffset(months=COHORT_MONTHS)).date()}' AND c.since <= {COHORT_MONTHS}
ORDER BY c.cohort, c.since""").df()
    # A month counts once it is over: the pair (m - 1, m) for complete months m before as_of.
    first_month = (this_month - pd.DateOffset(months=RETENTION_MONTHS)).date()
    before, kept = con.execute(f"""
SELECT count(*), count(b.customer_id)
FROM _lifetag_active_months a
LEFT JOIN _lifetag_active_months b ON b.customer_id = a.customer_id AND b.month = a.month + INTERVAL 1 MONTH
WHERE a.month + INTERVAL 1 MONTH >= DATE '{first_month}' AND a.month + INTERVAL 1 MONTH < DATE '{this_month.date()}'
""").fetchall()[0]
    con.execute("DROP TABLE _lifetag_active_months")
    return cohorts, (kept / before if before else float("nan"))


def _trained_clusters(version: str, model_uri: str | None) -> tuple[ClusterModel | None, str]:
    """The clusters stored with the model that scored the tags (so the page and `score --clusters` number
    them alike), or None and why not."""
    from serving import registry
    from serving.bundle import BundleError, load_model

    uri = model_uri or (f"models:/{registry.MODEL_NAME}/{version}" if version.isdigit() else None)
    if uri is None:
        return None, f"the tags were scored with {version}, which this report cannot load without --model"
    try:
        bundle, _ = load_model(uri)
        return bundle.cluster_model(), ""
    except (BundleError, registry.RegistryError) as exc:
        return None, str(exc)


def _clusters(con: duckdb.DuckDBPyConnection, as_of: pd.Timestamp, config: Config, version: str = "",
              model_uri: str | None = None) -> tuple[ClusterModel | None, pd.DataFrame, str]:
    """The model's clusters (learned at training time), and every buyer's cluster counted (features streamed
    in batches). A model without clusters (older, or unreachable): clusters learned from these orders, and
    the page says so."""
    model, why = _trained_clusters(version, model_uri)
    note = ""
    if model is None:
        try:
            model = fit_clusters(cluster_sample(con, "orders", as_of, config), config)
        except ClusterError as exc:
            return None, pd.DataFrame(), str(exc)
        note = (f"These clusters were learned from the orders of this report, not stored with the model ({why}); "
                "`lifetag score --clusters` numbers clusters by the model's own.")
    relation = build_relation(con, "orders", as_of, config, shop="orders").select(
        ", ".join(["monetary_total", *CLUSTER_FEATURES]))
    customers = np.zeros(model.k + 1, dtype=np.int64)
    revenue = np.zeros(model.k + 1)
    with relation.to_arrow_reader(batch_size=config.scoring.batch_customers) as reader:
        for batch in reader:
            frame = batch.to_pandas()
            numbers = model.assign(frame)
            customers += np.bincount(numbers, minlength=model.k + 1)
            revenue += np.bincount(numbers, weights=frame["monetary_total"].to_numpy(dtype=float),
                                   minlength=model.k + 1)
    counts = pd.DataFrame({"cluster": np.arange(1, model.k + 1), "customers": customers[1:], "revenue": revenue[1:]})
    return model, counts, note


# ---------------------------------------------------------------------------------------------
# The model


_CLASSIFIER_METRICS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top_decile")
_LTV_METRICS = ("spearman", "gini_normalised", "decile_mape", "total_ratio")
_MODELS = {"churn": ("model", "recency_heuristic", "bgnbd"), "repurchase": ("model", "recency_heuristic", "bgnbd"),
           "ltv": ("model", "run_rate", "bgnbd_gg")}


def model_section(version: str, model_uri: str | None) -> ModelSection:
    """The validation of the model that scored the tags: from its MLflow run for a registered version, else
    what a bundle folder holds (and what is missing)."""
    if model_uri and Path(model_uri).is_dir():
        return _bundle_section(version, model_uri)
    if model_uri and ":/" not in model_uri:
        raise ReportError(f"--model {model_uri}: no such bundle folder, and not a model URI either; pass the folder "
                          "the tags were scored with, or a registry URI such as models:/lifetag/3 (or leave --model "
                          "out: the tags name their model version).")
    if model_uri is None and not version.isdigit():
        return ModelSection(version, missing=(
            f"the tags were scored with {version}, a bundle folder, not a registered model version: its validation "
            "against the baselines is kept in the MLflow run of a registered version. Pass --model with the folder "
            "to show what the bundle holds, or score with a registered version (--model models:/lifetag/N)."))
    from serving import registry

    uri = model_uri or f"models:/{registry.MODEL_NAME}/{version}"
    resolved = registry.version_of(uri)
    if resolved != version:
        raise ReportError(f"--model {uri} is version {resolved}, but the tags were scored with model version {version}; "
                          "the report describes the model that made the tags. Leave out --model, or pass "
                          f"models:/{registry.MODEL_NAME}/{version}.")
    return _registered_section(version, uri)


def _bundle_section(version: str, folder: str) -> ModelSection:
    """What a bundle folder holds about its validation (its score), and what it does not."""
    from serving.bundle import load_model

    bundle, label = load_model(folder)
    if label != version:
        raise ReportError(f"--model {folder} is {label}, but the tags were scored with model version {version}; "
                          "the report describes the model that made the tags.")
    return ModelSection(version, uri=folder, trained_as_of=bundle.as_of,
                        validation_score=bundle.metadata.get("validation_score"),
                        horizons={k: m.horizon_days for k, m in bundle.models.items()},
                        missing=("this model is a bundle folder, not a registered version: its validation metrics "
                                 "against the baselines and its calibration and gain curves are kept in the MLflow "
                                 "run of a registered version, so only its overall validation score is shown, and "
                                 "the report is not logged to MLflow."))


def _registered_section(version: str, uri: str) -> ModelSection:
    """A registered version's validation: metrics from its run, curves from the run's validation/curves.json."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from serving import registry
    from training.tracking import CURVES_ARTIFACT

    registry.configure()
    client = MlflowClient()
    try:
        model_version = client.get_model_version(registry.MODEL_NAME, version)
        run = client.get_run(model_version.run_id)
    except MlflowException as exc:
        raise ReportError(f"model version {version} of {registry.MODEL_NAME!r} (from the tags) cannot be found in "
                          f"{registry.tracking_uri()} ({exc.message.splitlines()[0]}). Point MLFLOW_TRACKING_URI (or "
                          "LIFETAG_HOME) at the store the model was registered in.") from None
    metrics = run.data.metrics
    params = run.data.params
    section = ModelSection(version, uri=uri, run_id=run.info.run_id, trained_as_of=params.get("as_of"),
                           validation_score=metrics.get("validation_score"))
    for target, models in _MODELS.items():
        keys = _LTV_METRICS if target == "ltv" else _CLASSIFIER_METRICS
        table = {m: {k: metrics[f"{target}.{m}.{k}"] for k in keys if f"{target}.{m}.{k}" in metrics} for m in models}
        section.metrics[target] = {m: v for m, v in table.items() if v}
    try:
        import mlflow

        section.curves = mlflow.artifacts.load_dict(f"runs:/{run.info.run_id}/{CURVES_ARTIFACT}")
    except (MlflowException, OSError):
        section.missing = (f"model version {version}'s run has no validation curves ({CURVES_ARTIFACT}): it was "
                           "trained by a lifetag that did not store them. Retrain (`lifetag train`) to see the "
                           "calibration and cumulative gain charts; the metrics above are from its run.")
    section.horizons = {t: int(c["horizon_days"]) for t, c in section.curves.items()}
    return section


# ---------------------------------------------------------------------------------------------
# Writing and logging


def _write_atomically(out: Path, page: str) -> None:
    """The page to `out`: a hidden temporary file beside it, then a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _log_to_run(out: Path, model: ModelSection) -> tuple[str, str]:
    """Log the page as `report/<name>` of the scoring version's run: (artifact URI, "") or ("", why not)."""
    if model.run_id is None:
        why = "the model is a bundle folder" if model.uri else "the tags were scored with a bundle folder"
        return "", f"not logged to MLflow: {why}, not a registered model version"
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().log_artifact(model.run_id, str(out), artifact_path="report")
    except (MlflowException, OSError) as exc:
        raise ReportError(f"{out} was written, but logging it to MLflow run {model.run_id} failed ({exc}). Check "
                          "that the MLflow store is reachable and writable, then run the report again.") from None
    return f"runs:/{model.run_id}/report/{out.name}", ""
