"""The online service (issue 19, first part): a BentoML service class that answers tag lookups from a
`lifetag score` snapshot and describes the model behind it.

    LIFETAG_SNAPSHOT=tags.parquet LIFETAG_MODEL=models:/lifetag@champion bentoml serve serving.service:LifetagService

With LIFETAG_API_TOKEN set, every endpoint but health, readiness and metrics needs `Authorization:
Bearer <token>` (401 otherwise). Endpoints so far: `POST /tags` {"customer_ids": [...]} -> the snapshot rows of the known ids (the
columns of docs/tags.md), the unknown ids listed, never an error; `POST /model` -> model version,
trained at, horizons, validation metrics, snapshot as_of and row count. Still to come (issue 19):
`/score` through `serving.tags.tag_rows`, reload, `lifetag serve`.
"""
from __future__ import annotations

import functools
import hmac
import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from configs.errors import LifetagError

__all__ = ["MAX_IDS", "OPEN_PATHS", "BearerToken", "ServiceError", "Snapshot", "LifetagService"]

# Ids per /tags call: a lookup of this many rows answers in milliseconds; more belongs in a batch job.
MAX_IDS = int(os.environ.get("LIFETAG_MAX_IDS", "1000"))


class ServiceError(LifetagError, ValueError):
    """A snapshot the service cannot hold, or a request beyond its limits (answered with a 4xx)."""


@dataclass
class Snapshot:
    """A `lifetag score` output held in memory for lookups by customer id."""

    table: pa.Table
    row_of: dict[str, int]
    path: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Snapshot":
        """Read a Parquet snapshot; one row per customer_id, or a one-paragraph error."""
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ServiceError(f"snapshot {path}: not a readable Parquet file of tags ({exc}). Point "
                               "LIFETAG_SNAPSHOT at the output of `lifetag score --out tags.parquet`.") from None
        if "customer_id" not in table.column_names:
            raise ServiceError(f"snapshot {path}: no customer_id column; it has {', '.join(table.column_names[:8])}. "
                               "Use a `lifetag score` output.")
        ids = [str(v) for v in table.column("customer_id").to_pylist()]
        row_of = {customer: i for i, customer in enumerate(ids)}
        if len(row_of) != len(ids):
            repeated = sorted(c for c, n in Counter(ids).items() if n > 1)[:5]
            raise ServiceError(f"snapshot {path}: {len(ids) - len(row_of):,} customer ids appear more than once "
                               f"({', '.join(repeated)}); a `lifetag score` output has one row per customer.")
        return cls(table, row_of, str(path))

    @property
    def as_of(self) -> str | None:
        """The snapshot's scoring day (its `as_of` column), when it has one."""
        if "as_of" not in self.table.column_names or not len(self.table):
            return None
        return str(self.table.column("as_of")[0].as_py())[:10]

    def lookup(self, customer_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows of the known ids (JSON-ready, in the order asked) and the unknown ids."""
        known = [(c, self.row_of[c]) for c in customer_ids if c in self.row_of]
        unknown = [c for c in customer_ids if c not in self.row_of]
        rows = self.table.take(np.array([i for _, i in known], dtype=np.int64)).to_pylist() if known else []
        return [_json_ready(row) for row in rows], unknown


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    """NaN and infinities become null (JSON has neither); timestamps become ISO text."""
    out = {}
    for key, value in row.items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        out[key] = value
    return out


def model_info(bundle: Any, version: str, snapshot: Snapshot | None) -> dict[str, Any]:
    """What `/model` answers: the bundle's version, training day, horizons and validation metrics."""
    metadata = bundle.metadata or {}
    return {
        "model_version": version,
        "trained_as_of": bundle.as_of,
        "horizons_days": {name: model.horizon_days for name, model in bundle.models.items()},
        "models": {name: model.kind + ("" if model.offset == "none" else "+bgnbd_offset")
                   for name, model in bundle.models.items()},
        "validation_score": metadata.get("validation_score"),
        "snapshot_as_of": snapshot.as_of if snapshot else None,
        "snapshot_rows": len(snapshot.table) if snapshot else 0,
    }


# Health, readiness and metrics stay open for load balancers and Prometheus; everything else needs the token.
OPEN_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/metrics"})


class BearerToken:
    """ASGI middleware: with LIFETAG_API_TOKEN set, every request but OPEN_PATHS needs
    `Authorization: Bearer <token>`, compared in constant time; otherwise a 401."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.app = app
        token = os.environ.get("LIFETAG_API_TOKEN") if token is None else token
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.expected is None or scope.get("type") != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope.get("headers", []) if name.lower() == b"authorization"), b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        body = json.dumps({"error": "missing or wrong token: send the header 'Authorization: Bearer <token>' "
                                    "with the token the server was started with (LIFETAG_API_TOKEN)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


@functools.cache
def _service_class() -> Any:
    import bentoml
    from pydantic import Field

    @bentoml.service(name="lifetag", traffic={"timeout": 30}, workers=int(os.environ.get("LIFETAG_WORKERS", "1")))
    class LifetagService:
        """Predictive customer tags over HTTP: lookups from the nightly snapshot."""

        def __init__(self) -> None:
            from serving.bundle import load_model

            snapshot = os.environ.get("LIFETAG_SNAPSHOT")
            self.snapshot = Snapshot.load(snapshot) if snapshot else None
            self.bundle, self.version = load_model(os.environ.get("LIFETAG_MODEL"))

        @bentoml.api(route="/tags")
        def tags(self, customer_ids: list[str] = Field(min_length=1, max_length=MAX_IDS)) -> dict[str, Any]:
            """The snapshot's tags of these customers; unknown ids are listed, never an error."""
            if self.snapshot is None:
                return {"tags": [], "unknown": list(customer_ids), "model_version": self.version, "as_of": None}
            rows, unknown = self.snapshot.lookup([str(c) for c in customer_ids])
            return {"tags": rows, "unknown": unknown, "model_version": self.version, "as_of": self.snapshot.as_of}

        @bentoml.api(route="/model")
        def model(self) -> dict[str, Any]:
            """Model version, trained at, horizons, validation score, snapshot as_of and row count."""
            return model_info(self.bundle, self.version, self.snapshot)

    LifetagService.add_asgi_middleware(BearerToken)
    return LifetagService


def __getattr__(name: str) -> Any:
    # BentoML is imported only when the service itself is asked for, so `lifetag score` and the
    # tests of the lookups above never pay for it.
    if name == "LifetagService":
        return _service_class()
    raise AttributeError(name)
