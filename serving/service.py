"""The online service (issue 19): a BentoML service class answering tag lookups from a `lifetag score`
snapshot and tagging customers from the orders a request sends, with the batch's own intake rules,
feature SQL, bundle and tag function.

    LIFETAG_SNAPSHOT=tags.parquet LIFETAG_MODEL=models:/lifetag@champion bentoml serve serving.service:LifetagService

(or `lifetag serve`). Endpoints: `POST /tags` {"customer_ids": [...]} -> the snapshot rows of the known
ids (the columns of docs/tags.md), unknown ids listed, never an error; `POST /score` {"as_of": ...,
"customers": [{"customer_id", "signup_ts", "attributes", "orders": [...]}]} -> the same tag rows,
computed now; `GET /model` -> model version, trained at, horizons, validation metrics, snapshot as_of
and rows; `POST /admin/reload` -> load the configured model URI and snapshot again (a new champion,
tonight's file) without failing a request in flight. With LIFETAG_API_TOKEN set, every endpoint but
health, readiness and metrics needs `Authorization: Bearer <token>` (401 otherwise). A request that
breaks the typed body, a limit or an intake rule gets a 422 naming the field.
"""
from __future__ import annotations

import functools
import hmac
import json
import logging
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from configs.errors import LifetagError
from serving.online import MAX_CUSTOMERS, CustomerOrders, json_ready, json_rows

__all__ = ["MAX_IDS", "OPEN_PATHS", "BearerToken", "LifetagService", "ServiceError", "ServiceState", "Snapshot",
           "UnprocessableAs422", "model_info"]

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
        """Read a snapshot (Parquet, or `file.duckdb::table`); one row per customer_id, or a one-paragraph error."""
        if "::" in str(path):
            table = _read_duckdb_table(str(path))
        else:
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ServiceError(f"snapshot {path}: not a readable Parquet file of tags ({exc}). Point "
                                   "LIFETAG_SNAPSHOT at the output of `lifetag score --out tags.parquet` (or "
                                   "FILE.duckdb::TABLE).") from None
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
        return [json_ready(row) for row in rows], unknown


def _read_duckdb_table(text: str) -> pa.Table:
    """The table of a `file.duckdb::table` snapshot, read by a connection that can read nothing else."""
    import duckdb

    from features.engine import connect, lock_external_access, repr_ident

    path, table = text.split("::", 1)
    if not Path(path).is_file():
        raise ServiceError(f"snapshot {text}: no such DuckDB file {path}. Point LIFETAG_SNAPSHOT at a `lifetag score` "
                           "output (tags.parquet, or FILE.duckdb::TABLE).")
    con = connect()
    try:
        lock_external_access(con, [Path(path), Path(path + ".wal")])
        # The path is a bound parameter and the table a quoted identifier: neither becomes SQL text.
        con.execute("ATTACH ? AS _lifetag_snapshot (READ_ONLY)", [path])
        return con.sql(f"SELECT * FROM _lifetag_snapshot.{repr_ident(table)}").to_arrow_table()
    except duckdb.Error as exc:
        raise ServiceError(f"snapshot {text}: cannot read table {table!r} of {path} "
                           f"({str(exc).strip().splitlines()[0]}). Use a `lifetag score --out FILE.duckdb::TABLE` "
                           "output.") from None
    finally:
        con.close()


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


class UnprocessableAs422:
    """ASGI middleware: BentoML answers a body that breaks the typed request models with a 400; lifetag's
    contract (and HTTP's) is 422 for a well-formed request it cannot process, so those become 422."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}

        async def relay(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 400:
                held["start"] = message  # decided on the body: only validation errors change
                return
            if message["type"] == "http.response.body" and "start" in held:
                start = held.pop("start")
                if message.get("body", b"").startswith(b'{"error":') and b"validation error" in message["body"][:200]:
                    start = {**start, "status": 422}
                await send(start)
            await send(message)

        await self.app(scope, receive, relay)


@dataclass(frozen=True)
class ServiceState:
    """What one worker answers from: the bundle and its version, the snapshot, the online scorer.
    Replaced as a whole on reload, so a request sees one state from start to end."""

    bundle: Any
    version: str
    snapshot: Snapshot | None
    scorer: Any
    loaded_at: str

    @classmethod
    def load(cls) -> "ServiceState":
        """The configured model (LIFETAG_MODEL, default the champion), snapshot and config (LIFETAG_CONFIG)."""
        from configs.schema import load_config
        from serving.bundle import load_model
        from serving.online import OnlineScorer

        snapshot_path = os.environ.get("LIFETAG_SNAPSHOT")
        snapshot = Snapshot.load(snapshot_path) if snapshot_path else None
        bundle, version = load_model(os.environ.get("LIFETAG_MODEL"))
        config = load_config(os.environ.get("LIFETAG_CONFIG") or None)
        return cls(bundle, version, snapshot, OnlineScorer(bundle, version, config),
                   datetime.now(timezone.utc).isoformat(timespec="seconds"))


def reload_stamp() -> Path:
    """The file one worker touches after a reload so that the server's other workers reload too.

    `lifetag serve` names one per server (LIFETAG_RELOAD_STAMP); otherwise one per parent process, which
    all workers of one `bentoml serve` share.
    """
    from features.engine import lifetag_home

    named = os.environ.get("LIFETAG_RELOAD_STAMP")
    return Path(named) if named else lifetag_home() / "service" / f"reload-{os.getppid()}"


def _stamp_of(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


class Reloading:
    """The worker's current ServiceState, swapped whole on reload, with the other workers kept in step."""

    def __init__(self) -> None:
        self.stamp = reload_stamp()
        self._seen = _stamp_of(self.stamp)
        self._lock = threading.Lock()
        self.state = ServiceState.load()

    def current(self) -> ServiceState:
        """The state to answer this request from; reloads first when another worker has reloaded."""
        if _stamp_of(self.stamp) != self._seen:
            with self._lock:
                seen = _stamp_of(self.stamp)
                if seen != self._seen:
                    self._seen = seen
                    try:
                        self.state = ServiceState.load()
                    except Exception:  # noqa: BLE001 - the worker keeps answering from what it has
                        logging.getLogger("lifetag").exception("reload after another worker's failed; kept %s",
                                                               self.state.version)
        return self.state

    def reload(self) -> tuple[ServiceState, ServiceState]:
        """Load the configured model and snapshot again and swap them in; (before, after). A failure
        (a LifetagError) leaves the current state answering."""
        with self._lock:
            before = self.state
            after = ServiceState.load()
            self.state = after
            self.stamp.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.stamp.with_name(f".{self.stamp.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"model_version": after.version, "pid": os.getpid(),
                                             "at": time.time()}))
            os.replace(temporary, self.stamp)
            self._seen = _stamp_of(self.stamp)
        # Requests still answering from `before` keep its scorer; it goes when nothing refers to it.
        return before, after


def _moment_text(moment: Any) -> str:
    """A day as YYYY-MM-DD (as the snapshot says it), any other moment as ISO text."""
    moment = pd.Timestamp(moment)
    return moment.date().isoformat() if moment == moment.normalize() else moment.isoformat()


def _error(status: int, message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


@functools.cache
def _service_class() -> Any:
    import bentoml
    from fastapi import FastAPI
    from pydantic import Field

    routes = FastAPI(title="lifetag", description="model and admin routes of the lifetag service")

    @bentoml.service(name="lifetag", traffic={"timeout": 30}, workers=int(os.environ.get("LIFETAG_WORKERS", "1")))
    @bentoml.asgi_app(routes, path="/")
    class LifetagService:
        """Predictive customer tags over HTTP: lookups from the nightly snapshot, and tags computed from
        the orders a request sends."""

        def __init__(self) -> None:
            self.states = Reloading()

        @bentoml.api(route="/tags")
        def tags(self, customer_ids: list[str] = Field(min_length=1, max_length=MAX_IDS)) -> dict[str, Any]:
            """The snapshot's tags of these customers; unknown ids are listed, never an error."""
            state = self.states.current()
            if state.snapshot is None:
                return {"tags": [], "unknown": list(customer_ids), "model_version": state.version, "as_of": None}
            rows, unknown = state.snapshot.lookup([str(c) for c in customer_ids])
            return {"tags": rows, "unknown": unknown, "model_version": state.version, "as_of": state.snapshot.as_of}

        @bentoml.api(route="/score")
        def score(self, customers: list[CustomerOrders] = Field(min_length=1, max_length=MAX_CUSTOMERS),
                  as_of: datetime | date | None = None) -> dict[str, Any]:
            """Tags computed now from the orders sent, as `lifetag score` would tag these customers at as_of
            (default: now); one row per customer, in the order sent."""
            state = self.states.current()
            moment = as_of or datetime.now(timezone.utc).replace(microsecond=0)
            try:
                tags = state.scorer.score(customers, moment)
            except LifetagError as exc:
                return _error(422, str(exc))
            return {"tags": json_rows(tags), "model_version": state.version, "as_of": _moment_text(tags["as_of"].iloc[0])}

        @routes.get("/model")
        def model(self) -> dict[str, Any]:
            """Model version, trained at, horizons, validation score, snapshot as_of and row count."""
            state = self.states.current()
            return {**model_info(state.bundle, state.version, state.snapshot), "loaded_at": state.loaded_at}

        @routes.post("/admin/reload")
        def reload(self) -> Any:
            """Load the configured model URI and snapshot again (a new champion, tonight's snapshot) and
            answer from them; requests in flight finish on what they started with."""
            try:
                before, after = self.states.reload()
            except LifetagError as exc:
                return _error(422, f"reload failed, still serving model {self.states.state.version}: {exc}")
            except Exception as exc:  # noqa: BLE001 - e.g. the registry unreachable: the server goes on
                logging.getLogger("lifetag").exception("reload failed")
                return _error(503, f"reload failed ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}), "
                                   f"still serving model {self.states.state.version}; see the server log.")
            return {"previous_model_version": before.version,
                    **model_info(after.bundle, after.version, after.snapshot), "loaded_at": after.loaded_at}

    LifetagService.add_asgi_middleware(UnprocessableAs422)
    LifetagService.add_asgi_middleware(BearerToken)
    return LifetagService


def __getattr__(name: str) -> Any:
    # BentoML is imported only when the service itself is asked for, so `lifetag score` and the
    # tests of the lookups above never pay for it.
    if name == "LifetagService":
        return _service_class()
    raise AttributeError(name)
