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
import math
import os
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from configs.errors import LifetagError
from serving.online import MAX_CUSTOMERS, CustomerOrders, json_ready, json_rows

if TYPE_CHECKING:  # loaded where requests are answered, not in BentoML's supervising process
    import numpy as np
    import pandas as pd
    import pyarrow as pa

__all__ = ["MAX_IDS", "OPEN_PATHS", "BearerToken", "LifetagService", "ServiceError", "ServiceState", "Snapshot",
           "UnprocessableAs422", "model_info"]

# Ids per /tags call: a lookup of this many rows answers in milliseconds; more belongs in a batch job.
MAX_IDS = int(os.environ.get("LIFETAG_MAX_IDS", "1000"))


class ServiceError(LifetagError, ValueError):
    """A snapshot the service cannot hold, or a request beyond its limits (answered with a 4xx)."""


@dataclass
class Snapshot:
    """A `lifetag score` output held for lookups by customer id.

    The table is read once into an uncompressed Arrow file under LIFETAG_HOME/service/snapshots (named
    by the source's path, size and modification time) and memory-mapped from there: a server's workers
    share its pages instead of holding a copy each, and a worker starts in a second. The index is the
    sorted ids as one fixed-width array (a binary search per id), not a dictionary of a million strings.
    """

    table: pa.Table
    ids: np.ndarray  # the customer ids, sorted
    rows: np.ndarray | None  # the table row of each sorted id; None when the table is sorted already
    path: str

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Snapshot":
        """Read a snapshot (Parquet, or `file.duckdb::table`); one row per customer_id, or a one-paragraph error."""
        import numpy as np
        import pyarrow as pa

        table = pa.ipc.open_file(pa.memory_map(str(_arrow_copy(str(path))), "r")).read_all()
        if "customer_id" not in table.column_names:
            raise ServiceError(f"snapshot {path}: no customer_id column; it has {', '.join(table.column_names[:8])}. "
                               "Use a `lifetag score` output.")
        ids = np.array(table.column("customer_id").cast(pa.string()).to_pylist(), dtype=str)
        rows = None
        if len(ids) > 1 and not (ids[:-1] < ids[1:]).all():
            rows = np.argsort(ids, kind="stable")
            ids = ids[rows]
        repeated = np.flatnonzero(ids[:-1] == ids[1:]) if len(ids) > 1 else np.array([], dtype=int)
        if len(repeated):
            shown = ", ".join(list(dict.fromkeys(str(ids[i]) for i in repeated))[:5])
            raise ServiceError(f"snapshot {path}: {len(repeated):,} customer ids appear more than once "
                               f"({shown}); a `lifetag score` output has one row per customer.")
        return cls(table, ids, rows, str(path))

    @property
    def as_of(self) -> str | None:
        """The snapshot's scoring day (its `as_of` column), when it has one."""
        if "as_of" not in self.table.column_names or not len(self.table):
            return None
        return str(self.table.column("as_of")[0].as_py())[:10]

    def lookup(self, customer_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows of the known ids (JSON-ready, in the order asked) and the unknown ids."""
        import numpy as np
        import pyarrow as pa

        asked = np.array(customer_ids, dtype=str)
        at = np.minimum(np.searchsorted(self.ids, asked), max(len(self.ids) - 1, 0))
        found = (self.ids[at] == asked) if len(self.ids) else np.zeros(len(asked), dtype=bool)
        rows = at[found] if self.rows is None else self.rows[at[found]]
        unknown = [c for c, known in zip(customer_ids, found) if not known]
        taken = self.table.take(pa.array(rows, pa.int64())).to_pylist() if len(rows) else []
        return [json_ready(row) for row in taken], unknown


def _arrow_copy(source: str) -> Path:
    """The snapshot as an uncompressed Arrow file in LIFETAG_HOME/service/snapshots, written once per version
    of the source (atomically: a temporary name, then rename); older copies of the same source go."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import hashlib

    from features.engine import lifetag_home

    path = source.split("::", 1)[0]
    try:
        stat = os.stat(path)
    except OSError as exc:
        raise ServiceError(f"snapshot {source}: cannot read it ({exc.strerror}). Point LIFETAG_SNAPSHOT at the output "
                           "of `lifetag score --out tags.parquet` (or FILE.duckdb::TABLE).") from None
    folder = lifetag_home() / "service" / "snapshots"
    key = hashlib.sha256(str(Path(path).resolve()).encode() + source.partition("::")[2].encode()).hexdigest()[:16]
    target = folder / f"{key}-{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}.arrow"
    if target.is_file():
        return target
    if "::" in source:
        table = _read_duckdb_table(source)
    else:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ServiceError(f"snapshot {source}: not a readable Parquet file of tags ({exc}). Point "
                               "LIFETAG_SNAPSHOT at the output of `lifetag score --out tags.parquet` (or "
                               "FILE.duckdb::TABLE).") from None
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f".{target.name}.{os.getpid()}.tmp"
    # One chunk per column: taking rows from a table of many chunks costs ~25 ms on a million rows.
    with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=max(len(table), 1))
    os.replace(temporary, target)
    for older in folder.glob(f"{key}-*.arrow"):
        if older != target:
            older.unlink(missing_ok=True)  # a worker still mapping it keeps its pages until it lets go
    return target


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
        "trained_at": metadata.get("trained_at"),
        "validation_score": metadata.get("validation_score"),
        # target -> model and baselines -> metric: the champion against BG/NBD and the others, out of time.
        "validation_metrics": _finite(metadata.get("validation_metrics")),
        "snapshot_as_of": snapshot.as_of if snapshot else None,
        "snapshot_rows": len(snapshot.table) if snapshot else 0,
    }


def _finite(value: Any) -> Any:
    """The value with NaN and infinities as null, all the way down (JSON has neither)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
        await _answer(send, 401, "missing or wrong token: send the header 'Authorization: Bearer <token>' with the "
                                 "token the server was started with (LIFETAG_API_TOKEN)", [(b"www-authenticate", b"Bearer")])


# The service's own endpoints: JSON in, JSON out.
API_PATHS = frozenset({"/tags", "/score", "/model", "/admin/reload"})


def _json_only(scope: dict[str, Any]) -> bool:
    """Whether a request may reach an endpoint: a POST to one of ours carries JSON (or says nothing)."""
    if scope.get("method") != "POST" or scope.get("path") not in API_PATHS:
        return True
    kind = next((value for name, value in scope.get("headers", []) if name.lower() == b"content-type"), b"")
    return not kind or kind.split(b";")[0].strip().lower() == b"application/json"


async def _answer(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class UnprocessableAs422:
    """ASGI middleware for the service's answers to what clients send.

    BentoML answers a body that breaks the typed request models with a 400; lifetag's contract (and
    HTTP's) is 422 for a well-formed request it cannot process, so those become 422. A POST that is
    not JSON (a form, a multipart body BentoML would fail on) is a 415 before it reaches BentoML.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if not _json_only(scope):
            await _answer(send, 415, "send the body as JSON (content-type: application/json)")
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


def document_answers(schema: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI schema with the answers lifetag really gives: 401 without the token, 422 for a
    request it cannot process (with pydantic's list of errors as `detail`), 415 for a body that is not
    JSON, 503 when /score is overloaded or a reload cannot reach the model; the token as a bearer
    security scheme; request bodies required."""
    error = {"type": "object", "required": ["error"], "description": "what went wrong, in one paragraph",
             "properties": {"error": {"type": "string"}, "detail": {"description": "the fields at fault, when known"}}}
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["LifetagError"] = error
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "description": "LIFETAG_API_TOKEN, when the server was started with one"}
    answer = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/LifetagError"}}}}
    statuses = {"400": "Bad Request", "401": "missing or wrong token (only when the server has LIFETAG_API_TOKEN)",
                "422": "a request the service cannot process: a field the typed body refuses, a limit passed, "
                       "a line that breaks an intake rule, a model or snapshot that does not load"}
    for path, item in schema.get("paths", {}).items():
        if path not in API_PATHS:
            continue
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            operation["security"] = [{"bearer": []}]
            extra = dict(statuses)
            if method == "post":
                extra["415"] = "the body is not JSON"
                if "requestBody" in operation:
                    operation["requestBody"]["required"] = True
            if path in ("/score", "/admin/reload"):
                extra["503"] = "overloaded, or the model registry cannot be reached; retry"
            for status, description in extra.items():
                operation["responses"][status] = {"description": description, **answer}
    return schema


class DocumentedAnswers:
    """ASGI middleware: /docs.json is BentoML's schema passed through `document_answers`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != "/docs.json":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        start: dict[str, Any] = {}

        async def collect(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            parts.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(parts)
            if start.get("status") == 200:
                body = json.dumps(document_answers(json.loads(body))).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, collect)


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


def _freeze_loaded() -> None:
    """Keep what the worker has loaded (model, engine, snapshot index, the libraries' own objects) out of the
    cyclic garbage collector's full passes: each pass walked them all, a 100-150 ms pause in one request in
    a hundred. Run after every load; what a reload replaced is collected first (refcounts free the rest)."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()


class Reloading:
    """The worker's current ServiceState, swapped whole on reload, with the other workers kept in step."""

    def __init__(self) -> None:
        self.stamp = reload_stamp()
        self._seen = _stamp_of(self.stamp)
        self._lock = threading.Lock()
        self.state = self._load()

    @staticmethod
    def _load() -> ServiceState:
        """The configured state, loaded, with everything loaded so far frozen out of full GC passes."""
        state = ServiceState.load()
        _freeze_loaded()
        return state

    def current(self) -> ServiceState:
        """The state to answer this request from; reloads first when another worker has reloaded."""
        if _stamp_of(self.stamp) != self._seen:
            with self._lock:
                seen = _stamp_of(self.stamp)
                if seen != self._seen:
                    self._seen = seen
                    try:
                        self.state = self._load()
                    except Exception:  # noqa: BLE001 - the worker keeps answering from what it has
                        logging.getLogger("lifetag").exception("reload after another worker's failed; kept %s",
                                                               self.state.version)
        return self.state

    def reload(self) -> tuple[ServiceState, ServiceState]:
        """Load the configured model and snapshot again and swap them in; (before, after). A failure
        (a LifetagError) leaves the current state answering."""
        with self._lock:
            before = self.state
            after = self._load()
            self.state = after
            self.stamp.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.stamp.with_name(f".{self.stamp.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"model_version": after.version, "pid": os.getpid(),
                                             "at": time.time()}))
            os.replace(temporary, self.stamp)
            self._seen = _stamp_of(self.stamp)
        # Requests still answering from `before` keep its scorer; it goes when nothing refers to it.
        return before, after


# /score's adaptive batching: a request that finds the worker idle is tagged at once; requests arriving
# while a call runs are tagged together in the next one (a call's fixed engine work is shared). At most
# this many requests per call (1: every request alone), and a request waits at most this long in line
# before it is answered 503.
SCORE_BATCH = int(os.environ.get("LIFETAG_SCORE_BATCH", "16"))
SCORE_MAX_LATENCY_MS = int(os.environ.get("LIFETAG_SCORE_MAX_LATENCY_MS", "20000"))


class _Overloaded(ServiceError):
    """A /score request dropped by the batcher because it could not be answered in time."""


class ScoreBatcher:
    """Adaptive batching of `/score` without waiting for company: one call runs at a time per worker; a
    request that finds none running starts one alone, and every request that arrives meanwhile joins the
    next call (up to `max_requests`). Alone, a request waits for nobody; under load, calls grow with the
    line. A call tags together the requests of one model state and as_of whose customer ids do not collide.

    BentoML's own dispatcher (the CORK algorithm of its batchable APIs) was used before: it added ~3 ms
    and a long tail to a lone request (it waits for company while its estimates say that pays) and no
    throughput on two cores, since a call costs nearly its size in CPU.
    """

    def __init__(self, max_requests: int = SCORE_BATCH, max_latency_ms: int = SCORE_MAX_LATENCY_MS) -> None:
        self.max_requests = max_requests
        self.max_wait_seconds = max_latency_ms / 1000
        self._line: list[tuple[float, tuple[ServiceState, Any, list[CustomerOrders]], Any]] = []
        self._running = False
        self._task: Any = None

    async def score(self, state: ServiceState, moment: Any, customers: list[CustomerOrders]) -> pd.DataFrame:
        """The request's tag rows, tagged alongside whatever requests arrived while the last call ran."""
        import asyncio

        import anyio

        if self.max_requests <= 1:
            return await anyio.to_thread.run_sync(state.scorer.score, customers, moment)
        answer = asyncio.get_running_loop().create_future()
        self._line.append((time.monotonic(), (state, moment, customers), answer))
        if not self._running:
            self._running = True
            # Held, as asyncio asks: a task nothing refers to may be collected before it is done.
            self._task = asyncio.get_running_loop().create_task(self._run_calls())
        result = await answer
        if isinstance(result, Exception):
            raise result
        return result

    async def _run_calls(self) -> None:
        """Tag the line, a call at a time, until it is empty."""
        import anyio

        try:
            while self._line:
                taken, self._line = self._line[:self.max_requests], self._line[self.max_requests:]
                now = time.monotonic()
                waiting = []
                for item in taken:
                    if item[2].done():  # the client went away
                        continue
                    if now - item[0] > self.max_wait_seconds:
                        item[2].set_result(_Overloaded("the server is overloaded; retry shortly"))
                    else:
                        waiting.append(item)
                if not waiting:
                    continue
                try:
                    results = await anyio.to_thread.run_sync(self._score_many, tuple(job for _, job, _ in waiting))
                except Exception as exc:  # a bug, not a request's fault: every request of the call gets it
                    results = [exc] * len(waiting)
                for (_, _, answer), result in zip(waiting, results):
                    if not answer.done():
                        answer.set_result(result)
        finally:
            self._running = False

    @staticmethod
    def _score_many(jobs: tuple[tuple[ServiceState, Any, list[CustomerOrders]], ...]) -> list[Any]:
        """Each job's tag rows (or its LifetagError), tagging compatible jobs in one call."""
        groups: list[tuple[tuple[int, Any], set[str], list[int]]] = []
        for index, (state, moment, customers) in enumerate(jobs):
            ids = {c.customer_id for c in customers}
            key = (id(state), moment)
            for group_key, group_ids, members in groups:
                if group_key == key and not group_ids & ids:
                    group_ids |= ids
                    members.append(index)
                    break
            else:
                groups.append((key, ids, [index]))
        results: list[Any] = [None] * len(jobs)
        for _, _, members in groups:
            state, moment, _ = jobs[members[0]]
            together = [c for i in members for c in jobs[i][2]]
            try:
                tags = state.scorer.score(together, moment)
            except LifetagError:
                # One request's bad row must not fail the others: each alone, with its own answer.
                for i in members:
                    try:
                        results[i] = state.scorer.score(jobs[i][2], moment)
                    except LifetagError as exc:
                        results[i] = exc
                continue
            start = 0
            for i in members:
                size = len(jobs[i][2])
                results[i] = tags.iloc[start:start + size].reset_index(drop=True)
                start += size
        return results


def _moment_text(moment: Any) -> str:
    """A day as YYYY-MM-DD (as the snapshot says it), any other moment as ISO text."""
    import pandas as pd

    moment = pd.Timestamp(moment)
    return moment.date().isoformat() if moment == moment.normalize() else moment.isoformat()


def _error(status: int, message: str) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _ok(payload: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    """A 200 answer of JSON-ready values, sent as it is: BentoML would validate the dict again against the
    declared output and rebuild that output's JSON schema for every answer (a tenth of a /tags call)."""
    from starlette.responses import JSONResponse

    return JSONResponse(payload, headers=headers)


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
            self.batcher = ScoreBatcher()

        @bentoml.api(route="/tags")
        def tags(self, customer_ids: list[str] = Field(min_length=1, max_length=MAX_IDS)) -> dict[str, Any]:
            """The snapshot's tags of these customers; unknown ids are listed, never an error."""
            state = self.states.current()
            if state.snapshot is None:
                return _ok({"tags": [], "unknown": list(customer_ids), "model_version": state.version,
                                "as_of": None})
            rows, unknown = state.snapshot.lookup([str(c) for c in customer_ids])
            return _ok({"tags": rows, "unknown": unknown, "model_version": state.version,
                            "as_of": state.snapshot.as_of})

        @bentoml.api(route="/score")
        async def score(self, customers: list[CustomerOrders] = Field(min_length=1, max_length=MAX_CUSTOMERS),
                        as_of: datetime | date | None = None) -> dict[str, Any]:
            """Tags computed now from the orders sent, as `lifetag score` would tag these customers at as_of
            (default: now); one row per customer, in the order sent. Requests arriving together are
            tagged together (adaptive batching)."""
            import pandas as pd

            began = time.perf_counter()
            state = self.states.current()
            moment = as_of or datetime.now(timezone.utc).replace(microsecond=0)
            if isinstance(moment, datetime) and moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
            try:
                tags = await self.batcher.score(state, pd.Timestamp(moment), customers)
            except _Overloaded as exc:
                return _error(503, str(exc))
            except LifetagError as exc:
                return _error(422, str(exc))
            tagged_at = time.perf_counter()
            tagged = set(tags["customer_id"])
            # Customers who signed up on or after as_of are not customers yet: the batch leaves them out too.
            untagged = [c.customer_id for c in customers if c.customer_id not in tagged]
            answer = {"tags": json_rows(tags), "untagged": untagged, "model_version": state.version,
                      "as_of": _moment_text(moment)}
            # Where the time went, for clients and load tests (W3C Server-Timing): tagging (waiting for a
            # running call included) and turning the rows into JSON.
            rows_ms = 1000 * (time.perf_counter() - tagged_at)
            timing = f"tag;dur={1000 * (tagged_at - began):.1f}, rows;dur={rows_ms:.1f}"
            return _ok(answer, {"Server-Timing": timing})

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

    LifetagService.add_asgi_middleware(DocumentedAnswers)
    LifetagService.add_asgi_middleware(UnprocessableAs422)
    LifetagService.add_asgi_middleware(BearerToken)
    return LifetagService


def __getattr__(name: str) -> Any:
    # BentoML is imported only when the service itself is asked for, so `lifetag score` and the
    # tests of the lookups above never pay for it.
    if name == "LifetagService":
        return _service_class()
    raise AttributeError(name)
