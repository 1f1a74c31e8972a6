"""Typed configuration: loads configs/default.yaml, merges a user YAML over it, validates it."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from configs.errors import LifetagError

__all__ = [
    "Attribute",
    "CampaignConfig",
    "Config",
    "ConfigError",
    "CustomersConfig",
    "OrderColumns",
    "RFM_SEGMENT_KEYS",
    "ReportConfig",
    "REQUIRED_ORDER_FIELDS",
    "OPTIONAL_ORDER_FIELDS",
    "load_config",
]

DEFAULT_PATH = Path(__file__).with_name("default.yaml")
REQUIRED_ORDER_FIELDS = ("customer_id", "order_ts", "amount")
OPTIONAL_ORDER_FIELDS = (
    "order_id", "quantity", "category", "product_id", "discount", "channel", "status",
)


class ConfigError(LifetagError, ValueError):
    """A configuration file is missing, unreadable or holds an invalid value."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Columns(_Strict):
    def mapped(self) -> dict[str, str]:
        """Field name -> source column or expression, for the fields that are mapped."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class OrderColumns(_Columns):
    """Source column name (or SQL expression) for each order field; None = the export does not have it."""

    customer_id: str
    order_ts: str
    amount: str
    order_id: str | None = None
    quantity: str | None = None
    category: str | None = None
    product_id: str | None = None
    discount: str | None = None
    channel: str | None = None
    status: str | None = None


# Text encodings DuckDB's CSV reader decodes without an extension, and the other names people write for them.
CSV_ENCODINGS = ("utf-8", "utf-16", "latin-1")
_ENCODING_ALIASES = {"utf8": "utf-8", "utf16": "utf-16", "latin1": "latin-1", "iso-8859-1": "latin-1",
                     "iso8859-1": "latin-1", "l1": "latin-1"}


class SourceConfig(_Strict):
    """How a CSV, Parquet or DuckDB source is read: text timestamps, CSV separator and encoding, database table."""

    timestamp_format: str | None = None
    delimiter: str | None = None
    encoding: Literal["utf-8", "utf-16", "latin-1"] = "utf-8"
    table: str = "orders"

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding_name(cls, v: Any) -> Any:
        if isinstance(v, str):
            name = v.strip().lower().replace("_", "-")
            return _ENCODING_ALIASES.get(name, name)
        return v


def _normalised(values: list[str]) -> list[str]:
    """Statuses and null ids are matched trimmed and case-insensitively: keep them that way, once each."""
    return list(dict.fromkeys(v.strip().lower() for v in values))


class OrdersConfig(SourceConfig):
    columns: OrderColumns
    # Status values (trimmed, case-insensitive) of money going back, and of a purchase. A status in
    # neither list makes its line a bad row, so a new status is never counted as a purchase unasked.
    return_statuses: list[str] = Field(default_factory=lambda: ["returned", "cancelled", "canceled"])
    purchase_statuses: list[str] = Field(default_factory=lambda: [
        "completed", "complete", "paid", "shipped", "delivered", "fulfilled", "closed", "ok"])
    # Id texts (trimmed, case-insensitive) that mean "no id": such a customer_id is an empty one.
    # Also applied to the customers table, so both tables agree on who is a customer.
    null_ids: list[str] = Field(default_factory=lambda: ["", "null", "none", "nan", "n/a", "na"])
    # Lines of one order may carry times this far apart (exports stamp each line); the order is
    # taken at its first line's time. Further apart, or different customers: a conflicting order.
    order_time_tolerance_minutes: float = Field(60.0, ge=0)
    # Lines identical in every source column: keep them all (some exports repeat a line that was
    # bought twice) or drop the repeats. Counted in the run summary either way.
    duplicate_lines: Literal["keep", "drop"] = "keep"

    @field_validator("return_statuses", "purchase_statuses", "null_ids")
    @classmethod
    def _trimmed_lower(cls, v: list[str]) -> list[str]:
        return _normalised(v)

    @model_validator(mode="after")
    def _statuses(self) -> "OrdersConfig":
        if not self.purchase_statuses:
            raise ValueError("purchase_statuses must list at least one status (e.g. completed)")
        both = [s for s in self.purchase_statuses if s in self.return_statuses]
        if both:
            raise ValueError(f"a status cannot be both a purchase and a return: {', '.join(both)} "
                             "(in purchase_statuses and return_statuses)")
        return self


class CustomerColumns(_Columns):
    """Source column (or SQL expression) for the customers table's own fields."""

    customer_id: str = "customer_id"
    signup_ts: str | None = None


class Attribute(_Strict):
    """One static attribute: its source column (or SQL expression; default: the attribute's name) and kind."""

    type: Literal["categorical", "numeric"]
    column: str | None = None


ATTRIBUTE_NAME = r"^[a-z][a-z0-9_]*$"


class CustomersConfig(SourceConfig):
    # Where the customers table is read from when --customers is not given (null: no table).
    source: str | None = None
    table: str = "customers"
    columns: CustomerColumns = Field(default_factory=CustomerColumns)
    # Static attributes: output/feature name -> kind (and source column when it differs). Columns
    # of the source that are not declared here are ignored, and the run says which.
    attributes: dict[str, Attribute] = Field(default_factory=dict)
    # first_purchase_prob: chance that a registered customer places a first order within this many days.
    first_purchase_days: int = Field(30, gt=0)
    # A first-purchase model is learned only from sign-ups at most this old at each cut-off.
    first_purchase_lookback_days: int = Field(365, gt=0)

    @field_validator("attributes", mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        # `region: categorical` is short for `region: {type: categorical}`.
        if isinstance(v, dict):
            return {k: ({"type": a} if isinstance(a, str) else a) for k, a in v.items()}
        return v

    @field_validator("attributes")
    @classmethod
    def _plain_names(cls, v: dict[str, Attribute]) -> dict[str, Attribute]:
        bad = [k for k in v if not re.match(ATTRIBUTE_NAME, k)]
        if bad:
            raise ValueError(f"attribute names must be lower-case identifiers (letters, digits, _): {', '.join(bad)}")
        return v

    def source_column(self, name: str) -> str:
        """The source column (or expression) of attribute `name`."""
        return self.attributes[name].column or name


class FeaturesConfig(_Strict):
    windows_days: list[int] = Field(default_factory=lambda: [30, 90, 180, 365])
    trend_days: int = 90
    # The season columns (features.behaviour.season_columns): off until an out-of-time ablation shows they help.
    season: bool = False
    # Per customer, last year's same calendar window: orders and net spend in the n days from the cut-off
    # minus 365 days (features.behaviour.last_year_columns), one pair per n. Empty: no such columns.
    last_year_days: list[int] = Field(default_factory=list)

    @field_validator("last_year_days")
    @classmethod
    def _within_a_year(cls, v: list[int]) -> list[int]:
        wrong = [d for d in v if not 0 < d < 365]
        if wrong:
            raise ValueError(f"last_year_days must be day counts from 1 to 364 (a window of 365 or more days from a "
                             f"year before the cut-off would reach the cut-off: spend_365d is that window); got "
                             f"{', '.join(map(str, wrong))}")
        return sorted(set(v))

    @field_validator("windows_days")
    @classmethod
    def _positive_windows(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 for d in v):
            raise ValueError("windows_days must be a non-empty list of positive day counts")
        return sorted(set(v))


class HorizonsConfig(_Strict):
    repurchase_days: int = Field(30, gt=0)
    churn_days: int = Field(90, gt=0)
    ltv_days: int = Field(365, gt=0)


class SegmentLabel(_Strict):
    label: str
    label_zh: str
    action: str
    action_zh: str | None = None  # the action in Chinese (`lifetag report --lang zh`; English when absent)


RFM_SEGMENT_KEYS = (
    "important_value", "important_develop", "important_retain", "important_winback",
    "general_value", "general_develop", "general_retain", "general_winback",
)


class RfmConfig(_Strict):
    high_score_from: int = Field(3, ge=1, le=5)
    segments: dict[str, SegmentLabel] = Field(default_factory=dict)

    @field_validator("segments")
    @classmethod
    def _all_eight(cls, v: dict[str, SegmentLabel]) -> dict[str, SegmentLabel]:
        missing = [k for k in RFM_SEGMENT_KEYS if k not in v]
        unknown = [k for k in v if k not in RFM_SEGMENT_KEYS]
        if missing or unknown:
            raise ValueError(
                f"rfm.segments must hold exactly the eight keys {', '.join(RFM_SEGMENT_KEYS)}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; unknown {', '.join(unknown)}" if unknown else "")
            )
        return v


AGE_DEPENDENT_FEATURES = (
    "tenure_days", "active_span_days", "frequency", "repeat_orders", "monetary_total", "orders_365d",
    "spend_365d", "discount_total", "return_count", "signup_days",
)


class CutoffPlan(_Strict):
    """One target's rolling cut-offs: how many, and how many days apart."""

    cutoffs: int = Field(ge=2)
    cutoff_step_days: int = Field(gt=0)
    # Also a cut-off a year before as_of, whose label window is last year's coming window (the same
    # calendar days the model will predict), where the history and the horizon (<= 365 days) allow.
    last_year: bool = False


class TrainingConfig(_Strict):
    cutoffs: int = Field(4, ge=2)
    cutoff_step_days: int = Field(30, gt=0)
    # A target's own cut-off count and spacing instead of cutoffs / cutoff_step_days (targets not
    # listed take those). Repurchase on 8 cut-offs 30 days apart: better out of time on 6 of 7 harness
    # shops, worse on none beyond the seed spread (README, "Accuracy", for what each plan did).
    target_cutoffs: dict[Literal["churn", "repurchase", "ltv"], CutoffPlan] = Field(
        default_factory=lambda: {"repurchase": CutoffPlan(cutoffs=8, cutoff_step_days=30)})
    # Every target not in target_cutoffs also trains on a cut-off a year before as_of (CutoffPlan.last_year).
    last_year_cutoff: bool = False
    validation_cutoffs: int = Field(1, ge=1)
    min_history_days: int = Field(60, ge=0)
    min_examples: int = Field(200, ge=10)
    trials: int = Field(8, ge=0)
    seed: int = 42
    max_rounds: int = Field(500, gt=0)
    early_stopping_rounds: int = Field(30, gt=0)
    max_tuning_rows: int = Field(120_000, gt=1000)
    promote_tolerance: float = Field(0.0, ge=0)
    # Seed bagging: each target's chosen LightGBM model as the average (on the link scale) of this many
    # boosters fitted with seeds derived from `seed`; 1 fits one. Stored as one booster, so serving is
    # unchanged. Costs (bag_members - 1) extra final fits per target. 3: every ranking figure better on
    # the holdout harness (7 of 7 shops for churn and repurchase AUC), none worse beyond the seed spread.
    bag_members: int = Field(3, ge=1, le=20)
    # Map from the classifiers' raw scores to probabilities, fitted on the validation cut-off:
    # logistic (a slope and an intercept on the log-odds) keeps every customer's order and never
    # says 0 or 1; isotonic can tie large groups on one value; none ships the raw scores. None by
    # default: on the holdout harness a map fitted on the validation cut-off carries that cut-off's
    # base rate to as_of and made churn ECE worse out of time on most shops (README, "Accuracy").
    calibration: Literal["logistic", "isotonic", "none"] = "none"
    # Candidates the validation cut-off chooses from. Classifiers: plain LightGBM, and boosted from
    # the BG/NBD prediction when bgnbd_offset is on. LTV: tweedie, hurdle (P(buy) x value),
    # tweedie_bgnbd_offset (boosted from BG/NBD + Gamma-Gamma), bgnbd_gg (that prediction itself).
    bgnbd_offset: bool = True
    # How a classifier is chosen on the validation cut-off: the lowest log loss ("best"), or ("margin")
    # one without the BG/NBD offset replaces the best one boosted from it only when its log loss is
    # lower by a clear margin (a 90% paired-bootstrap interval of the difference above 0).
    classifier_choice: Literal["best", "margin"] = "best"
    ltv_models: list[Literal["tweedie", "hurdle", "tweedie_bgnbd_offset", "bgnbd_gg"]] = Field(
        default_factory=lambda: ["tweedie", "hurdle", "tweedie_bgnbd_offset", "bgnbd_gg"], min_length=1)
    # How the LTV candidate is chosen: its Gini on the longest out-of-time gap the cut-offs offer
    # (refitted on the earliest cut-off, scored on the validation one), or on the validation cut-off.
    ltv_choice: Literal["gap", "validation"] = "gap"
    # The LTV level (total spend) at as_of: "candidates" takes the geometric mean of the totals of the
    # chosen model and of the fitted candidates the out-of-time gap cannot tell from it (they agree on
    # the order of customers far more than on the level); "gap" the level closest to actual over that
    # gap (the model's own, BG/NBD's or the offset model's), which "candidates" also falls back to when
    # the gap tells every other fitted candidate apart from the winner.
    ltv_level: Literal["candidates", "gap"] = "candidates"
    # Where the LTV level shipped is BG/NBD + Gamma-Gamma's and the horizon is under a year: multiply it by
    # that baseline's actual / predicted total over the same window a year before as_of, when that miss
    # is 1.5x or more either way (bounded by 3x; training.pipeline._last_year_level).
    ltv_last_year_level: bool = False
    # How many of an LTV Tweedie candidate's rounds to keep out of time (training.pipeline._gap_rounds):
    # those with the lowest Tweedie loss over the gap ("loss"), or the lowest loss once the predictions
    # are scaled to the actual total there ("level_free": how they share out the spend, the level being
    # set apart; a gap across a season then does not count the season against every round), or the loss
    # and, only where it keeps no round of a candidate boosted from the BG/NBD offset, the level-free loss
    # ("level_free_if_none").
    ltv_gap_rounds: Literal["loss", "level_free", "level_free_if_none"] = "loss"
    # Features the models do not see. Cumulative counts and sums grow with a customer's age, so a
    # model trained on younger cut-offs misreads older customers (on CDNOW it overstated the next
    # half-year's spend by 20-30%); rates, windows, recency and the BG/NBD columns carry the same
    # information without the drift.
    exclude_features: list[str] = Field(default_factory=lambda: list(AGE_DEPENDENT_FEATURES))

    def cutoff_plan(self, target: str | None = None) -> CutoffPlan:
        """`target`'s cut-off count and spacing: its own (target_cutoffs) or the shared ones."""
        shared = CutoffPlan(cutoffs=self.cutoffs, cutoff_step_days=self.cutoff_step_days,
                            last_year=self.last_year_cutoff)
        return self.target_cutoffs.get(target, shared) if target else shared


class TierThresholds(_Strict):
    high: float = Field(ge=0, le=1)
    medium: float = Field(ge=0, le=1)


class LifecycleConfig(_Strict):
    # new: first order within new_days; churned / dormant: no order for that many days;
    # at_risk: overdue against the customer's own cadence (days since last order / median gap),
    # or, for one-order customers who have no cadence yet, no order for at_risk_days.
    new_days: int = Field(30, gt=0)
    at_risk_overdue: float = Field(1.5, gt=0)
    at_risk_days: int = Field(60, gt=0)
    dormant_days: int = Field(180, gt=0)
    churned_days: int = Field(365, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "LifecycleConfig":
        if not self.at_risk_days <= self.dormant_days <= self.churned_days:
            raise ValueError("lifecycle thresholds need at_risk_days <= dormant_days <= churned_days")
        return self


class PromoPeriod(_Strict):
    name: str
    start: date
    end: date  # inclusive


class ScoringConfig(_Strict):
    # churn_tier: churn_risk at or above `high` / `medium`. value_tier: share of the training
    # population (at as_of) whose predicted LTV is above the cut, e.g. high 0.2 = top 20%.
    churn_tier: TierThresholds = Field(default_factory=lambda: TierThresholds(high=0.7, medium=0.4))
    value_tier_top_share: TierThresholds = Field(default_factory=lambda: TierThresholds(high=0.2, medium=0.5))
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    promo_periods: list[PromoPeriod] = Field(default_factory=list)
    # Named boolean SQL expressions over the scored columns (features, predictions, RFM, lifecycle).
    scenarios: dict[str, str] = Field(default_factory=dict)
    # Customers per batch handed to the models; bounds memory, never changes results.
    batch_customers: int = Field(200_000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "ScoringConfig":
        if not self.churn_tier.medium <= self.churn_tier.high:
            raise ValueError("scoring.churn_tier needs medium <= high (they are churn_risk thresholds)")
        if not self.value_tier_top_share.high <= self.value_tier_top_share.medium:
            raise ValueError("scoring.value_tier_top_share needs high <= medium (they are top shares)")
        return self


class CampaignConfig(_Strict):
    """`lifetag campaign`: the intended split, the unknown-id limit and the statistics' settings."""

    treatment_share: float = Field(0.5, gt=0, lt=1)
    max_unknown_share: float = Field(0.01, ge=0, le=1)
    confidence: float = Field(0.95, ge=0.5, lt=1)
    srm_p_value: float = Field(0.001, gt=0, lt=1)
    min_stratum_customers: int = Field(30, ge=2)
    bootstrap_resamples: int = Field(2000, ge=0)
    seed: int = 42


# A DuckDB memory size: a number and a unit (1000- or 1024-based), or a share of the machine's memory.
_MEMORY_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB|%)", re.IGNORECASE)
_MEMORY_EXAMPLES = "e.g. 2GB, 512MiB, 1.5GB or 60% (of the machine's memory)"


class EngineConfig(_Strict):
    """DuckDB resources. Every value is checked here and handed to DuckDB as a setting, never as SQL text."""

    memory_limit: str = "2GB"
    threads: int | None = Field(None, gt=0)  # None = all cores
    temp_directory: str | None = None  # where DuckDB spills; None = $LIFETAG_HOME/tmp

    @field_validator("memory_limit", mode="before")
    @classmethod
    def _memory_size(cls, v: Any) -> str:
        text = str(v).strip() if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
        match = _MEMORY_SIZE.fullmatch(text or "")
        if match is None or float(match.group(1)) <= 0 or (match.group(2) == "%" and float(match.group(1)) > 100):
            raise ValueError(f"{v!r} is not a memory size; write a positive number and a unit, {_MEMORY_EXAMPLES}")
        return f"{match.group(1)}{match.group(2)}"

    @field_validator("threads", mode="before")
    @classmethod
    def _whole_count(cls, v: Any) -> Any:
        # YAML `threads: yes` would otherwise pass as 1 thread.
        if isinstance(v, bool) or (v is not None and not isinstance(v, int) and not str(v).strip().isdigit()):
            raise ValueError(f"{v!r} is not a thread count; write a positive whole number (e.g. 4), or null for all cores")
        return v

    @field_validator("temp_directory")
    @classmethod
    def _a_path(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or "\0" in v):
            raise ValueError(f"{v!r} is not a folder path; write a folder for DuckDB to spill to, or null for $LIFETAG_HOME/tmp")
        return v


class ReportConfig(_Strict):
    """`lifetag report` and `lifetag score --clusters`: behavioural clusters and the report's tables."""

    # k-means: the number of clusters is the silhouette's best k in [min, max] (inclusive).
    clusters_k: tuple[int, int] = (3, 8)
    # Customers (a fixed hash sample) the clusters are fitted on; silhouettes use at most 10,000 of them.
    cluster_sample: int = Field(20_000, ge=100)
    seed: int = 42
    # Rows of the report's table of the customers with the most value at risk.
    top_customers: int = Field(20, ge=1, le=500)

    @field_validator("clusters_k", mode="before")
    @classmethod
    def _k_pair(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(k, int) and not isinstance(k, bool)
                                                                 for k in v):
            if not 2 <= v[0] <= v[1] <= 20:
                raise ValueError(f"{list(v)} is not a range of cluster counts; write [min, max] with "
                                 "2 <= min <= max <= 20, e.g. [3, 8]")
            return tuple(v)
        raise ValueError(f"{v!r} is not a range of cluster counts; write two whole numbers [min, max], e.g. [3, 8]")


class Config(_Strict):
    """The whole lifetag configuration."""

    orders: OrdersConfig
    customers: CustomersConfig = Field(default_factory=CustomersConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    horizons: HorizonsConfig = Field(default_factory=HorizonsConfig)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    campaign: CampaignConfig = Field(default_factory=CampaignConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror}).") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}.")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the YAML at `path` (if any), then `overrides`, validated into a Config."""
    data = _read_yaml(DEFAULT_PATH)
    source = "defaults"
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
        source = str(path)
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{source}: invalid configuration: {problems}.") from None
