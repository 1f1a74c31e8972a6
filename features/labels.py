"""Labels: what each customer did in the window [as_of, as_of + horizon_days)."""
from __future__ import annotations

import duckdb
import pandas as pd

from configs.schema import Config, load_config
from features.behaviour import _return_flag, _ts_sql, as_timestamp, orders_view
from features.engine import connect

__all__ = ["labels", "labels_relation"]


def labels_sql(source: str, as_of: pd.Timestamp, horizon_days: int, config: Config) -> str:
    """Future orders and net spend for every customer with a purchase before `as_of` (zero if none)."""
    cut = _ts_sql(as_of)
    return f"""
WITH lines AS (
    SELECT CAST(customer_id AS VARCHAR) AS customer_id,
           coalesce(CAST(order_id AS VARCHAR), '@' || CAST(order_ts AS VARCHAR)) AS order_key,
           order_ts, amount, {_return_flag(config)} AS is_return
    FROM {source}
    WHERE order_ts < {cut} + INTERVAL {int(horizon_days)} DAY
),
population AS (
    SELECT DISTINCT customer_id FROM lines WHERE order_ts < {cut} AND NOT is_return
),
future AS (
    SELECT customer_id,
           count(DISTINCT order_key) FILTER (WHERE NOT is_return) AS future_orders,
           -- Integer cents keep the sum exact, so re-runs agree to the last digit.
           sum(CAST(round(CASE WHEN is_return THEN -abs(amount) ELSE amount END * 100) AS BIGINT)) / 100 AS future_spend
    FROM lines WHERE order_ts >= {cut}
    GROUP BY customer_id
)
SELECT p.customer_id,
       coalesce(f.future_orders, 0) AS future_orders,
       coalesce(f.future_spend, 0.0) AS future_spend
FROM population p LEFT JOIN future f USING (customer_id)
ORDER BY p.customer_id
"""


def labels_relation(
    con: duckdb.DuckDBPyConnection, source: str, as_of, horizon_days: int, config: Config
) -> duckdb.DuckDBPyRelation:
    """Labels over the canonical orders relation `source` in `con`, as a DuckDB relation."""
    return con.sql(labels_sql(source, as_timestamp(as_of), horizon_days, config))


def labels(orders: pd.DataFrame, as_of, horizon_days: int, config: Config | None = None) -> pd.DataFrame:
    """`future_orders` and `future_spend` (net of returns) in [as_of, as_of + horizon_days).

    One row per customer with a purchase before `as_of` (the population `features.build` scores);
    customers who did nothing in the window get zeros.
    """
    config = config or load_config()
    con = connect(config.engine)
    try:
        view = orders_view(con, orders)
        return labels_relation(con, view, as_of, horizon_days, config).df()
    finally:
        con.close()
