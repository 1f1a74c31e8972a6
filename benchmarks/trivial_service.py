"""The floor for benchmarks/serve.py: a BentoML service that answers `/tags` and `/score` with one dict
lookup, so the figures beside lifetag's are what BentoML, HTTP and JSON alone cost on this machine.

    TRIVIAL_WORKERS=2 bentoml serve benchmarks.trivial_service:TrivialService --port 3001   # from the repository root

Its endpoints take the same request bodies as `serving.service.LifetagService` (pydantic parses them)
and answer with a tag row of the same shape as the snapshot's: TRIVIAL_ROW (JSON of one snapshot row)
is that row, so the answers are as long as lifetag's. Nothing here is computed: `/score` parses the
customers and their orders but looks each customer up like `/tags` does.
"""
from __future__ import annotations

import json
import os
from typing import Any

import bentoml
from pydantic import BaseModel, Field

__all__ = ["Customer", "Order", "TrivialService"]

_ROW: dict[str, Any] = json.loads(os.environ.get("TRIVIAL_ROW", '{"customer_id": null}'))


class Order(BaseModel):
    """One order line of a `/score` request (the fields of `lifetag generate`'s orders)."""

    order_ts: str
    amount: float
    order_id: str | None = None
    quantity: int | None = None
    category: str | None = None
    product_id: str | None = None
    discount: float | None = None
    channel: str | None = None
    status: str | None = None


class Customer(BaseModel):
    """One customer of a `/score` request with their order lines."""

    customer_id: str
    signup_ts: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    orders: list[Order] = Field(default_factory=list)


@bentoml.service(name="trivial", traffic={"timeout": 30}, workers=int(os.environ.get("TRIVIAL_WORKERS", "2")))
class TrivialService:
    """Tag lookups from a one-row dict: the cost of the framework, not of lifetag."""

    def __init__(self) -> None:
        self.rows = {str(_ROW.get("customer_id")): _ROW}

    @bentoml.api(route="/tags")
    def tags(self, customer_ids: list[str] = Field(min_length=1, max_length=1000)) -> dict[str, Any]:
        """The row of each id (the one row, whatever the id)."""
        return {"tags": [self.rows.get(c, _ROW) for c in customer_ids], "unknown": [], "model_version": "trivial",
                "as_of": None}

    @bentoml.api(route="/score")
    def score(self, as_of: str, customers: list[Customer] = Field(min_length=1, max_length=1000)) -> dict[str, Any]:
        """The row of each customer, looked up like `/tags`; the orders are parsed, not used."""
        return {"tags": [self.rows.get(c.customer_id, _ROW) for c in customers], "model_version": "trivial",
                "as_of": as_of}
