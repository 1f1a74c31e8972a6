"""Labels: what each customer did in the window [as_of, as_of + horizon_days)."""
from __future__ import annotations

import duckdb
import pandas as pd

from configs.schema import Config, load_config
from features.behaviour import _return_flag, _ts_sql, as_timestamp, orders_view
from features.engine import connect

__all__ = ["labels", "labels_relation", "window_relation"]


def window_sql(source: str, start: pd.Timestamp, days: int, config: Config) -> str:
    """Purchase orders and net spend in [start, start + days) of every customer with a line in that window.

    An order counts when it has a bought line (return-only events are money back, not orders); spend
    is net: returned lines and negative amounts count as money back, as in the features.
    """
    cut = _ts_sql(start)
    is_return = _return_flag(config)
    return f"""
SELECT CAST(customer_id AS VARCHAR) AS customer_id,
       count(DISTINCT coalesce(CAST(order_id AS VARCHAR), '@' || CAST(order_ts AS VARCHAR)))
           FILTER (WHERE NOT {is_return}) AS future_orders,
       -- Integer cents keep the sum exact, so re-runs agree to the last digit.
       sum(CAST(round(CASE WHEN {is_return} THEN -abs(amount) ELSE amount END * 100) AS BIGINT)) / 100 AS future_spend
FROM {source}
WHERE order_ts >= {cut} AND order_ts < {cut} + INTERVAL {int(days)} DAY
GROUP BY 1
"""


def labels_sql(source: str, as_of: pd.Timestamp, horizon_days: int, config: Config) -> str:
    """Future orders and net spend for every customer with a purchase before `as_of` (zero if none)."""
    cut = _ts_sql(as_of)
    return f"""
WITH population AS (
    SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id FROM {source}
    WHERE order_ts < {cut} AND NOT {_return_flag(config)}
),
future AS ({window_sql(source, as_of, horizon_days, config)})
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


def window_relation(
    con: duckdb.DuckDBPyConnection, source: str, start, days: int, config: Config
) -> duckdb.DuckDBPyRelation:
    """`future_orders` and `future_spend` (net) in [start, start + days) over the canonical orders relation
    `source`, one row per customer with a line in the window (customers who did nothing there have no row)."""
    return con.sql(window_sql(source, as_timestamp(start), days, config))


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
