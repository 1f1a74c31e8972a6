"""Point-in-time behavioural features: one row per customer from the orders placed before `as_of`.

The features are one DuckDB SQL definition, used unchanged for training sets, batch scoring and
(later) per-partition scoring on Spark: every aggregate is per customer, so running it on any set of
whole customers gives the same rows as running it on all of them. The one exception, the opt-in
season columns (features.season), is shop-wide: a partition's run reads them from the whole shop
(`build_relation(..., shop=)`). Column meanings and units are in docs/features.md (FEATURE_DOCS
below is its source).
"""
from __future__ import annotations

from datetime import date, datetime

import duckdb
import pandas as pd

from configs.schema import Config, ConfigError
from features.engine import connect
from features.intake import CANONICAL_TYPES

__all__ = [
    "FEATURE_DOCS", "SEASON_DOCS", "as_timestamp", "require_orders_before", "build", "build_relation", "customer_columns",
    "feature_columns", "feature_docs", "customer_select_sql", "customers_view", "feature_table_markdown",
    "last_year_columns", "order_rows_sql", "orders_view",
    "registered", "registered_relation", "season_columns", "season_horizons", "unmatched_customers",
]

DAY_US = 86_400_000_000.0

FEATURE_DOCS: dict[str, tuple[str, str]] = {
    "customer_id": ("customer identifier, exactly as in the source", "text"),
    "recency_days": ("time from the last order to as_of", "days"),
    "tenure_days": ("time from the first order to as_of", "days"),
    "active_span_days": ("time from the first to the last order (BG/NBD recency)", "days"),
    "frequency": ("orders placed before as_of", "orders"),
    "repeat_orders": ("orders after the first (BG/NBD frequency when each order is on its own day)", "orders"),
    "monetary_total": ("spend before as_of, net of returns", "currency"),
    "monetary_mean": ("mean order value (gross of returns)", "currency"),
    "monetary_std": ("standard deviation of order value; empty with one order", "currency"),
    "monetary_max": ("largest order value", "currency"),
    "first_order_amount": ("value of the first order", "currency"),
    "first_order_channel": ("channel of the first order; empty when the source has no channel", "text"),
    "gap_mean_days": ("mean time between consecutive orders; empty with one order", "days"),
    "gap_median_days": ("median time between consecutive orders", "days"),
    "gap_std_days": ("standard deviation of the time between orders; empty below three orders", "days"),
    "last_gap_days": ("time between the last two orders", "days"),
    "overdue_ratio": ("recency_days / gap_median_days: above 1 means later than the customer's usual gap", "ratio"),
    "trend_orders": ("orders in the last trend_days (default 90) minus orders in the trend_days before", "orders"),
    "trend_spend": ("net spend in the last trend_days minus net spend in the trend_days before", "currency"),
    "distinct_categories": ("distinct categories bought; empty when the source has no category", "categories"),
    "top_category_share": ("share of bought lines in the customer's most-bought category", "ratio 0-1"),
    "discount_share": ("share of orders with money off (coupon or promotion use); empty without discounts", "ratio 0-1"),
    "discount_total": ("money off received", "currency"),
    "return_count": ("return or cancellation events (orders holding returned lines)", "events"),
    "return_rate": ("money returned / money spent before returns", "ratio 0-1"),
    "weekend_share": ("share of orders placed on Saturday or Sunday (UTC)", "ratio 0-1"),
    "novdec_share": ("share of orders placed in November or December", "ratio 0-1"),
}
# With a customers table: the static layer, joined by customer_id (see customer_columns).
SIGNUP_DOC = ("days from sign-up to as_of; empty without a sign-up date or when it is on or after as_of", "days")
_WINDOW_DOCS = {
    "orders_{n}d": ("orders in the {n} days before as_of", "orders"),
    "spend_{n}d": ("net spend in the {n} days before as_of", "currency"),
}
# Only with features.last_year_days: per customer, last year's same calendar window (see last_year_columns).
_LAST_YEAR_DOCS = {
    "last_year_orders_{n}d": ("purchase orders in the {n} days from as_of - 365 days (last year's coming window); "
                              "empty when the customer's first purchase is on or after that window's end", "orders"),
    "last_year_spend_{n}d": ("net spend in the {n} days from as_of - 365 days (last year's coming window); empty "
                             "when the customer's first purchase is on or after that window's end", "currency"),
}
# Only with features.season: shop-wide columns, the same for every customer at one as_of.
SEASON_DOCS = {
    "season_doy_sin": ("as_of's day of the year on the unit circle, sine: sin(2 pi (day of year - 1) / days in the "
                       "year); only with features.season", "-1 to 1"),
    "season_doy_cos": ("the same angle's cosine (1 January is sin 0, cos 1); only with features.season", "-1 to 1"),
}
_SEASON_RATIO_DOC = (
    "the shop's purchase orders in the {n} days from as_of - 365 days over those in the {n} days before that: last "
    "year's coming window against the window before it; empty when the shop's first order is later than the start "
    "of the window before, when that window has no purchase, or when {n} > 365 (last year's window would reach "
    "as_of); only with features.season", "ratio")
# Last year's coming window [as_of - 365 d, as_of - 365 d + h) ends by as_of only for h <= 365.
YEAR_DAYS = 365


def feature_columns(config: Config) -> list[str]:
    """Names of the columns `build` returns, in order (customer_id first)."""
    windows = [f"{kind}_{n}d" for n in config.features.windows_days for kind in ("orders", "spend")]
    base = list(FEATURE_DOCS)
    insert_at = base.index("overdue_ratio") + 1
    return base[:insert_at] + windows + base[insert_at:] + last_year_columns(config) + season_columns(config)


def last_year_columns(config: Config) -> list[str]:
    """The per-customer last-year window columns (features.last_year_days), in order; none when it is empty."""
    return [f"last_year_{kind}_{n}d" for n in config.features.last_year_days for kind in ("orders", "spend")]


def season_horizons(config: Config) -> list[int]:
    """The distinct horizons (config.horizons, days) that get a season_ratio_<h>d column, ascending."""
    horizons = config.horizons
    return sorted({int(h) for h in (horizons.repurchase_days, horizons.churn_days, horizons.ltv_days)})


def season_columns(config: Config) -> list[str]:
    """The season columns (features.season on), in order; none when it is off."""
    if not config.features.season:
        return []
    return ["season_doy_sin", "season_doy_cos", *(f"season_ratio_{h}d" for h in season_horizons(config))]


def customer_columns(config: Config) -> list[str]:
    """Columns a customers table adds to the features: signup_days and the declared attributes."""
    taken = set(feature_columns(config))
    clashes = [name for name in config.customers.attributes if name in taken or name == "signup_days"]
    if clashes:
        raise ConfigError(f"customers.attributes: {', '.join(clashes)} {'is' if len(clashes) == 1 else 'are'} already "
                          "a feature name; give the attribute another name (and map its source column with "
                          "`column:`).")
    return ["signup_days", *config.customers.attributes]


def feature_docs(config: Config) -> dict[str, tuple[str, str]]:
    """Meaning and unit of every feature column, windows included."""
    docs = dict(FEATURE_DOCS)
    for n in config.features.windows_days:
        for pattern, (meaning, unit) in _WINDOW_DOCS.items():
            docs[pattern.format(n=n)] = (meaning.format(n=n), unit)
    for n in config.features.last_year_days:
        for pattern, (meaning, unit) in _LAST_YEAR_DOCS.items():
            docs[pattern.format(n=n)] = (meaning.format(n=n), unit)
    docs.update(SEASON_DOCS)
    for n in season_horizons(config):
        docs[f"season_ratio_{n}d"] = (_SEASON_RATIO_DOC[0].format(n=n), _SEASON_RATIO_DOC[1])
    return {name: docs[name] for name in feature_columns(config)}


def feature_table_markdown(config: Config) -> str:
    """The feature reference table (name, meaning, unit) as Markdown, for docs/features.md."""
    rows = ["| feature | meaning | unit |", "|---|---|---|"]
    rows += [f"| `{name}` | {meaning} | {unit} |" for name, (meaning, unit) in feature_docs(config).items()]
    return "\n".join(rows) + "\n"


def as_timestamp(as_of: str | date | datetime | pd.Timestamp) -> pd.Timestamp:
    """A cut-off as a naive UTC timestamp (dates mean midnight UTC)."""
    ts = pd.Timestamp(as_of)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts


def require_orders_before(con: duckdb.DuckDBPyConnection, source: str, as_of, label: str,
                          option: str = "--as-of") -> None:
    """Raise ConfigError when view `source` has no order before `as_of`: every output would be empty.

    One min() over the validated orders, run right after intake and before anything is written.
    """
    cut = as_timestamp(as_of)
    first = con.execute(f"SELECT min(order_ts) FROM {source}").fetchall()[0][0]
    if first is None:
        raise ConfigError(f"{label}: no usable orders, so there is nothing before {option} {cut.date()} to work on.")
    if pd.Timestamp(first) >= cut:
        raise ConfigError(
            f"{label}: no orders before {option} {cut.date()}: the first order is on {pd.Timestamp(first).date()}; "
            f"pick a later {option}."
        )


def _ts_sql(ts: pd.Timestamp) -> str:
    return f"TIMESTAMP '{ts.isoformat(sep=' ')}'"


def _days_between(later: str, earlier: str) -> str:
    return f"(epoch_us({later}) - epoch_us({earlier})) / {DAY_US}"


def _return_flag(config: Config) -> str:
    statuses = ", ".join("'" + s.lower().replace("'", "''") + "'" for s in config.orders.return_statuses)
    # A negative amount is money back whatever the status says (e.g. cancellation invoices).
    return f"(coalesce(lower(status) IN ({statuses}), false) OR amount < 0)"


def _std(n: str, s1: str, s2: str) -> str:
    """Sample standard deviation from exact integer count, sum and sum of squares."""
    return f"CASE WHEN {n} > 1 THEN sqrt(CAST({n} * {s2} - {s1} * {s1} AS DOUBLE) / ({n} * ({n} - 1))) END"


def customer_select_sql(customers: str | None, alias: str, cut: str, config: Config) -> str:
    """signup_days and the attributes from the customers view (`alias`), for the final SELECT."""
    if customers is None:
        return ""
    signup = f"CASE WHEN {alias}.signup_ts < {cut} THEN {_days_between(cut, f'{alias}.signup_ts')} END"
    attributes = "".join(f", {alias}.{name}" for name in config.customers.attributes)
    return f", {signup} AS signup_days{attributes}"


def _lines_sql(source: str, cut: str, config: Config) -> str:
    """Order lines of `source` before the cut-off, with money in cents and the return flag."""
    return f"""
    SELECT CAST(customer_id AS VARCHAR) AS customer_id,
           coalesce(CAST(order_id AS VARCHAR), '@' || CAST(order_ts AS VARCHAR)) AS order_key,
           order_ts, CAST(round(amount * 100) AS BIGINT) AS amount_c, category,
           CAST(round(discount * 100) AS BIGINT) AS discount_c, channel,
           {_return_flag(config)} AS is_return
    FROM {source}
    WHERE order_ts < {cut}
"""


def _orders_sql(lines: str) -> str:
    """One row per order of the `lines` relation; an order with any bought line is a purchase."""
    return f"""
    SELECT customer_id, order_key, min(order_ts) AS order_ts,
           coalesce(sum(amount_c) FILTER (WHERE NOT is_return), 0) AS gross_c,
           coalesce(sum(abs(amount_c)) FILTER (WHERE is_return), 0) AS returned_c,
           bool_or(NOT is_return) AS is_purchase,
           sum(discount_c) FILTER (WHERE NOT is_return) AS discount_c,
           min(channel) AS channel
    FROM {lines} GROUP BY customer_id, order_key
"""


def order_rows_sql(source: str, as_of, config: Config) -> str:
    """One row per order of the canonical orders relation `source` before `as_of`, as the features see
    orders: customer_id, order_key, order_ts (its first line's), gross_c and returned_c (cents),
    is_purchase (any bought line), discount_c, channel. For reports over orders (cohorts, retention),
    so that an order and a purchase mean there what they mean in the features."""
    cut = _ts_sql(as_timestamp(as_of))
    return f"WITH lines AS ({_lines_sql(source, cut, config)})\n{_orders_sql('lines')}"


def _shop_orders(source: str, shop: str | None, cut: str, config: Config) -> tuple[str, str]:
    """(CTEs to put first, name of the relation of the shop's orders) for the season columns.

    The `orders` CTE when `source` is the whole shop; else a scan of `shop` of its own, so every
    partition gets the shop's values. Those CTEs come first: a later one would read a CTE instead of
    a relation of the same name (the whole shop's view is often called `orders`).
    """
    if not config.features.season or shop is None or shop == source:
        return "", "orders"
    return (f"shop_lines AS ({_lines_sql(shop, cut, config)}),\nshop_orders AS ({_orders_sql('shop_lines')}),\n",
            "shop_orders")


def _season_cte(orders: str, cut: str, config: Config) -> str:
    """The one-row `season` CTE over the shop's `orders` before the cut-off (features.season on; else nothing)."""
    if not config.features.season:
        return ""
    # 1 January is angle 0; a leap year's 366 days share the circle like a common year's 365.
    angle = (f"2 * pi() * (dayofyear({cut}) - 1) / "
             f"datediff('day', date_trunc('year', {cut}), date_trunc('year', {cut}) + INTERVAL 1 YEAR)")
    ratios = []
    for h in season_horizons(config):
        if h > YEAR_DAYS:
            # Capping the coming window at as_of would set a shorter window against a full one: the
            # ratio would shrink with h whatever the season did. Empty is honest.
            ratios.append(f"CAST(NULL AS DOUBLE) AS season_ratio_{h}d")
            continue
        start, mid, end = (f"{cut} - INTERVAL {YEAR_DAYS + h} DAY", f"{cut} - INTERVAL {YEAR_DAYS} DAY",
                           f"{cut} - INTERVAL {YEAR_DAYS - h} DAY")
        coming = f"count(*) FILTER (WHERE is_purchase AND order_ts >= {mid} AND order_ts < {end})"
        before = f"count(*) FILTER (WHERE is_purchase AND order_ts >= {start} AND order_ts < {mid})"
        # A history that starts inside the window before would make a short denominator.
        ratios.append(f"CASE WHEN min(order_ts) <= {start} THEN {coming} / nullif({before}, 0) END AS season_ratio_{h}d")
    return f"""
season AS (
    SELECT sin({angle}) AS season_doy_sin, cos({angle}) AS season_doy_cos, {', '.join(ratios)}
    FROM {orders}
),"""


def _last_year_sql(cut: str, config: Config) -> tuple[str, str]:
    """(per_customer aggregates, final SELECT columns) of the last-year window columns (features.last_year_days).

    Window n is [cut - 365 d, cut - 365 d + n d): it ends before the cut-off (the schema keeps n < 365),
    so it reads no order the other features do not. Empty, not 0, for a customer whose first purchase
    is on or after the window's end: nothing bought there says nothing about someone who was not a
    customer yet (and on a shop whose history starts after it, every customer is empty).
    """
    aggs, select = [], []
    for n in config.features.last_year_days:
        n = int(n)
        start, end = f"{cut} - INTERVAL {YEAR_DAYS} DAY", f"{cut} - INTERVAL {YEAR_DAYS - n} DAY"
        within = f"order_ts >= {start} AND order_ts < {end}"
        aggs.append(f"count(*) FILTER (WHERE is_purchase AND {within}) AS ly_orders_{n}, "
                    f"coalesce(sum(net_c) FILTER (WHERE {within}), 0) AS ly_net_{n}_c,")
        known = f"p.first_ts < {end}"
        select.append(f"CASE WHEN {known} THEN p.ly_orders_{n} END AS last_year_orders_{n}d, "
                      f"CASE WHEN {known} THEN p.ly_net_{n}_c / 100 END AS last_year_spend_{n}d")
    return "".join(f"\n        {a}" for a in aggs), "".join(f",\n    {c}" for c in select)


def feature_sql(source: str, as_of: pd.Timestamp, config: Config, customers: str | None = None,
                shop: str | None = None) -> str:
    """The feature query over a canonical orders relation named `source`.

    Money is summed as integer cents and time as integer microseconds, so every aggregate is exact
    and a re-run gives byte-identical output whatever order DuckDB's threads add things up in.
    With features.season on, the season columns are shop-wide: they come from `shop` (the whole
    shop's canonical orders) when given, else from `source`.
    """
    cut = _ts_sql(as_of)
    shop_ctes, shop_orders = _shop_orders(source, shop, cut, config)
    trend = config.features.trend_days
    windows = config.features.windows_days
    # Orders and net spend since each look-back; the trend's "trend_days before" is the difference of two.
    since = {n: i for i, n in enumerate(sorted(set(windows) | {trend, 2 * trend}))}
    since_aggs = []
    for n, i in since.items():
        since_aggs.append(f"count(*) FILTER (WHERE is_purchase AND order_ts >= {cut} - INTERVAL {n} DAY) AS orders_{i}")
        since_aggs.append(f"coalesce(sum(net_c) FILTER (WHERE order_ts >= {cut} - INTERVAL {n} DAY), 0) AS net_{i}_c")
    last_year_aggs, last_year_select = _last_year_sql(cut, config)
    return f"""
WITH {shop_ctes}lines AS ({_lines_sql(source, cut, config)}),
orders AS ({_orders_sql('lines')}),{_season_cte(shop_orders, cut, config)}
events AS (
    -- Gaps run from purchase to purchase (a return-only event is skipped by IGNORE NULLS). Partitioning
    -- by customer alone costs less than by (customer, is_purchase): 1 s less CPU on 9.7M order lines.
    SELECT *, gross_c - returned_c AS net_c,
           CASE WHEN is_purchase THEN epoch_us(order_ts)
                - epoch_us(lag(CASE WHEN is_purchase THEN order_ts END IGNORE NULLS) OVER w) END AS gap_us,
           row_number() OVER w AS seq
    FROM orders
    WINDOW w AS (PARTITION BY customer_id ORDER BY order_ts, order_key)
),
per_customer AS (
    SELECT customer_id,
        count(*) FILTER (WHERE is_purchase) AS frequency,
        min(order_ts) FILTER (WHERE is_purchase) AS first_ts,
        max(order_ts) FILTER (WHERE is_purchase) AS last_ts,
        sum(net_c) AS net_c,
        sum(gross_c) FILTER (WHERE is_purchase) AS gross_c,
        sum(CAST(gross_c AS HUGEINT) * gross_c) FILTER (WHERE is_purchase) AS gross_sq_c,
        max(gross_c) FILTER (WHERE is_purchase) AS max_c,
        -- The first purchase is the one purchase without a gap: one row each.
        min(gross_c) FILTER (WHERE is_purchase AND gap_us IS NULL) AS first_c,
        min(channel) FILTER (WHERE is_purchase AND gap_us IS NULL) AS first_order_channel,
        count(gap_us) AS gaps,
        sum(gap_us) AS gap_us,
        sum(CAST(gap_us AS HUGEINT) * gap_us) AS gap_sq_us,
        median(gap_us) AS gap_median_us,
        arg_max(gap_us, seq) FILTER (WHERE gap_us IS NOT NULL) AS last_gap_us,
        {', '.join(since_aggs)},{last_year_aggs}
        -- NULL discounts (no discount column) leave the share empty rather than zero.
        count(*) FILTER (WHERE is_purchase AND discount_c > 0) AS discounted,
        count(discount_c) FILTER (WHERE is_purchase) AS with_discount_data,
        sum(discount_c) FILTER (WHERE is_purchase) AS discount_c,
        count(*) FILTER (WHERE returned_c > 0) AS return_count,
        sum(returned_c) AS returned_c,
        count(*) FILTER (WHERE is_purchase AND isodow(order_ts) >= 6) AS weekend_orders,
        count(*) FILTER (WHERE is_purchase AND month(order_ts) >= 11) AS novdec_orders
    FROM events GROUP BY customer_id
),
category_counts AS (
    SELECT customer_id, category, count(*) AS lines
    FROM lines WHERE NOT is_return AND category IS NOT NULL
    GROUP BY customer_id, category
),
categories AS (
    SELECT customer_id, count(*) AS distinct_categories, max(lines) / sum(lines) AS top_category_share
    FROM category_counts GROUP BY customer_id
)
SELECT p.customer_id,
    {_days_between(cut, 'p.last_ts')} AS recency_days,
    {_days_between(cut, 'p.first_ts')} AS tenure_days,
    {_days_between('p.last_ts', 'p.first_ts')} AS active_span_days,
    p.frequency,
    p.frequency - 1 AS repeat_orders,
    p.net_c / 100 AS monetary_total,
    p.gross_c / p.frequency / 100 AS monetary_mean,
    {_std('p.frequency', 'p.gross_c', 'p.gross_sq_c')} / 100 AS monetary_std,
    p.max_c / 100 AS monetary_max,
    p.first_c / 100 AS first_order_amount,
    p.first_order_channel,
    p.gap_us / nullif(p.gaps, 0) / {DAY_US} AS gap_mean_days,
    p.gap_median_us / {DAY_US} AS gap_median_days,
    {_std('p.gaps', 'p.gap_us', 'p.gap_sq_us')} / {DAY_US} AS gap_std_days,
    p.last_gap_us / {DAY_US} AS last_gap_days,
    {_days_between(cut, 'p.last_ts')} / nullif(p.gap_median_us / {DAY_US}, 0) AS overdue_ratio,
    {', '.join(f'p.orders_{since[n]} AS orders_{n}d, p.net_{since[n]}_c / 100 AS spend_{n}d' for n in windows)},
    2 * p.orders_{since[trend]} - p.orders_{since[2 * trend]} AS trend_orders,
    (2 * p.net_{since[trend]}_c - p.net_{since[2 * trend]}_c) / 100 AS trend_spend,
    c.distinct_categories, c.top_category_share,
    p.discounted / nullif(p.with_discount_data, 0) AS discount_share,
    p.discount_c / 100 AS discount_total,
    p.return_count,
    p.returned_c / nullif(p.gross_c, 0) AS return_rate,
    p.weekend_orders / p.frequency AS weekend_share,
    p.novdec_orders / p.frequency AS novdec_share{last_year_select}
    {''.join(f', s.{name}' for name in season_columns(config))}
    {customer_select_sql(customers, 'k', cut, config)}
FROM per_customer p LEFT JOIN categories c USING (customer_id)
{'CROSS JOIN season s' if config.features.season else ''}
{f'LEFT JOIN {customers} k USING (customer_id)' if customers else ''}
WHERE p.frequency > 0
ORDER BY p.customer_id
"""


def build_relation(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config,
                   customers: str | None = None, shop: str | None = None) -> duckdb.DuckDBPyRelation:
    """Features at `as_of` over the canonical orders relation `source` in `con`, as a DuckDB relation.

    With `customers` (a canonical customers relation), each buyer also gets signup_days and the
    declared attributes (empty for buyers the table does not list). When `source` holds only some
    customers (a partition), pass the whole shop's orders relation as `shop`: the shop-wide season
    columns (features.season) are read from it, so they do not depend on the partitioning.
    """
    if customers is not None:
        customer_columns(config)
    return con.sql(feature_sql(source, as_timestamp(as_of), config, customers, shop))


def _purchase_before(source: str, cut: str, config: Config) -> str:
    return (f"SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM {source} "
            f"WHERE order_ts < {cut} AND NOT {_return_flag(config)}")


def registered_relation(con: duckdb.DuckDBPyConnection, source: str, customers: str, as_of,
                        config: Config) -> duckdb.DuckDBPyRelation:
    """Customers of the customers table with no purchase before `as_of`: customer_id, signup_days, attributes.

    Sign-ups on or after `as_of` are not there yet; customers without a sign-up date are.
    """
    return con.sql(registered_sql(source, customers, as_of, config))


def registered_sql(source: str, customers: str, as_of, config: Config) -> str:
    """`registered_relation`'s query as text."""
    cut = _ts_sql(as_timestamp(as_of))
    customer_columns(config)
    return f"""
SELECT k.customer_id {customer_select_sql(customers, 'k', cut, config)}
FROM {customers} k ANTI JOIN ({_purchase_before(source, cut, config)}) b USING (customer_id)
WHERE k.signup_ts IS NULL OR k.signup_ts < {cut}
ORDER BY k.customer_id
"""


def unmatched_customers(con: duckdb.DuckDBPyConnection, source: str, customers: str, as_of, config: Config) -> int:
    """Buyers before `as_of` without a row in the customers table (their attributes are empty)."""
    cut = _ts_sql(as_timestamp(as_of))
    return int(con.execute(
        f"SELECT count(*) FROM ({_purchase_before(source, cut, config)}) b ANTI JOIN {customers} k USING (customer_id)"
    ).fetchall()[0][0])


def orders_view(con: duckdb.DuckDBPyConnection, orders: pd.DataFrame, name: str = "orders") -> str:
    """Register a canonical orders frame in `con` (missing optional columns become empty) and name it."""
    missing_required = [c for c in ("customer_id", "order_ts", "amount") if c not in orders.columns]
    if missing_required:
        raise ValueError(f"orders frame lacks required column(s) {', '.join(missing_required)}; "
                         f"it has {', '.join(map(str, orders.columns))}.")
    frame = orders.copy()
    ts = pd.to_datetime(frame["order_ts"])
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    frame["order_ts"] = ts
    con.register("_lifetag_input", frame)
    select = []
    for column, sql_type in CANONICAL_TYPES.items():
        value = f'"{column}"' if column in frame.columns else "NULL"
        select.append(f"CAST({value} AS {sql_type}) AS {column}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {', '.join(select)} FROM _lifetag_input")
    return name


def customers_view(con: duckdb.DuckDBPyConnection, customers: pd.DataFrame, config: Config,
                   name: str = "customers") -> str:
    """Register a canonical customers frame (customer_id, signup_ts, attributes) in `con` and name it."""
    if "customer_id" not in customers.columns:
        raise ValueError(f"customers frame lacks customer_id; it has {', '.join(map(str, customers.columns))}.")
    frame = customers.copy()
    if "signup_ts" in frame.columns:
        ts = pd.to_datetime(frame["signup_ts"])
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
        frame["signup_ts"] = ts
    con.register("_lifetag_customers_input", frame)
    select = ["CAST(customer_id AS VARCHAR) AS customer_id",
              f"CAST({'signup_ts' if 'signup_ts' in frame.columns else 'NULL'} AS TIMESTAMP) AS signup_ts"]
    for attribute, spec in config.customers.attributes.items():
        value = f'"{attribute}"' if attribute in frame.columns else "NULL"
        select.append(f"CAST({value} AS {'DOUBLE' if spec.type == 'numeric' else 'VARCHAR'}) AS {attribute}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS SELECT {', '.join(select)} FROM _lifetag_customers_input")
    return name


def build(orders: pd.DataFrame, as_of, config: Config, customers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Features at `as_of` for every customer with an order before it (pandas in, pandas out).

    With `customers` (canonical customers frame), buyers also get signup_days and the attributes.
    """
    con = connect(config.engine)
    try:
        view = orders_view(con, orders)
        table = customers_view(con, customers, config) if customers is not None else None
        return build_relation(con, view, as_of, config, table).df()
    finally:
        con.close()


def registered(orders: pd.DataFrame, customers: pd.DataFrame, as_of, config: Config) -> pd.DataFrame:
    """Customers of the customers frame with no purchase before `as_of` and no sign-up on or after it."""
    con = connect(config.engine)
    try:
        view = orders_view(con, orders)
        return registered_relation(con, view, customers_view(con, customers, config), as_of, config).df()
    finally:
        con.close()
