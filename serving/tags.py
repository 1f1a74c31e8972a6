"""Customer tags: `tag_rows` turns customers' features into one row of tags each, the columns of docs/tags.md.

It is the one path from features to tags, shared by the nightly batch (`serving.scoring`, per batch
of a partition), the HTTP service and a Spark task: the bundle's predictions, tiers, RFM segment,
lifecycle stage, reasons, expected next order, value at risk and the scenario tags (boolean SQL
evaluated in a sandboxed DuckDB of its own). Everything learned from history comes from the bundle,
so a customer's row depends only on that customer's features, the bundle, the config and as_of: it
reads no file, takes no connection and needs no other customer's rows.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from configs.errors import LifetagError
from configs.schema import Config, ConfigError
from features.behaviour import as_timestamp
from features.engine import repr_ident
from features.expressions import ExpressionRefused, ExpressionSyntaxError, check_expression, sandbox, sandbox_cursor
from features.segments import RfmCutPoints, rfm_scores, rfm_segment
from serving.bundle import Bundle, booster_predict

__all__ = [
    "OUTPUT_DOCS", "REASON_PHRASES", "REGISTERED_STAGE", "TEXT_PHRASES", "ScoringError", "arrow_table", "check_feature_columns",
    "check_scenarios", "lifecycle_stage", "output_docs", "reasons", "scenario_columns", "tag_rows",
    "tags_table_markdown",
]


class ScoringError(LifetagError, ValueError):
    """Tags cannot be made or written: bundle/data mismatch, a tag expression failing on the rows, bad output."""


# The output columns before the scenario tags: name -> (meaning, unit).
OUTPUT_DOCS: dict[str, tuple[str, str]] = {
    "customer_id": ("customer identifier, exactly as in the source", "text"),
    "as_of": ("the cut-off the tags describe; only orders before it were seen", "date"),
    "model_version": ("registered model version (or bundle folder) that produced the predictions", "text"),
    "recency_days": ("days from the last order to as_of", "days"),
    "frequency": ("orders before as_of", "orders"),
    "monetary_total": ("net spend before as_of (returns netted out)", "currency"),
    "churn_risk": ("probability of no order in the churn horizon after as_of", "probability"),
    "repurchase_prob": ("probability of at least one order in the repurchase horizon after as_of", "probability"),
    "ltv": ("expected net spend in the LTV horizon after as_of", "currency"),
    "expected_next_order": ("expected date of the next order, from the repurchase probability read as a "
                            "constant daily hazard; empty when that is more than ten years away", "date"),
    "value_at_risk": ("churn_risk x ltv: spend expected to be lost if the customer churns", "currency"),
    "churn_tier": ("high / medium / low churn_risk (thresholds scoring.churn_tier)", "label"),
    "value_tier": ("high / medium / low predicted LTV (top shares of the training population, "
                   "scoring.value_tier_top_share; cut points stored with the model)", "label"),
    "high_value_potential": ("value_tier high while past spend is below the high tier of past spend", "flag"),
    "rfm_r": ("recency score 1-5 (5 = most recent), cut points from the model's training population", "score"),
    "rfm_f": ("frequency score 1-5 (5 = most orders)", "score"),
    "rfm_m": ("monetary score 1-5 (5 = biggest spend)", "score"),
    "rfm_segment": ("one of the eight classic RFM groups (key)", "label"),
    "rfm_segment_label": ("display label of the segment (rfm.segments in config)", "text"),
    "rfm_segment_label_zh": ("Chinese display label of the segment", "text"),
    "rfm_action": ("recommended action for the segment", "text"),
    "lifecycle_stage": ("new / active / at_risk / dormant / churned (scoring.lifecycle; at_risk is judged "
                        "against the customer's own median gap); registered: in the customers table, no order yet",
                        "label"),
    "reasons": ("the top three drivers raising this customer's churn risk, in words, for churn tiers medium and "
                "high (contributions of the churn model's additive explainer); empty for the low tier", "text"),
    "signup_days": ("days from sign-up to as_of (customers table); empty without one", "days"),
    "first_purchase_prob": ("registered customers who have not ordered: probability of a first order within "
                            "customers.first_purchase_days (default 30) after as_of; empty for buyers, and for "
                            "everyone when the model could not learn it (the run says why)", "probability"),
}
# Registered customers (customers table, no purchase before as_of) get these; order-based columns stay empty.
REGISTERED_STAGE = "registered"
MAX_EXPECTED_DAYS = 3650


def tag_rows(features: pd.DataFrame, bundle: Bundle, config: Config, as_of: str | pd.Timestamp, model_version: str,
             registered: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row of tags per customer: the columns of OUTPUT_DOCS, the customers-table attributes, then one
    true/false column per scenario tag (`config.scoring.scenarios`).

    features: one row per buyer (a purchase before `as_of`): the columns of `features.build` at `as_of`
        (with the customers table's signup_days and attributes when the model was trained with them)
        plus the scenario inputs categories_due, promo_orders and orders_since_promo, computed with the
        bundle's re-buy intervals (`features.scenarios.tag_inputs_relation`). It may have no rows; its
        columns are then still the order-based columns that registered customers' scenario tags see empty.
    registered: customers-table rows without a purchase before `as_of` (customer_id, signup_days,
        attributes: `features.registered`), tagged lifecycle_stage `registered`; their order-based
        columns are empty, frequency and monetary_total 0.
    as_of, model_version: written into every row (`as_of` is also the day expected_next_order counts from).

    Rows: the buyers in the order given, then the registered customers in the order given. A row depends
    only on its own customer's features, so any split of the customers gives the same rows. Check the
    scenario expressions once beforehand with `check_scenarios` for a typed, early error; here they
    are parsed again (no expression runs unchecked) and evaluated in a sandboxed DuckDB of their own.
    """
    as_of = as_timestamp(as_of)
    scenarios = config.scoring.scenarios
    parts = []
    if len(features):
        tags = _buyer_tags(features, bundle, config, as_of, model_version)
        # The expressions see the tags and, beside them, the features (a column of both: the tag's).
        parts.append(pd.concat([tags, _apply_scenarios(tags, scenarios, beside=features)], axis=1))
    if registered is not None and len(registered):
        tags = _registered_tags(registered, bundle, config, as_of, model_version)
        scored = _with_empty_features(tags, features)
        parts.append(pd.concat([tags, _apply_scenarios(scored, scenarios)], axis=1))
    if not parts:
        columns = [*OUTPUT_DOCS, *(a for a in config.customers.attributes if a in features), *scenarios]
        return pd.DataFrame({c: pd.Series([], dtype=bool if c in scenarios else object) for c in columns})
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def _with_empty_features(tags: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Registered customers' rows for scenario expressions: their tags, and every feature column empty
    (NaN for numbers, None otherwise), so an expression over order-based columns sees NULL, as in SQL."""
    scored = tags.copy()
    for name, dtype in features.dtypes.items():
        if name not in scored:
            numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            scored[name] = np.full(len(tags), np.nan) if numeric else np.full(len(tags), None, dtype=object)
    return scored


# ---------------------------------------------------------------------------------------------
# Tags that are pure functions of features and predictions


def lifecycle_stage(features: pd.DataFrame, config: Config) -> np.ndarray:
    """new / active / at_risk / dormant / churned per customer, from recency, tenure and own cadence."""
    rules = config.scoring.lifecycle
    recency = features["recency_days"].to_numpy(dtype=float)
    tenure = features["tenure_days"].to_numpy(dtype=float)
    repeat = features["repeat_orders"].to_numpy(dtype=float) > 0
    overdue = pd.to_numeric(features["overdue_ratio"], errors="coerce").to_numpy(dtype=float)
    # No usable cadence (one order, or a median gap of zero: orders placed together) -> the fixed day count.
    cadence = repeat & np.isfinite(overdue)
    at_risk = np.where(cadence, overdue >= rules.at_risk_overdue, recency >= rules.at_risk_days)
    return np.select(
        [recency >= rules.churned_days, recency >= rules.dormant_days, tenure < rules.new_days, at_risk],
        ["churned", "dormant", "new", "at_risk"],
        default="active",
    )


def _tier(values: np.ndarray, high: float, medium: float) -> np.ndarray:
    return np.where(values >= high, "high", np.where(values >= medium, "medium", "low"))


def _expected_next_order(repurchase_prob: np.ndarray, horizon_days: int, as_of: pd.Timestamp) -> np.ndarray:
    # P(order within h days) = 1 - exp(-rate * h)  =>  expected wait = 1 / rate.
    p = np.clip(repurchase_prob, 0.0, 1.0 - 1e-12)
    rate = -np.log1p(-p) / horizon_days
    with np.errstate(divide="ignore"):
        wait = np.where(rate > 0, 1.0 / rate, np.inf)
    known = wait <= MAX_EXPECTED_DAYS
    days = np.ceil(np.where(known, wait, 0.0)).astype("int64")
    # Day arithmetic on numpy dates; as objects they are datetime.date, None where the wait is too long.
    dates = (np.datetime64(as_of.normalize().date(), "D") + days.astype("timedelta64[D]")).astype(object)
    dates[~known] = None
    return dates


# Words for what drives churn risk. Every model feature has an entry: a phrase of its value, and the
# phrase for an empty value (e.g. no gap between orders with a single order). A `{n}` key stands for
# every window or horizon (orders_30d, bg_ltv_365d, ...); customers-table attributes are worded from
# their own name and value ("membership level: gold", "age 55"). A test checks every feature is here.
PhraseOf = Callable[[float, int], str]


def _count(n: float, noun: str) -> str:
    return f"{n:,.0f} {noun}{'' if round(n) == 1 else 's'}"


def _number(value: float) -> str:
    """A value as people write it: 55, 1,250, 3.5 (no trailing zeros)."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0").rstrip(".")


def _share(p: float) -> str:
    """A probability in words; never a flat 0% or 100% for what is only unlikely or likely."""
    return "under 1%" if 0 < p < 0.005 else "over 99%" if 0.995 < p < 1 else f"{p:.0%}"


REASON_PHRASES: dict[str, tuple[PhraseOf, str]] = {
    "recency_days": (lambda v, n: f"no order for {v:,.0f} days", "no order yet"),
    "overdue_ratio": (lambda v, n: f"{v:.1f}x later than their usual gap between orders", "only one order so far"),
    "last_gap_days": (lambda v, n: f"{v:,.0f} days between their last two orders", "only one order so far"),
    "tenure_days": (lambda v, n: f"first order {v:,.0f} days ago", "no order yet"),
    "active_span_days": (lambda v, n: f"ordered over {v:,.0f} days" if v > 0 else "all orders on one day",
                         "no order yet"),
    "frequency": (lambda v, n: f"{_count(v, 'order')} so far", "no order yet"),
    "repeat_orders": (lambda v, n: f"{_count(v, 'repeat order')} so far" if v > 0 else "no repeat order yet",
                      "no order yet"),
    "monetary_total": (lambda v, n: f"spent {v:,.0f} in total", "no spend yet"),
    "monetary_mean": (lambda v, n: f"average order {v:,.0f}", "no order yet"),
    "monetary_std": (lambda v, n: f"order values vary by {v:,.0f}", "only one order so far"),
    "monetary_max": (lambda v, n: f"largest order {v:,.0f}", "no order yet"),
    "first_order_amount": (lambda v, n: f"first order worth {v:,.0f}", "no order yet"),
    "gap_mean_days": (lambda v, n: f"orders every {v:,.0f} days on average", "only one order so far"),
    "gap_median_days": (lambda v, n: f"usually orders every {v:,.0f} days", "only one order so far"),
    "gap_std_days": (lambda v, n: f"irregular gaps between orders (spread {v:,.0f} days)", "fewer than three orders so far"),
    "orders_{n}d": (lambda v, n: f"no order in the last {n} days" if v == 0 else f"{_count(v, 'order')} in the last {n} days",
                    "no order yet"),
    "spend_{n}d": (lambda v, n: f"spent {v:,.0f} in the last {n} days", "no spend yet"),
    "trend_orders": (lambda v, n: ("as many orders as in the period before" if v == 0 else
                                   f"{_count(abs(v), 'order')} {'more' if v > 0 else 'fewer'} than in the period before"),
                     "no order yet"),
    "trend_spend": (lambda v, n: ("spent as much as in the period before" if v == 0 else
                                  f"spent {abs(v):,.0f} {'more' if v > 0 else 'less'} than in the period before"),
                    "no spend yet"),
    "distinct_categories": (lambda v, n: "bought in one category" if v == 1 else f"bought in {v:,.0f} categories",
                            "no product categories recorded"),
    "top_category_share": (lambda v, n: f"{v:.0%} of purchases in one category", "no product categories recorded"),
    "discount_share": (lambda v, n: f"{v:.0%} of orders with a discount", "no discounts recorded"),
    "discount_total": (lambda v, n: f"received {v:,.0f} in discounts", "no discounts recorded"),
    "return_count": (lambda v, n: f"{_count(v, 'return')} or cancellations" if v != 1 else "1 return or cancellation",
                     "no returns recorded"),
    "return_rate": (lambda v, n: f"returned {v:.0%} of what they bought (by value)", "no returns recorded"),
    "weekend_share": (lambda v, n: f"{v:.0%} of orders at weekends", "no order yet"),
    "novdec_share": (lambda v, n: f"{v:.0%} of orders in November-December", "no order yet"),
    "signup_days": (lambda v, n: f"signed up {v:,.0f} days ago", "no sign-up date on record"),
    # Season features (features.season) are the same for every customer: the words say it is the shop's.
    "season_doy_sin": (lambda v, n: "the time of year", "no date for the time of year"),  # never empty
    "season_doy_cos": (lambda v, n: "the time of year", "no date for the time of year"),
    "season_ratio_{n}d": (lambda v, n: f"the shop's season: last year {v:.1f}x as many orders in the next {n} days "
                                       f"as in the {n} before", "no season figure from last year"),
    "bg_p_alive": (lambda v, n: f"purchase pattern gives {_share(v)} chance of still being a customer",
                   "too little history for a purchase-pattern estimate"),
    "gg_order_value": (lambda v, n: f"expected order value {v:,.0f} by purchase pattern",
                       "too little history for a purchase-pattern estimate"),
    "bg_orders_{n}d": (lambda v, n: f"purchase pattern expects {v:.1f} orders in the next {n} days",
                       "too little history for a purchase-pattern estimate"),
    "bg_p_none_{n}d": (lambda v, n: f"purchase pattern gives {_share(1 - v)} chance of any order in the next {n} days",
                       "too little history for a purchase-pattern estimate"),
    "bg_ltv_{n}d": (lambda v, n: f"purchase pattern expects {v:,.0f} spend in the next {n} days",
                    "too little history for a purchase-pattern estimate"),
}
# Text features of the orders (not customers-table attributes): phrase of the value, phrase when empty.
TEXT_PHRASES: dict[str, tuple[str, str]] = {
    "first_order_channel": ("first order via {}", "first order's channel not recorded"),
}


def _window_days(column: str) -> int:
    """N of a `<name>_<N>d` column (0 when the column has no day window)."""
    tail = column.rsplit("_", 1)[-1]
    return int(tail[:-1]) if tail.endswith("d") and tail[:-1].isdigit() else 0


def _phrase_key(feature: str) -> str:
    """The REASON_PHRASES key of a feature: itself, or its `{n}` pattern for a window/horizon column."""
    days = _window_days(feature)
    return feature[: -len(f"{days}d")] + "{n}d" if days else feature


def _attribute_phrases(name: str, kind: str, values: pd.Series) -> list[str]:
    """An attribute in words with the customer's own value: "membership level: gold", "age 55"."""
    label = name.replace("_", " ")
    out = []
    for value in values.astype("object"):
        if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA \
                or (isinstance(value, str) and not value.strip()):
            out.append(f"no {label} on record")
        elif kind == "numeric":
            number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
            out.append(f"{label} {_number(number)}" if np.isfinite(number) else f"{label}: {str(value).strip()}")
        else:
            out.append(f"{label}: {str(value).strip()}")
    return out


def _text_phrases(feature: str, values: pd.Series) -> list[str]:
    known, empty = TEXT_PHRASES[feature]
    return [empty if v is None or v is pd.NA or (isinstance(v, float) and not np.isfinite(v)) or not str(v).strip()
            else known.format(str(v).strip()) for v in values.astype("object")]


def _value_phrases(feature: str, rows: pd.DataFrame) -> list[str]:
    """Each row's value of a numeric feature in words, from REASON_PHRASES."""
    rule = REASON_PHRASES.get(_phrase_key(feature))
    if rule is None:  # a feature without words (a test keeps this from happening); say nothing untrue
        return ["another feature of their purchase history"] * len(rows)
    known, empty = rule
    days = _window_days(feature)
    values = pd.to_numeric(rows[feature], errors="coerce").to_numpy(dtype=float) if feature in rows \
        else np.full(len(rows), np.nan)
    return [known(v, days) if np.isfinite(v) else empty for v in values]


def _phrases(feature: str, rows: pd.DataFrame, attributes: dict[str, str] | None = None) -> list[str]:
    """One phrase per row saying what `feature` is for this customer (`attributes`: name -> categorical/numeric)."""
    attributes = attributes or {}
    if feature in attributes:
        values = rows[feature] if feature in rows else pd.Series([None] * len(rows), dtype="object")
        return _attribute_phrases(feature, attributes[feature], values)
    if feature in TEXT_PHRASES:
        return _text_phrases(feature, rows[feature] if feature in rows else pd.Series([None] * len(rows)))
    if feature.startswith(("bg_", "gg_")):
        # The chance of any order over the longest horizon speaks for all pattern columns; p_alive
        # would not (BG/NBD takes a one-order customer to be alive, however long ago they bought).
        horizons = sorted((_window_days(c), c) for c in rows.columns if c.startswith("bg_p_none_") and _window_days(c))
        if horizons:
            return _value_phrases(horizons[-1][1], rows)
        return _value_phrases(feature, rows)
    if _window_days(feature) and feature.startswith(("orders_", "spend_")):
        # All look-back windows are one driver: say the shortest window that saw an order, or the longest.
        windows = sorted({_window_days(c) for c in rows.columns
                          if _window_days(c) and c.startswith("orders_") and f"spend_{_window_days(c)}d" in rows})
        if windows:
            counts = np.column_stack([rows[f"orders_{d}d"].to_numpy(dtype=float) for d in windows])
            spends = np.column_stack([rows[f"spend_{d}d"].to_numpy(dtype=float) for d in windows])
            first = np.where((counts > 0).any(axis=1), (counts > 0).argmax(axis=1), len(windows) - 1)
            out = []
            for i, w in enumerate(first):
                n, spent, d = counts[i, w], spends[i, w], windows[w]
                if not np.isfinite(n):
                    out.append(REASON_PHRASES["orders_{n}d"][1])
                    continue
                spent_text = f"{spent:,.0f} spent" if spent >= 0 else f"net {spent:,.0f} after returns"
                out.append(f"no order in the last {d} days" if n == 0
                           else f"only {_count(n, 'order')} ({spent_text}) in the last {d} days")
            return out
    if feature in ("recency_days", "overdue_ratio", "last_gap_days") and "recency_days" in rows:
        recency = rows["recency_days"].to_numpy(dtype=float)
        ratio = pd.to_numeric(rows.get("overdue_ratio", pd.Series(np.nan, index=rows.index)),
                              errors="coerce").to_numpy(dtype=float)
        orders = pd.to_numeric(rows.get("frequency", pd.Series(np.nan, index=rows.index)),
                               errors="coerce").to_numpy(dtype=float)
        out = []
        for r, q, f in zip(recency, ratio, orders):
            if not np.isfinite(r):
                out.append(REASON_PHRASES["recency_days"][1])
            elif np.isfinite(q):
                out.append(f"no order for {r:,.0f} days, {q:.1f}x their usual gap")
            elif f == 1:
                out.append(f"no order for {r:,.0f} days after a single order")
            else:  # several orders but no usual gap: they were placed together
                out.append(f"no order for {r:,.0f} days")
        return out
    return _value_phrases(feature, rows)


def reasons(bundle: Bundle, matrix: pd.DataFrame | np.ndarray, enriched: pd.DataFrame, top: int = 3) -> list[str]:
    """Per customer, the `top` features that raise their churn risk most, in words ("; "-separated).

    Contributions come from the churn model's additive explainer (boosted stumps fitted to the
    model's log-odds at training time; its R^2 is logged with the run); a customer whose risk is
    below average for every feature gets no reason. A BG/NBD fallback model speaks through recency.
    """
    model = bundle.models.get("churn")
    n = len(matrix)
    if n == 0:
        return []
    if model is None or "explain" not in model.boosters:
        return _phrases("recency_days", enriched)
    attributes = _attributes_of(bundle)
    contributions = booster_predict(model.booster("explain"), matrix, pred_contrib=True)[:, :-1]
    names = bundle.spec.columns
    # Features that say the same thing in words are one driver: pool their contributions into the
    # first of the group (recency, overdue ratio and last gap; all the BG/NBD pattern columns).
    for group in (["recency_days", "overdue_ratio", "last_gap_days"],
                  ["bg_p_alive"] + sorted(c for c in names if c.startswith(("bg_", "gg_")) and c != "bg_p_alive"),
                  sorted((c for c in names if _window_days(c) and c.startswith(("orders_", "spend_"))),
                         key=lambda c: (_window_days(c), c))):
        present = [names.index(c) for c in group if c in names]
        if len(present) > 1:
            contributions[:, present[0]] += contributions[:, present[1:]].sum(axis=1)
            contributions[:, present[1:]] = 0.0
    k = min(top, contributions.shape[1])
    best = np.argsort(-contributions, axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(contributions, best, axis=1)
    slots = np.full((n, k), "", dtype=object)
    for j in np.unique(best):
        rows = np.nonzero((best == j).any(axis=1))[0]
        # Every row (always so for one customer): the frame itself, without copying all its columns.
        chosen_rows = enriched if len(rows) == n else enriched.iloc[rows]
        words = np.asarray(_phrases(names[j], chosen_rows, attributes), dtype=object)
        for slot in range(k):
            hit = best[rows, slot] == j
            slots[rows[hit], slot] = words[hit]
    slots[chosen <= 0] = ""
    # Two drivers can read the same (a single order has neither a gap nor a spread): say it once.
    return ["; ".join(dict.fromkeys(p for p in row if p)) for row in slots]


def _attributes_of(bundle: Bundle) -> dict[str, str]:
    """The customers-table attributes the bundle was trained with: name -> categorical / numeric."""
    declared = (bundle.config.get("customers") or {}).get("attributes") or {}
    return {name: (spec.get("type") if isinstance(spec, dict) else str(spec)) or "categorical"
            for name, spec in declared.items()}


def _buyer_tags(features: pd.DataFrame, bundle: Bundle, config: Config, as_of: pd.Timestamp,
                model_version: str) -> pd.DataFrame:
    """All output columns except the scenario tags, for buyers' features (with scenario inputs)."""
    enriched = bundle.bg_columns(features)
    matrix = bundle.inputs(enriched)
    predicted = bundle.predict_enriched(enriched, matrix)
    n = len(enriched)
    # Columns gathered first and framed once: setting them one by one on a frame was a fifth of tagging
    # one customer online.
    out: dict[str, Any] = {"customer_id": enriched["customer_id"].astype(str).to_numpy(),
                           "as_of": np.full(n, as_of.date(), dtype=object),
                           "model_version": np.full(n, model_version, dtype=object)}
    for column in ("recency_days", "frequency", "monetary_total"):
        out[column] = enriched[column].to_numpy()
    for column in ("churn_risk", "repurchase_prob", "ltv"):
        out[column] = predicted[column].to_numpy()
    repurchase_days = bundle.models["repurchase"].horizon_days
    out["expected_next_order"] = _expected_next_order(out["repurchase_prob"], repurchase_days, as_of)
    out["value_at_risk"] = out["churn_risk"] * out["ltv"]
    tiers = config.scoring
    out["churn_tier"] = _tier(out["churn_risk"], tiers.churn_tier.high, tiers.churn_tier.medium)
    cuts = bundle.metadata.get("tier_cut_points") or {}
    ltv_cut, spend_cut = cuts.get("ltv"), cuts.get("monetary_total")
    if ltv_cut:
        out["value_tier"] = _tier(out["ltv"], ltv_cut["high"], ltv_cut["medium"])
        past_high = enriched["monetary_total"].to_numpy(dtype=float) >= spend_cut["high"]
        out["high_value_potential"] = (out["value_tier"] == "high") & ~past_high
    else:  # a bundle from before tiers were stored: no stable cut points, so no tier
        out["value_tier"] = np.full(n, None, dtype=object)
        out["high_value_potential"] = np.full(n, None, dtype=object)
    scores = rfm_scores(enriched, RfmCutPoints(**{k: tuple(v) for k, v in bundle.rfm_cut_points.items()}))
    for column in scores.columns:
        out[column] = scores[column].to_numpy()
    segment = out["rfm_segment"] = rfm_segment(scores, config.rfm).to_numpy()
    for column, attribute in (("rfm_segment_label", "label"), ("rfm_segment_label_zh", "label_zh"),
                              ("rfm_action", "action")):
        names = {key: getattr(value, attribute) for key, value in config.rfm.segments.items()}
        out[column] = np.array([names.get(key) for key in segment], dtype=object)
    out["lifecycle_stage"] = lifecycle_stage(enriched, config)
    # Reasons are for the customers marketing acts on: medium or high churn tier; low tier gets none.
    at_risk = np.flatnonzero(out["churn_tier"] != "low")
    if len(at_risk) == n:  # every row (often so for one customer): no copies of the frames
        words = reasons(bundle, matrix, enriched)
    else:
        words = reasons(bundle, matrix[at_risk] if isinstance(matrix, np.ndarray) else matrix.iloc[at_risk],
                        enriched.iloc[at_risk])
    column = np.full(n, None, dtype=object)
    column[at_risk] = words
    out["reasons"] = column
    out["signup_days"] = enriched["signup_days"].to_numpy(dtype=float) if "signup_days" in enriched else np.full(n, np.nan)
    out["first_purchase_prob"] = np.full(n, np.nan)
    for name in config.customers.attributes:
        if name in enriched:
            out[name] = enriched[name].to_numpy()
    return pd.DataFrame(out)


def _registered_tags(registered: pd.DataFrame, bundle: Bundle, config: Config, as_of: pd.Timestamp,
                     model_version: str) -> pd.DataFrame:
    """Tags of registered customers who have not ordered: stage `registered`, first_purchase_prob and their
    attributes; the order-based columns are empty, frequency and spend zero."""
    n = len(registered)
    columns = [*OUTPUT_DOCS, *config.customers.attributes]
    out = pd.DataFrame({c: _empty_column(n, _output_type(c)) for c in columns}, index=range(n))
    out["customer_id"] = registered["customer_id"].astype(str).to_numpy()
    out["as_of"] = as_of.date()
    out["model_version"] = model_version
    # Same Parquet types as the buyers' rows, so the merged output keeps integer columns integer.
    out["frequency"], out["monetary_total"] = np.zeros(n, dtype=np.int64), 0.0
    for column in ("rfm_r", "rfm_f", "rfm_m"):
        out[column] = pd.array([pd.NA] * n, dtype="Int8")
    out["lifecycle_stage"] = REGISTERED_STAGE
    out["signup_days"] = registered["signup_days"].to_numpy(dtype=float)
    out["first_purchase_prob"] = bundle.predict_first_purchase(registered.reset_index(drop=True))
    for name in config.customers.attributes:
        out[name] = registered[name].to_numpy()
    return out


_OUTPUT_TYPES = {"as_of": "DATE", "expected_next_order": "DATE", "high_value_potential": "BOOLEAN",
                 "rfm_r": "TINYINT", "rfm_f": "TINYINT", "rfm_m": "TINYINT"}
_NUMERIC_UNITS = ("days", "orders", "currency", "probability", "score")


def _output_type(name: str) -> str:
    """The DuckDB type of an output column (attributes and unknown names: text)."""
    unit = OUTPUT_DOCS.get(name, ("", "text"))[1]
    return _OUTPUT_TYPES.get(name, "DOUBLE" if unit in _NUMERIC_UNITS else "VARCHAR")


def _empty_column(n: int, sql_type: str) -> np.ndarray:
    """`n` empty values of a column of `sql_type`: NaN for numbers, None otherwise."""
    kind = sql_type.upper()
    numeric = kind not in ("VARCHAR", "DATE", "BOOLEAN") and "TIMESTAMP" not in kind
    return np.full(n, np.nan) if numeric else np.full(n, None, dtype=object)


# ---------------------------------------------------------------------------------------------
# Scenario tags: named boolean SQL over the scored columns, evaluated without file or network access


def _scenario_select(scenarios: dict[str, str]) -> str:
    parts = [f"coalesce(CAST(({expr}) AS BOOLEAN), false) AS {repr_ident(name)}" for name, expr in scenarios.items()]
    return "SELECT " + ", ".join(parts) + " FROM scored"


def check_scenarios(scenarios: dict[str, str], columns: dict[str, str]) -> None:
    """Fail with a clear config error naming the tag when an expression is not a condition over `columns`.

    Each expression is checked as parsed SQL first (only the row's own columns, constants, operators
    and plain functions; features.expressions), then typed by binding it, never running it, over an
    empty table in a sandbox: config text never executes here.
    """
    if not scenarios:
        return
    con = sandbox()
    try:
        spec = ", ".join(f"{repr_ident(c)} {t}" for c, t in columns.items())
        con.execute(f"CREATE TABLE scored ({spec})")
        taken = {c.lower() for c in columns}
        for name, expr in scenarios.items():
            if not name.isidentifier():
                raise ConfigError(f"scoring.scenarios: the tag name {name!r} must be a plain identifier "
                                  "(letters, digits, underscores).")
            if name.lower() in taken:
                raise ConfigError(f"scoring.scenarios: the tag name {name!r} is already a scored column; "
                                  "give the tag a name of its own.")
            try:
                check_expression(expr, columns)
                # Bound, not executed: the relation gives the result type without reading a row.
                kinds = [str(t) for t in con.sql(f"SELECT ({expr}) FROM scored").types]
            except ExpressionRefused as refused:
                raise ConfigError(f"scoring.scenarios.{name}: the expression {expr!r} cannot be used: {refused} "
                                  f"Columns available: {', '.join(columns)}.") from None
            except (ExpressionSyntaxError, duckdb.Error) as exc:
                message = str(exc).splitlines()[0]
                raise ConfigError(
                    f"scoring.scenarios.{name}: the expression {expr!r} is not a valid boolean SQL expression over "
                    f"the scored columns ({message}). Columns available: {', '.join(columns)}."
                ) from None
            # Only a true/false result: a text or number would be cast per row and fail (or mean
            # "non-zero") halfway through the run instead of here.
            if kinds != ["BOOLEAN"]:
                raise ConfigError(
                    f"scoring.scenarios.{name}: the expression {expr!r} gives {' '.join(kinds) or 'nothing'}, not "
                    "true/false; write a condition such as \"recency_days >= 90\". "
                    f"Columns available: {', '.join(columns)}."
                )
    finally:
        con.close()


def _apply_scenarios(frame: pd.DataFrame, scenarios: dict[str, str],
                     beside: pd.DataFrame | None = None) -> pd.DataFrame:
    """One true/false column per scenario tag, for the scored rows of `frame` (expressions checked first).

    beside: further columns of the same rows, in the same order (a buyer's features beside their tags),
        for the columns `frame` lacks; read in place instead of joined into one wide frame first.
    """
    if not scenarios:
        return pd.DataFrame(index=frame.index)
    source = {c: frame for c in frame.columns}
    if beside is not None:
        for c in beside.columns:
            source.setdefault(c, beside)
    # check_scenarios has typed them; the parsed check runs again here (cheap: no data) so that no
    # caller can evaluate an unchecked expression.
    columns = tuple(str(c) for c in source)
    for name, expr in scenarios.items():
        try:
            _checked(expr, columns)
        except (ExpressionRefused, ExpressionSyntaxError) as exc:
            raise ConfigError(f"scoring.scenarios.{name}: the expression {expr!r} cannot be used: {exc}") from None
    # Only the columns the expressions name go into the engine: converting a hundred columns for a few
    # rows was a quarter of tagging one customer online.
    named = {word for expr in scenarios.values() for word in re.findall(r'[A-Za-z_][A-Za-z0-9_]*|"[^"]+"', expr)}
    named |= {word.strip('"') for word in named}
    # (One column at least: an expression naming none still needs the rows.)
    columns = [c for c in source if str(c) in named] or list(frame.columns[:1])
    # As Arrow (NaN becomes NULL, as DuckDB reads a pandas frame): a third cheaper.
    scored = arrow_table({c: source[c][c] for c in columns})
    con = sandbox_cursor()
    try:
        con.register("scored", scored)
        try:
            flags = con.execute(_scenario_select(scenarios)).fetchnumpy()
        except duckdb.Error:
            _raise_for_failing_scenario(con, scenarios)
            raise
    finally:
        con.close()
    return pd.DataFrame({name: np.asarray(flags[name], dtype=bool) for name in scenarios}, index=frame.index)


def arrow_table(frame: pd.DataFrame | Mapping[Any, pd.Series], columns: list[Any] | None = None) -> pa.Table:
    """`columns` of `frame` (a frame or {name: series}; default all) as an Arrow table, each converted as
    Table.from_pandas converts it (NaN becomes null), without the pandas metadata it also builds: for a few
    rows that was most of the cost."""
    columns = list(frame.columns if isinstance(frame, pd.DataFrame) else frame) if columns is None else columns
    return pa.Table.from_arrays([pa.array(frame[c], from_pandas=True) for c in columns], names=[str(c) for c in columns])


@functools.lru_cache(maxsize=256)
def _checked(expression: str, columns: tuple[str, ...]) -> None:
    """check_expression, remembered for the same text and columns (a refusal is raised every time): the
    service tags every request with the same few expressions."""
    check_expression(expression, columns)


def _raise_for_failing_scenario(con: duckdb.DuckDBPyConnection, scenarios: dict[str, str]) -> None:
    """A ScoringError naming the first tag whose expression fails on the rows (e.g. a text-to-number cast)."""
    for name, expr in scenarios.items():
        try:
            con.execute(_scenario_select({name: expr})).fetchall()
        except duckdb.Error as exc:
            raise ScoringError(
                f"scoring.scenarios.{name}: the expression {expr!r} fails on the scored rows "
                f"({str(exc).splitlines()[0]}). Fix the expression; no output was written."
            ) from None


def scenario_columns(features: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Name -> DuckDB type of every column a scenario expression may use: the tag inputs (`features`, pairs
    of name and DuckDB type, e.g. zip(relation.columns, relation.types)) and the output columns."""
    columns = {str(name): str(kind) for name, kind in features}
    for name in OUTPUT_DOCS:
        columns.setdefault(name, _output_type(name))
    return columns


def check_feature_columns(columns: Iterable[str], bundle: Bundle, has_customers: bool = False) -> None:
    """Fail with a ScoringError saying what to do when features with `columns` cannot feed the bundle's models
    (`has_customers`: a customers table was given)."""
    from features.clv import bg_feature_columns

    available = set(columns) | set(bg_feature_columns(bundle.horizons))
    missing = [c for c in bundle.spec.columns if c not in available]
    attributes = [c for c in missing if c in (bundle.config.get("customers") or {}).get("attributes", {})]
    if attributes:
        raise ScoringError(
            f"the model (as_of {bundle.as_of}) was trained with customer attributes ({', '.join(attributes)}) that "
            + ("this customers table and config do not provide" if has_customers else
               "need the customers table: pass --customers PATH (or set customers.source in the config)")
            + "; score with the customers table and config the model was trained with, or retrain without them."
        )
    if missing:
        raise ScoringError(
            f"feature schema mismatch: the model (as_of {bundle.as_of}) needs {len(missing)} feature column(s) that "
            f"this data and config do not produce ({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''}). "
            "Score with the config the model was trained with (features.windows_days), or retrain."
        )


def output_docs(config: Config) -> list[tuple[str, str, str]]:
    """(column, meaning, unit) for every output column, attributes and scenario tags included."""
    rows = [(k, *v) for k, v in OUTPUT_DOCS.items()]
    rows += [(name, f"static attribute from the customers table ({a.type}), exactly as given", "number" if
              a.type == "numeric" else "text") for name, a in config.customers.attributes.items()]
    rows += [(name, f"scenario tag: {expr}", "flag") for name, expr in config.scoring.scenarios.items()]
    return rows


def tags_table_markdown(config: Config) -> str:
    """The output column reference as a Markdown table (docs/tags.md holds it; a test checks it is current)."""
    lines = ["| column | meaning | unit |", "|---|---|---|"]
    lines += [f"| `{name}` | {meaning} | {unit} |" for name, meaning, unit in output_docs(config)]
    return "\n".join(lines) + "\n"
