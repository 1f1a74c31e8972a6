"""Point-in-time inputs of the scenario tags that the behavioural features do not carry: categories
due for a re-buy and purchases in promotion periods. Like `features.behaviour`, it sees only orders
before `as_of`, and a customer's values depend on that customer's orders alone (plus, for
`categories_due`, the shop-wide re-buy interval of each category: learned from the history before
the training as_of and stored in the model bundle, so scoring one customer needs no other's orders).
"""
from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pandas as pd
import pyarrow as pa

from configs.schema import Config
from features.behaviour import _return_flag, _ts_sql, as_timestamp, customer_columns, feature_sql

__all__ = ["SCENARIO_FEATURE_DOCS", "learn_rebuy_intervals", "rebuy_from_counts_sql", "rebuy_intervals_from_counts", "rebuy_gap_counts_sql",
           "rebuy_intervals_sql", "rebuy_intervals_view",
           "scenario_features_sql", "scenario_features_relation", "tag_inputs_relation"]

DAY_US = 86_400_000_000

SCENARIO_FEATURE_DOCS = {
    "categories_due": ("categories this customer bought before whose typical re-buy interval "
                       "(shop-wide median per category, learned at training time and stored with the model) "
                       "has passed since their last purchase in it", "count"),
    "promo_orders": ("orders placed during a configured promotion period", "orders"),
    "orders_since_promo": ("orders after the end of the last promotion period the customer bought in "
                           "(0 when they have not ordered since; null when they never bought in one)", "orders"),
}


def rebuy_intervals_sql(source: str, as_of: pd.Timestamp, config: Config) -> str:
    """Shop-wide re-buy interval per category (median days between a customer's purchase days in it,
    categories with at least 20 such gaps): `category`, `rebuy_days`, from the orders before `as_of`."""
    return rebuy_from_counts_sql(f"({rebuy_gap_counts_sql(source, as_of, config)})")


def rebuy_gap_counts_sql(source: str, as_of: pd.Timestamp, config: Config) -> str:
    """How many times each gap (days between a customer's purchase days in a category) occurs, per category:
    `category`, `gap_days`, `gaps`. A customer's gaps depend on their own orders only, so the counts of parts
    holding disjoint customers add up to the whole history's (Spark sums its partitions'); the median is
    then read off the summed counts (`rebuy_from_counts_sql`), exactly."""
    cut = _ts_sql(as_of)
    return f"""
WITH category_days AS (
    SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id, category, CAST(order_ts AS DATE) AS day
    FROM {source}
    WHERE order_ts < {cut} AND category IS NOT NULL AND NOT {_return_flag(config)}
),
category_gaps AS (
    SELECT category, day - lag(day) OVER (PARTITION BY customer_id, category ORDER BY day) AS gap_days
    FROM category_days
)
SELECT category, gap_days, count(*) AS gaps FROM category_gaps WHERE gap_days IS NOT NULL GROUP BY ALL
"""


def rebuy_from_counts_sql(counts: str) -> str:
    """`category`, `rebuy_days` from gap counts (`rebuy_gap_counts_sql`'s columns; the rows of several parts
    may repeat a gap): the median gap of each category with at least 20 gaps, the mean of the two middle
    gaps when their number is even, as DuckDB's median computes it."""
    return f"""
WITH summed AS (SELECT category, gap_days, sum(gaps) AS gaps FROM {counts} GROUP BY ALL),
running AS (
    SELECT category, gap_days, sum(gaps) OVER (PARTITION BY category ORDER BY gap_days) AS upto,
           sum(gaps) OVER (PARTITION BY category) AS total
    FROM summed
)
SELECT category, (min(gap_days) FILTER (WHERE upto >= (total + 1) // 2)
                  + min(gap_days) FILTER (WHERE upto >= total // 2 + 1)) / 2.0 AS rebuy_days
FROM running GROUP BY category HAVING any_value(total) >= 20
"""


def scenario_features_sql(source: str, as_of: pd.Timestamp, config: Config, interval_source: str | None = None,
                          rebuy: str | None = None) -> str:
    """Per customer with a purchase before `as_of`: categories_due, promo_orders, orders_since_promo.

    rebuy: a relation holding the category re-buy intervals (category, rebuy_days): scoring passes the
    bundle's (rebuy_intervals_view), so a customer's values depend on their own orders only. Without
    it they are learned here from `interval_source` (default `source`): right only when that is a
    whole shop's history.
    """
    cut = _ts_sql(as_of)
    periods = config.scoring.promo_periods
    if periods:
        values = ", ".join(
            f"({_ts_sql(as_timestamp(p.start))}, {_ts_sql(as_timestamp(p.end))} + INTERVAL 1 DAY)" for p in periods
        )
        promo_cte = f"promos AS (SELECT * FROM (VALUES {values}) AS v(p_start, p_end) WHERE p_start < {cut}),"
        promo_join = "LEFT JOIN promos ON o.order_ts >= promos.p_start AND o.order_ts < promos.p_end"
        promo_end = "max(promos.p_end)"
    else:
        promo_cte, promo_join, promo_end = "", "", "CAST(NULL AS TIMESTAMP)"
    intervals_from = interval_source or source
    return f"""
WITH {promo_cte}
purchases AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id,
           coalesce(CAST(order_id AS VARCHAR), '@' || CAST(order_ts AS VARCHAR)) AS order_key,
           min(order_ts) AS order_ts
    FROM {source}
    WHERE order_ts < {cut} AND NOT {_return_flag(config)}
    GROUP BY 1, 2
),
flagged AS (
    SELECT o.customer_id, o.order_key, o.order_ts, {promo_end} AS promo_end
    FROM purchases o {promo_join}
    GROUP BY o.customer_id, o.order_key, o.order_ts
),
promo_per_customer AS (
    SELECT customer_id,
           count(*) FILTER (WHERE promo_end IS NOT NULL) AS promo_orders,
           max(promo_end) AS last_promo_end
    FROM flagged GROUP BY customer_id
),
promo AS (
    SELECT p.customer_id, p.promo_orders,
           CASE WHEN p.last_promo_end IS NULL THEN NULL
                ELSE count(f.order_key) FILTER (WHERE f.order_ts >= p.last_promo_end) END AS orders_since_promo
    FROM promo_per_customer p JOIN flagged f USING (customer_id)
    GROUP BY p.customer_id, p.promo_orders, p.last_promo_end
),
rebuy AS (
    {f"SELECT * FROM {rebuy}" if rebuy else rebuy_intervals_sql(intervals_from, as_of, config)}
),
last_in_category AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id, category, max(order_ts) AS last_ts
    FROM {source}
    WHERE order_ts < {cut} AND category IS NOT NULL AND NOT {_return_flag(config)}
    GROUP BY 1, 2
),
due AS (
    SELECT l.customer_id,
           count(*) FILTER (WHERE (epoch_us({cut}) - epoch_us(l.last_ts)) / {DAY_US} >= r.rebuy_days) AS categories_due
    FROM last_in_category l JOIN rebuy r USING (category)
    GROUP BY l.customer_id
)
SELECT p.customer_id, coalesce(d.categories_due, 0) AS categories_due, p.promo_orders, p.orders_since_promo
FROM promo p LEFT JOIN due d USING (customer_id)
ORDER BY p.customer_id
"""


def scenario_features_relation(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config,
                               interval_source: str | None = None) -> duckdb.DuckDBPyRelation:
    """The scenario inputs at `as_of` as a lazy DuckDB relation over the canonical orders `source`."""
    return con.sql(scenario_features_sql(source, as_timestamp(as_of), config, interval_source))


def learn_rebuy_intervals(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config) -> dict[str, float]:
    """The shop-wide re-buy interval per category, learned from the orders of `source` before `as_of`
    (rebuy_intervals_sql), as {category: days} in category order: what a model bundle stores."""
    return rebuy_intervals_from_counts(con, f"({rebuy_gap_counts_sql(source, as_timestamp(as_of), config)})")


def rebuy_intervals_from_counts(con: duckdb.DuckDBPyConnection, counts: str) -> dict[str, float]:
    """{category: days} in category order from the relation `counts` (`rebuy_gap_counts_sql`'s rows, of the
    whole history or of parts of its customers)."""
    rows = con.execute(f"SELECT * FROM ({rebuy_from_counts_sql(counts)}) ORDER BY category").fetchall()
    return {str(category): float(days) for category, days in rows}


def rebuy_intervals_view(con: duckdb.DuckDBPyConnection, intervals: Mapping[str, float],
                         name: str = "_lifetag_rebuy") -> str:
    """Register {category: days} in `con` as the relation `name` (category, rebuy_days) and return the name.

    The values are handed to DuckDB as an Arrow table, never written into SQL text.
    """
    table = pa.table({"category": pa.array([str(c) for c in intervals], pa.string()),
                      "rebuy_days": pa.array([float(d) for d in intervals.values()], pa.float64())})
    con.register(name, table)
    return name


def tag_inputs_relation(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config,
                        intervals: Mapping[str, float], customers: str | None = None,
                        shop: str | None = None) -> duckdb.DuckDBPyRelation:
    """What `serving.tags.tag_rows` takes, for every buyer of the canonical orders `source` before `as_of`:
    their features (`features.behaviour.build_relation`; `customers` and `shop` as there) plus the
    scenario inputs, categories_due counted against `intervals` ({category: re-buy days}, the bundle's).
    Ordered by customer_id; a customer's row depends only on their own orders (and, with
    features.season, on `shop`)."""
    return con.sql(tag_inputs_sql(con, source, as_of, config, intervals, customers, shop))


def tag_inputs_sql(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config,
                   intervals: Mapping[str, float], customers: str | None = None, shop: str | None = None) -> str:
    """`tag_inputs_relation`'s query as text, for running it without a relation (binding the relation
    costs a third of its run for one customer). Registers the re-buy intervals in `con`."""
    as_of = as_timestamp(as_of)
    if customers is not None:
        customer_columns(config)  # a config's attribute names are checked before they reach SQL
    rebuy = rebuy_intervals_view(con, intervals)
    scenario = scenario_features_sql(source, as_of, config, rebuy=rebuy)
    # Each side in a subquery of its own: the feature SQL's CTE names (e.g. `orders`) are scoped to it
    # and cannot capture the relation names the scenario SQL reads.
    return f"""
SELECT f.*, coalesce(s.categories_due, 0) AS categories_due, coalesce(s.promo_orders, 0) AS promo_orders,
       s.orders_since_promo
FROM ({feature_sql(source, as_of, config, customers, shop)}) f LEFT JOIN ({scenario}) s USING (customer_id)
ORDER BY f.customer_id
"""
