"""Campaign evaluation: did the treated customers convert, order and spend more than the control group?

`lifetag campaign` reads who was assigned to treatment or control (one campaign, or several at once),
the orders through the intake (the rules and messages of every command), and compares the arms over
the window [start, start + days):

- conversion: the share of customers with at least one purchase order in the window;
- orders per customer: purchase orders in the window (return-only events are not orders);
- spend per customer: net spend in the window (returned lines and negative amounts are money back),

counted by `features.labels.window_relation`, as the labels count them. Each comes overall and per
stratum at the start: RFM segment and churn tier, from tagging the shop at `start` with the registered
model through `serving.scoring.score` (the batch's one path to tags); customers with no purchase before
the start have no segment or tier and are their own stratum. The statistics are in `serving.experiment`.

Refused, one paragraph each, before anything is tagged or written: an assignments file that is not one
(columns, group names, duplicate ids), a campaign without a control (or treatment) group, more unknown
customer ids than `campaign.max_unknown_share`, a window that ends after the last order or a start
before the first. The split is checked for a sample-ratio mismatch: flagged, never hidden.

A result is a `CampaignRun` (`to_dict()` is the JSON `--out` holds); `serving.campaign_report` turns a
campaign's result into a section of a lifetag HTML report.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from configs.errors import LifetagError
from configs.schema import CampaignConfig, Config
from features.behaviour import as_timestamp, require_orders_before
from features.engine import connect, lock_external_access
from features.intake import Intake, open_sources
from features.labels import window_sql
from serving.experiment import (MEAN_METHOD, RATE_METHOD, Difference, SampleRatio, bootstrap_interval,
                                mean_difference, rate_difference, sample_ratio)
from serving.locks import scratch_folder

if TYPE_CHECKING:  # the model libraries load only once the inputs have passed their checks
    from serving.bundle import Bundle

__all__ = [
    "GROUPS", "MEASURE_LABELS", "NO_ORDER", "CampaignError", "CampaignInputs", "CampaignResult", "CampaignRun",
    "Measure", "STRATA", "Stratum", "Window", "compare", "evaluate", "format_figure", "format_interval", "format_p", "headline",
    "read_assignments", "read_inputs", "settings_with", "split_warning",
]

GROUPS = ("treatment", "control")
MEASURES = ("conversion", "orders", "spend")
MEASURE_LABELS = {"conversion": "conversion", "orders": "orders per customer", "spend": "spend per customer"}
# Customers without a purchase before the start: no RFM segment, no churn tier (registered, or new in the window).
NO_ORDER = "no_order_before_start"
NO_ORDER_LABELS = ("No order before the start", "开始前无订单")
TIER_LABELS = {"high": ("High churn risk", "高流失风险"), "medium": ("Medium churn risk", "中流失风险"),
               "low": ("Low churn risk", "低流失风险")}
STRATA = {"rfm_segment": "RFM segment at the start", "churn_tier": "churn tier at the start"}
_EXAMPLES = 3
_ASSIGNMENT_FORMATS = (".csv", ".parquet")


class CampaignError(LifetagError, ValueError):
    """A campaign that cannot be evaluated as given: its assignments, window or report; one paragraph."""


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Window:
    """The days a campaign is judged on: [start, start + days)."""

    start: pd.Timestamp
    days: int

    @property
    def end(self) -> pd.Timestamp:
        """The first day after the window."""
        return self.start + pd.Timedelta(days=self.days)

    @property
    def last_day(self) -> pd.Timestamp:
        """The window's last day (inclusive)."""
        return self.end - pd.Timedelta(days=1)


@dataclass(frozen=True)
class Measure:
    """One measure (conversion, orders, spend) of treatment against control, with its verdict.

    verdict: `higher` / `lower` (the difference is significant at 1 - confidence, by `difference.p_value`),
    `no clear difference`, or `too few customers` (an arm below campaign.min_stratum_customers: means
    only, no interval). bootstrap: spend's percentile bootstrap interval, shown beside Welch's.
    """

    name: str
    difference: Difference | None
    treatment_mean: float
    control_mean: float
    verdict: str
    bootstrap: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures (None where there is none)."""
        d = self.difference
        return {
            "measure": self.name, "treatment": self.treatment_mean, "control": self.control_mean,
            "difference": self.treatment_mean - self.control_mean,
            "ci_low": d.ci_low if d else None, "ci_high": d.ci_high if d else None,
            "p_value": d.p_value if d else None, "relative_lift": _lift(self.treatment_mean, self.control_mean),
            "verdict": self.verdict,
            "bootstrap_ci_low": self.bootstrap[0] if self.bootstrap else None,
            "bootstrap_ci_high": self.bootstrap[1] if self.bootstrap else None,
        }


@dataclass(frozen=True)
class Stratum:
    """Treatment against control among the customers of one RFM segment or churn tier at the start."""

    by: str  # rfm_segment | churn_tier
    key: str
    label: str
    label_zh: str
    treatment: int
    control: int
    measures: list[Measure]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {"by": self.by, "key": self.key, "label": self.label, "label_zh": self.label_zh,
                "treatment": self.treatment, "control": self.control,
                "measures": [m.to_dict() for m in self.measures], "note": self.note}


@dataclass(frozen=True)
class CampaignResult:
    """One campaign's comparison: counts, the split check, the measures overall and per stratum."""

    campaign: str
    window: Window
    model_version: str
    settings: CampaignConfig
    split: SampleRatio
    unknown: dict[str, int]  # assigned ids in neither the orders nor the customers table, per group
    overall: list[Measure]
    strata: list[Stratum]
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """One sentence on conversion (and the split when it is off), for the table's title and the report."""
        return headline(self)

    def to_dict(self) -> dict[str, Any]:
        """Every figure of the campaign, JSON-ready; a report section can be built from it alone."""
        s = self.split
        return {
            "campaign": self.campaign,
            "window": {"start": str(self.window.start.date()), "days": self.window.days,
                       "last_day": str(self.window.last_day.date())},
            "model_version": self.model_version,
            "confidence": self.settings.confidence,
            "counts": {"treatment": s.treatment, "control": s.control,
                       "unknown_treatment": self.unknown["treatment"], "unknown_control": self.unknown["control"]},
            "split": {"treatment": s.treatment, "control": s.control, "observed_share": s.observed_share,
                      "intended_share": s.intended_share, "p_value": s.p_value, "threshold": s.threshold,
                      "mismatch": s.mismatch, "method": "Pearson chi-square goodness of fit to the intended split"},
            "verdict": self.verdict,
            "overall": [m.to_dict() for m in self.overall],
            "strata": [s.to_dict() for s in self.strata],
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class CampaignRun:
    """A `lifetag campaign` run: the campaigns' results and what was read."""

    assignments: str
    orders: str
    customers: str | None
    results: list[CampaignResult]
    intake: Intake
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of `--out`: every figure, per campaign, and the methods."""
        first = self.results[0]
        settings = first.settings
        methods = {"conversion": RATE_METHOD, "orders": MEAN_METHOD, "spend": MEAN_METHOD + (
            f"; beside it a percentile bootstrap interval ({settings.bootstrap_resamples:,} resamples of each arm, "
            f"seed {settings.seed}); the verdict uses Welch's" if settings.bootstrap_resamples else ""),
            "verdict": f"higher / lower when the two-sided p-value is below {1 - settings.confidence:.2g}",
            "split": f"Pearson chi-square goodness of fit, flagged below p = {settings.srm_p_value:g}"}
        return {
            "format": "lifetag.campaign/1",
            "assignments": self.assignments, "orders": self.orders, "customers": self.customers,
            "window": {"start": str(first.window.start.date()), "days": first.window.days,
                       "last_day": str(first.window.last_day.date())},
            "model_version": first.model_version,
            "settings": settings.model_dump(),
            "methods": methods,
            "intake": {"orders": self.intake.orders.summary(),
                       "customers": self.intake.customers.summary() if self.intake.customers else None},
            "notes": list(self.notes),
            "campaigns": [r.to_dict() for r in self.results],
        }


def _lift(treated: float, control: float) -> float | None:
    return (treated - control) / control if control else None


# ---------------------------------------------------------------------------------------------
# Assignments


def read_assignments(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The assignments file as `customer_id`, `group` (treatment / control), `campaign` and `row` (1 = the
    first data row), every row checked.

    CSV (any delimiter DuckDB recognises; every value read as text, so `00042` stays `00042`) or Parquet.
    Columns are matched trimmed and in any case; group names too. Without a `campaign` column the file is
    one campaign, named after the file. Raises CampaignError, naming the file, column and example rows.
    """
    path = Path(path)
    frame = _read_table(path)
    columns = {str(c).strip().lower(): c for c in frame.columns}
    missing = [c for c in ("customer_id", "group") if c not in columns]
    if missing:
        raise CampaignError(
            f"{path}: required column {' and '.join(repr(c) for c in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing. The file has columns: "
            f"{', '.join(map(str, frame.columns))}. An assignments file has customer_id, group (treatment or "
            "control) and, for several campaigns at once, campaign.")
    group = _text(frame[columns["group"]])
    out = pd.DataFrame({"customer_id": _text(frame[columns["customer_id"]]), "group": group.str.lower(),
                        "group_given": group, "row": np.arange(1, len(frame) + 1)})
    out["campaign"] = _text(frame[columns["campaign"]]) if "campaign" in columns else path.stem
    _check_rows(path, out, has_campaign="campaign" in columns)
    return out[["customer_id", "group", "campaign", "row"]]


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix not in _ASSIGNMENT_FORMATS:
        raise CampaignError(f"{path}: unknown assignments format '{suffix or '(none)'}'; give a .csv or .parquet file "
                            "with columns customer_id, group and, optionally, campaign.")
    if not path.is_file():
        why = "it is a folder, not a file" if path.is_dir() else "no such file"
        raise CampaignError(f"{path}: cannot read the assignments: {why}. Check the path passed to --assignments.")
    if path.stat().st_size == 0:
        raise CampaignError(f"{path}: the file is empty (0 bytes). Check that the export finished writing.")
    con = duckdb.connect(":memory:")
    try:
        lock_external_access(con, [path])  # the one file it may read
        reader = "read_csv(?, all_varchar = true, header = true)" if suffix == ".csv" else "read_parquet(?)"
        frame = con.execute(f"SELECT * FROM {reader}", [str(path)]).df()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CampaignError(f"{path}: cannot read the assignments as {suffix[1:].upper()} ({first}). Give a .csv or "
                            ".parquet file with columns customer_id, group and, optionally, campaign.") from None
    finally:
        con.close()
    if frame.empty:
        raise CampaignError(f"{path}: the file has no rows. Check that it is the right file and that it was fully written.")
    return frame


def _text(values: pd.Series) -> pd.Series:
    """Values as trimmed text, missing as ''."""
    return values.astype(object).where(values.notna(), "").astype(str).str.strip()


def _examples(rows: pd.DataFrame, column: str) -> str:
    """'rows 4, 9, 12, ...: 'x', 'y', 'z', ...' for a one-paragraph message."""
    shown = rows.head(_EXAMPLES)
    noun = "row" if len(rows) == 1 else "rows"
    more = ", ..." if len(rows) > _EXAMPLES else ""
    values = ", ".join(repr(v) for v in shown[column])
    return f"{noun} {', '.join(str(r) for r in shown['row'])}{more}: {values}{more}"


def _check_rows(path: Path, frame: pd.DataFrame, has_campaign: bool) -> None:
    empty = frame[frame["customer_id"] == ""]
    if len(empty):
        raise CampaignError(f"{path}: column 'customer_id' has {len(empty):,} {'row' if len(empty) == 1 else 'rows'} "
                            f"with an empty customer id ({_examples(empty, 'customer_id')}). Every assigned customer "
                            "needs the id the orders use.")
    other = frame[~frame["group"].isin(GROUPS)]
    if len(other):
        raise CampaignError(
            f"{path}: column 'group' has {len(other):,} {'row that is' if len(other) == 1 else 'rows that are'} "
            f"neither treatment nor control ({_examples(other, 'group_given')}). Name the groups treatment and "
            "control (in any case); put several campaigns in one file with a campaign column.")
    if has_campaign:
        unnamed = frame[frame["campaign"] == ""]
        if len(unnamed):
            raise CampaignError(f"{path}: column 'campaign' has {len(unnamed):,} empty "
                                f"{'value' if len(unnamed) == 1 else 'values'} ({_examples(unnamed, 'campaign')}). "
                                "Name the campaign of every row, or drop the column for a file of one campaign.")
    repeated = frame[frame.duplicated(["campaign", "customer_id"], keep=False)]
    if len(repeated):
        first = repeated.iloc[0]
        rows = repeated[(repeated["campaign"] == first["campaign"]) & (repeated["customer_id"] == first["customer_id"])]
        ids = repeated["customer_id"].nunique()
        raise CampaignError(
            f"{path}: {ids:,} customer {'id appears' if ids == 1 else 'ids appear'} more than once in a campaign, "
            f"e.g. {first['customer_id']!r} in campaign {first['campaign']!r} (rows {', '.join(map(str, rows['row']))}: "
            f"{', '.join(rows['group'])}). Assign each customer once per campaign.")
    for name, rows in frame.groupby("campaign", sort=True):
        counts = rows["group"].value_counts()
        for group in GROUPS:
            if not counts.get(group, 0):
                other_group = GROUPS[1 - GROUPS.index(group)]
                raise CampaignError(
                    f"{path}: campaign {name!r} has no {group} group ({counts.get(other_group, 0):,} {other_group} "
                    f"rows, 0 {group}), so there is nothing to compare {other_group} with. Add the {group} customers "
                    "(column group) or check that the right file was passed.")


# ---------------------------------------------------------------------------------------------
# What the comparison reads: outcomes in the window and strata at the start


@dataclass(frozen=True)
class CampaignInputs:
    """Everything the comparison needs, read once.

    customers: one row per assignment: customer_id, campaign, group, row, orders and spend in the
    window (0 when none), converted (orders > 0), known (in the orders or the customers table),
    rfm_segment and churn_tier at the start (NO_ORDER for customers without a purchase before it).
    """

    customers: pd.DataFrame
    window: Window
    model_version: str
    intake: Intake
    labels: dict[str, dict[str, tuple[str, str]]]  # by -> stratum key -> (label, label_zh), in display order


def settings_with(config: Config, treatment_share: float | None = None,
                  max_unknown_share: float | None = None) -> CampaignConfig:
    """The config's campaign settings with the command line's overrides, checked."""
    values = config.campaign.model_dump()
    given = {"treatment_share": treatment_share, "max_unknown_share": max_unknown_share}
    values.update({k: v for k, v in given.items() if v is not None})
    try:
        return CampaignConfig.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')} {e['input']!r}: {e['msg']}"
                             for e in exc.errors())
        raise CampaignError(f"{problems}. --treatment-share is a share strictly between 0 and 1 (0.5 = half treated); "
                            "--max-unknown-share one from 0 to 1.") from None


def read_inputs(
    assignments: str | os.PathLike[str], orders: str | os.PathLike[str], start: str | pd.Timestamp, days: int,
    config: Config, settings: CampaignConfig, model_uri: str | None = None, bundle: Bundle | None = None,
    model_version: str | None = None, customers: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
) -> CampaignInputs:
    """Read and check the assignments and the orders, refuse what cannot be compared, and tag at the start."""
    if days < 1:
        raise CampaignError(f"--days {days}: a window needs at least one day.")
    window = Window(as_timestamp(start).normalize(), int(days))
    assigned = read_assignments(assignments)
    if bundle is None:
        from serving.bundle import load_model

        bundle, model_version = load_model(model_uri)
    con = connect(config.engine)
    try:
        intake = open_sources(con, orders, config, customers, quarantine)
        _check_window(con, window, str(orders))
        outcomes = _outcomes(con, assigned, window, config, has_customers=intake.customers is not None)
    finally:
        con.close()
    frame = assigned.merge(outcomes, on="customer_id", how="left", validate="many_to_one")
    _check_unknown(frame, Path(assignments), orders, customers, settings.max_unknown_share)
    strata = _tags_at_start(orders, window.start, config, bundle, model_version or "", customers)
    frame = frame.merge(strata, on="customer_id", how="left", validate="many_to_one")
    for by in STRATA:
        frame[by] = frame[by].fillna(NO_ORDER)
    return CampaignInputs(frame, window, model_version or "", intake, _stratum_labels(config))


def _check_window(con: duckdb.DuckDBPyConnection, window: Window, label: str) -> None:
    """Refuse a start before the first order and a window that ends after the last one."""
    require_orders_before(con, "orders", window.start, label, option="--start")
    last = pd.Timestamp(con.execute("SELECT max(order_ts) FROM orders").fetchall()[0][0]).normalize()
    if window.last_day > last:
        most = (last - window.start).days + 1
        raise CampaignError(
            f"{label}: the window --start {window.start.date()} --days {window.days} runs to {window.last_day.date()}, "
            f"but the last order in the file is on {last.date()}: the days after it would count as days without a "
            f"purchase for every customer. Pick an earlier --start or fewer --days (at most {most:,} from "
            f"{window.start.date()}), or pass a more recent export.")


def _outcomes(con: duckdb.DuckDBPyConnection, assigned: pd.DataFrame, window: Window, config: Config,
              has_customers: bool) -> pd.DataFrame:
    """Per assigned id: orders and net spend in the window, and whether the orders or the customers table know it."""
    con.register("_campaign_ids", pa.table({"customer_id": pa.array(assigned["customer_id"].unique(), pa.string())}))
    known = "SELECT customer_id FROM orders" + (" UNION SELECT customer_id FROM customers" if has_customers else "")
    frame = con.sql(f"""
SELECT a.customer_id,
       coalesce(w.future_orders, 0) AS orders,
       coalesce(w.future_spend, 0.0) AS spend,
       a.customer_id IN ({known}) AS known
FROM _campaign_ids a LEFT JOIN ({window_sql('orders', window.start, window.days, config)}) w USING (customer_id)
""").df()
    frame["orders"] = frame["orders"].astype(int)
    frame["spend"] = frame["spend"].astype(float)
    frame["converted"] = frame["orders"] > 0
    return frame


def _check_unknown(frame: pd.DataFrame, assignments: Path, orders: str | os.PathLike[str],
                   customers: str | os.PathLike[str] | None, limit: float) -> None:
    """Refuse a campaign with more ids unknown to the orders and the customers table than `limit` allows."""
    where = f"--orders {orders}" + (f" nor --customers {customers}" if customers is not None else "")
    for name, rows in frame.groupby("campaign", sort=True):
        unknown = rows[~rows["known"]]
        if len(unknown) > limit * len(rows):
            raise CampaignError(
                f"{assignments}: {len(unknown):,} of the {len(rows):,} customer ids of campaign {name!r} "
                f"({len(unknown) / len(rows):.1%}) are in neither {where} ({_examples(unknown, 'customer_id')}), more "
                f"than --max-unknown-share {limit:.1%} allows. Check that the ids are written as the orders write them "
                "(leading zeros, prefixes) and that the files are of the same shop; a higher --max-unknown-share "
                "analyses them as customers who bought nothing.")


def _tags_at_start(orders: str | os.PathLike[str], start: pd.Timestamp, config: Config, bundle: Bundle,
                   model_version: str, customers: str | os.PathLike[str] | None) -> pd.DataFrame:
    """rfm_segment and churn_tier of every customer tagged at `start`, by the batch's own `score` (into scratch)."""
    from serving.scoring import score

    scratch = scratch_folder("campaign")
    try:
        out = scratch / "tags.parquet"
        # The campaign's own intake has already stopped at bad rows, or set them aside where asked;
        # this second read sets the same rows aside in scratch.
        score(orders, start, out, config, bundle=bundle, model_version=model_version, customers=customers,
              quarantine=scratch / "bad_rows.csv")
        tags = pq.read_table(out, columns=["customer_id", *STRATA]).to_pandas()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tags


def _stratum_labels(config: Config) -> dict[str, dict[str, tuple[str, str]]]:
    segments = {key: (s.label, s.label_zh) for key, s in config.rfm.segments.items()}
    return {"rfm_segment": {**segments, NO_ORDER: NO_ORDER_LABELS},
            "churn_tier": {**TIER_LABELS, NO_ORDER: NO_ORDER_LABELS}}


# ---------------------------------------------------------------------------------------------
# The comparison


def evaluate(
    assignments: str | os.PathLike[str], orders: str | os.PathLike[str], start: str | pd.Timestamp, days: int,
    config: Config, settings: CampaignConfig | None = None, model_uri: str | None = None, bundle: Bundle | None = None,
    model_version: str | None = None, customers: str | os.PathLike[str] | None = None,
    quarantine: str | os.PathLike[str] | None = None,
) -> CampaignRun:
    """Compare treatment with control over [start, start + days) for every campaign of the assignments file."""
    settings = settings or config.campaign
    inputs = read_inputs(assignments, orders, start, days, config, settings, model_uri, bundle, model_version,
                         customers, quarantine)
    results = [compare(inputs, name, settings) for name in sorted(inputs.customers["campaign"].unique())]
    return CampaignRun(str(assignments), str(orders), str(customers) if customers is not None else None, results,
                       inputs.intake, inputs.intake.notes())


def compare(inputs: CampaignInputs, campaign: str, settings: CampaignConfig) -> CampaignResult:
    """Treatment against control in one campaign: the split, the measures overall and per stratum."""
    rows = inputs.customers[inputs.customers["campaign"] == campaign]
    treated, control = rows[rows["group"] == "treatment"], rows[rows["group"] == "control"]
    split = sample_ratio(len(treated), len(control), settings.treatment_share, settings.srm_p_value)
    unknown = {g: int((~rows.loc[rows["group"] == g, "known"]).sum()) for g in GROUPS}
    strata = [_stratum(rows, by, key, labels, settings, index)
              for by, keys in inputs.labels.items() for index, (key, labels) in enumerate(keys.items())
              if (rows[by] == key).any()]
    result = CampaignResult(campaign, inputs.window, inputs.model_version, settings, split, unknown,
                            _measures(treated, control, settings, seed_key=0), strata)
    return _with_notes(result)


def _stratum(rows: pd.DataFrame, by: str, key: str, labels: tuple[str, str], settings: CampaignConfig,
             index: int) -> Stratum:
    inside = rows[rows[by] == key]
    treated, control = inside[inside["group"] == "treatment"], inside[inside["group"] == "control"]
    small = min(len(treated), len(control)) < settings.min_stratum_customers
    note = (f"fewer than {settings.min_stratum_customers} customers in an arm: means only, no interval or verdict"
            if small else "")
    seed_key = 1 + index + 100 * list(STRATA).index(by)
    return Stratum(by, key, labels[0], labels[1], len(treated), len(control),
                   _measures(treated, control, settings, seed_key), note)


def _measures(treated: pd.DataFrame, control: pd.DataFrame, settings: CampaignConfig, seed_key: int) -> list[Measure]:
    """Conversion, orders and spend per customer of two arms; means only when an arm is below the minimum."""
    enough = min(len(treated), len(control)) >= settings.min_stratum_customers
    measures = []
    for name in MEASURES:
        column = "converted" if name == "conversion" else name
        t, c = treated[column].to_numpy(dtype=float), control[column].to_numpy(dtype=float)
        t_mean, c_mean = (float(t.mean()) if len(t) else float("nan")), (float(c.mean()) if len(c) else float("nan"))
        if not enough:
            measures.append(Measure(name, None, t_mean, c_mean, "too few customers"))
            continue
        difference = (rate_difference(int(t.sum()), len(t), int(c.sum()), len(c), settings.confidence)
                      if name == "conversion" else mean_difference(t, c, settings.confidence))
        bootstrap = (bootstrap_interval(t, c, settings.confidence, settings.bootstrap_resamples,
                                        settings.seed + seed_key)
                     if name == "spend" and settings.bootstrap_resamples else None)
        measures.append(Measure(name, difference, t_mean, c_mean, _verdict(difference, settings), bootstrap))
    return measures


def _verdict(difference: Difference, settings: CampaignConfig) -> str:
    if difference.p_value >= 1 - settings.confidence:
        return "no clear difference"
    return "higher" if difference.difference > 0 else "lower"


def _with_notes(result: CampaignResult) -> CampaignResult:
    """The campaign's notes: the split, unknown ids, spend's two intervals, the strata as exploration."""
    notes = []
    split = result.split
    if split.mismatch:
        notes.append(split_warning(split))
    unknown = sum(result.unknown.values())
    if unknown:
        total = split.treatment + split.control
        notes.append(f"{unknown:,} assigned ids ({unknown / total:.1%}: {result.unknown['treatment']:,} treatment, "
                     f"{result.unknown['control']:,} control) are in neither the orders nor the customers table; "
                     "they are analysed as assigned, as customers who bought nothing")
    spend = next(m for m in result.overall if m.name == "spend")
    if spend.bootstrap and spend.difference and _excludes_zero(spend.bootstrap) != _excludes_zero(
            (spend.difference.ci_low, spend.difference.ci_high)):
        notes.append("spend: Welch's interval and the bootstrap interval disagree about zero (heavy-tailed spend); "
                     "the verdict follows Welch's, read it with care")
    small = [s.label for s in result.strata if s.note]
    if small:
        notes.append(f"{', '.join(small)}: fewer than {result.settings.min_stratum_customers} customers in an arm, "
                     "so means only, no interval or verdict")
    tested = sum(1 for s in result.strata if not s.note)
    if tested:
        notes.append(f"the {tested} strata with a verdict are {tested} separate tests at the "
                     f"{1 - result.settings.confidence:.0%} level each, not corrected for multiple comparisons: "
                     "read a stratum's verdict as a pointer to test on its own, not as a finding")
    return CampaignResult(result.campaign, result.window, result.model_version, result.settings, result.split,
                          result.unknown, result.overall, result.strata, notes)


def _excludes_zero(interval: tuple[float, float]) -> bool:
    return interval[0] > 0 or interval[1] < 0


def split_warning(split: SampleRatio) -> str:
    """The sample-ratio-mismatch warning, in one sentence."""
    return (f"sample-ratio mismatch: {split.treatment:,} treatment and {split.control:,} control "
            f"({split.observed_share:.1%} treated) where {split.intended_share:.1%} was intended (chi-square "
            f"p = {split.p_value:.2g}, below {split.threshold:g}): the assignment did not work as planned, so the "
            "arms may differ by more than chance; find out why before trusting the comparison")


def headline(result: CampaignResult) -> str:
    """'Treated customers converted more: 23.1% vs 18.0%, +5.1 points (95% CI +2.3 to +7.9), p < 0.001.'"""
    conversion = next(m for m in result.overall if m.name == "conversion")
    rates = f"{conversion.treatment_mean:.1%} vs {conversion.control_mean:.1%}"
    d = conversion.difference
    if d is None:
        sentence = f"Too few customers in an arm to judge conversion ({rates})."
    else:
        figures = (f"{rates}, {100 * d.difference:+.1f} points ({result.settings.confidence:.0%} CI "
                   f"{100 * d.ci_low:+.1f} to {100 * d.ci_high:+.1f}), {format_p(d.p_value)}")
        sentence = {"higher": f"Treated customers converted more: {figures}.",
                    "lower": f"Treated customers converted less: {figures}.",
                    }.get(conversion.verdict, f"No clear difference in conversion: {figures}.")
    if result.split.mismatch:
        sentence = "Sample-ratio mismatch, do not trust this comparison yet. " + sentence
    return sentence


def format_p(p: float | None) -> str:
    """'p = 0.034', 'p < 0.001', or '' when there is none."""
    if p is None:
        return ""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_figure(measure: str, value: float | None, signed: bool = False) -> str:
    """A mean or a difference as people read it: conversion in % (a difference in points), orders per
    customer to 3 decimals, spend to 2; '-' when there is none."""
    if value is None or value != value:
        return "-"
    if measure == "conversion":
        return f"{100 * value:+.1f} pts" if signed else f"{value:.1%}"
    digits = 3 if measure == "orders" else 2
    return f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"


def format_interval(figures: dict[str, Any], bootstrap: bool = True) -> str:
    """'+2.3 pts to +7.9 pts' from a measure's `to_dict()`, with spend's bootstrap interval after it."""
    if figures["ci_low"] is None:
        return "-"
    measure = figures["measure"]
    text = f"{format_figure(measure, figures['ci_low'], True)} to {format_figure(measure, figures['ci_high'], True)}"
    if bootstrap and figures.get("bootstrap_ci_low") is not None:
        text += (f" (bootstrap {format_figure(measure, figures['bootstrap_ci_low'], True)} to "
                 f"{format_figure(measure, figures['bootstrap_ci_high'], True)})")
    return text
