"""Benchmark the online service (issue 19): latency, throughput and memory of `lifetag serve` beside a
trivial BentoML service measured in the same run.

Both services run as real `bentoml serve` processes on a free loopback port, one after the other, with
the same worker count: first benchmarks/trivial_service.py (one dict lookup per id: the floor of
BentoML + HTTP + JSON on this machine), then `lifetag serve --model <bundle> --snapshot <tags>`. The
load comes from a second process over keep-alive connections (one per client thread); each phase is
bounded in calls and in wall time:

    tags sequential    --calls single-id POST /tags calls from 1 client   (default 1,000)
    tags 4 clients     --concurrent-calls calls from 4 clients             (default 2,000)
    tags 16 clients    --concurrent-calls calls from 16 clients            (default 2,000)
    score sequential   --score-calls POST /score calls, one customer with ~20 order lines (default 500)
    score 4 clients    2 x --score-calls calls from 4 clients

Errors are non-2xx answers and exceptions (timeouts, dropped connections). A phase stops after
--phase-seconds whatever its count. While a server runs, the resident memory (RSS) of its whole
process tree is summed every 100 ms: "peak" is the largest sum from start to stop (loading included),
"serving" the sum once the load is done. "ready" is the time from start until /readyz answers, i.e.
until one worker has loaded the snapshot; "settled" until the whole tree is idle (every worker loaded).
When the server answers 404 to /score (not on this branch yet), the /score phases are skipped.

Made once and reused under $LIFETAG_HOME/bench/serve (named by their parameters): the shop of
--customers customers (`lifetag generate`'s generator, --seed), a bundle trained with trials=0 on a
--train-customers shop (seed + 1), the snapshot (`serving.scoring.score` of the shop with the bundle)
and the /score body. The figures are also written to $LIFETAG_HOME/bench/serve/last.json.

    python -m benchmarks.serve                       # 1M-customer snapshot, 2 workers
    python -m benchmarks.serve --quick               # 20k customers, 200 calls a phase
    python -m benchmarks.serve --check               # exit 1 when a goal is missed

Exit code 0 whatever the figures, 1 with --check when a goal is missed, 2 when a server or the set-up fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file, benchmarks/ would come first on sys.path and shadow the project's packages.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

from benchmarks.common import BenchmarkError, console_script, gb, machine_busy_seconds  # noqa: E402
from serving.allocator import loaded_allocator  # noqa: E402

__all__ = [
    "GOALS", "Phase", "PhaseResult", "Server", "TreeMemory", "free_port", "main", "phases", "run_phase", "served",
]

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
REQUEST_TIMEOUT_SECONDS = 30.0
READY_TIMEOUT_SECONDS = 600.0  # a 1M-customer snapshot loads in well under a minute; a busy machine is slower
SAMPLE_SECONDS = 0.1
WARMUP_CALLS = 20
QUICK = {"customers": 20_000, "train_customers": 20_000, "calls": 200, "concurrent_calls": 200, "score_calls": 100}
MB = 10**6


@dataclass(frozen=True)
class Goal:
    """One of issue 19's goals for lifetag's figures."""

    text: str
    phase: str
    figure: str  # a PhaseResult property, or "peak_rss_bytes" of the server
    limit: float
    at_most: bool  # True: figure <= limit; False: figure >= limit


GOALS = (
    Goal("/tags sequential p99 <= 10 ms", "tags sequential", "p99_ms", 10.0, True),
    Goal("/tags 4 clients >= 400 req/s", "tags 4 clients", "req_per_s", 400.0, False),
    Goal("/tags 4 clients p99 <= 25 ms", "tags 4 clients", "p99_ms", 25.0, True),
    Goal("/tags 16 clients >= 400 req/s", "tags 16 clients", "req_per_s", 400.0, False),
    Goal("/score sequential p99 <= 50 ms", "score sequential", "p99_ms", 50.0, True),
    Goal("server peak memory <= 2 GB", "", "peak_rss_bytes", 2e9, True),
)


@dataclass(frozen=True)
class Phase:
    """`calls` POSTs to `path` from `clients` concurrent keep-alive connections, stopped after `max_seconds`.

    Call i sends bodies[i % len(bodies)].
    """

    name: str
    path: str
    bodies: tuple[bytes, ...]
    clients: int
    calls: int
    max_seconds: float


@dataclass
class PhaseResult:
    """What one phase measured: latencies of the 2xx answers (ms), errors, and its wall time."""

    phase: str
    clients: int
    calls: int  # answered or failed; fewer than asked when the phase ran out of time
    errors: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    first_errors: list[str]
    stopped_by_time: bool
    server_cpu_seconds: float = math.nan  # the server's whole tree, during the timed calls
    load_cpu_seconds: float = math.nan  # the load generator's own process
    other_cpu_seconds: float = math.nan  # the rest of the machine (other jobs); NaN off Linux
    # The server's own time per answer (the sum of its Server-Timing durations), where it says: what is
    # left of a latency is HTTP, the framework and the load generator.
    server_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def other_cores(self) -> float:
        """Cores the rest of the machine kept busy meanwhile, on average: above ~0.1 the figures are disturbed."""
        return max(self.other_cpu_seconds, 0.0) / self.seconds if self.seconds > 0 else math.nan

    @property
    def p50_ms(self) -> float:
        return _percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return _percentile(self.latencies_ms, 99)

    @property
    def server_p50_ms(self) -> float:
        return _percentile(self.server_ms, 50)

    @property
    def server_p99_ms(self) -> float:
        return _percentile(self.server_ms, 99)

    @property
    def req_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else math.nan

    def figures(self) -> dict[str, Any]:
        """The JSON-ready figures (no raw latencies)."""
        return {"clients": self.clients, "calls": self.calls, "errors": self.errors, "seconds": round(self.seconds, 3),
                "p50_ms": _round(self.p50_ms), "p99_ms": _round(self.p99_ms), "req_per_s": _round(self.req_per_s),
                "server_p50_ms": _round(self.server_p50_ms), "server_p99_ms": _round(self.server_p99_ms),
                "server_cpu_seconds": _round(self.server_cpu_seconds),
                "load_cpu_seconds": _round(self.load_cpu_seconds),
                "other_cores": _round(self.other_cores), "stopped_by_time": self.stopped_by_time,
                "first_errors": self.first_errors}


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile of `values` (NaN when there are none)."""
    return float(np.percentile(values, q)) if values else math.nan


def _round(value: float, digits: int = 2) -> float | None:
    return None if math.isnan(value) else round(value, digits)


# ----------------------------------------------------------------------------------------------------------
# The load generator: runs in its own process (see `LoadProcess`), one thread and connection per client.

class _Tally:
    """The calls of one phase, shared by its client threads."""

    def __init__(self, calls: int, deadline: float) -> None:
        self.lock = threading.Lock()
        self.next_call = 0
        self.calls = calls
        self.deadline = deadline
        self.latencies: list[float] = []
        self.server_ms: list[float] = []
        self.errors: list[str] = []
        self.stopped_by_time = False

    def take(self) -> int | None:
        """The index of the next call to make, or None when the count or the time is used up."""
        with self.lock:
            if self.next_call >= self.calls:
                return None
            if time.monotonic() >= self.deadline:
                self.stopped_by_time = True
                return None
            self.next_call += 1
            return self.next_call - 1


def _connect(port: int) -> http.client.HTTPConnection:
    connection = http.client.HTTPConnection(HOST, port, timeout=REQUEST_TIMEOUT_SECONDS)
    connection.connect()
    # One send per request already (http.client joins headers and a bytes body); no Nagle delay either way.
    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return connection


_DURATION = re.compile(r"dur=([0-9.]+)")


def _post(connection: http.client.HTTPConnection, path: str, body: bytes, headers: dict[str, str]
          ) -> tuple[int, bytes, float | None]:
    """Status, body and the server's own milliseconds (its Server-Timing durations summed; None without)."""
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    durations = _DURATION.findall(response.getheader("Server-Timing") or "")
    return response.status, response.read(), sum(map(float, durations)) if durations else None


def _client(port: int, phase: Phase, headers: dict[str, str], tally: _Tally, start: threading.Barrier) -> None:
    """One keep-alive connection making calls until the tally says stop; a failed connection is replaced."""
    latencies, server_ms, errors = [], [], []
    connection: http.client.HTTPConnection | None = None
    start.wait()
    while (i := tally.take()) is not None:
        began = time.perf_counter()
        try:
            connection = connection or _connect(port)
            status, payload, server = _post(connection, phase.path, phase.bodies[i % len(phase.bodies)], headers)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            if connection is not None:
                connection.close()
            connection = None
            continue
        elapsed_ms = (time.perf_counter() - began) * 1000
        if 200 <= status < 300:
            latencies.append(elapsed_ms)
            if server is not None:
                server_ms.append(server)
        else:
            errors.append(f"HTTP {status}: {payload[:300].decode(errors='replace')}")
    if connection is not None:
        connection.close()
    with tally.lock:
        tally.latencies.extend(latencies)
        tally.server_ms.extend(server_ms)
        tally.errors.extend(errors)


def run_phase(port: int, phase: Phase, headers: dict[str, str], server_pid: int | None = None) -> PhaseResult:
    """Run one phase against the server on `port` after WARMUP_CALLS uncounted calls; its figures.

    With `server_pid`, the CPU time of the server's process tree, of this process and of the rest of the
    machine during the timed calls are measured too.
    """
    warmup = _Tally(min(WARMUP_CALLS, phase.calls), time.monotonic() + phase.max_seconds)
    _client(port, phase, headers, warmup, threading.Barrier(1))
    start = threading.Barrier(phase.clients + 1)
    tally = _Tally(phase.calls, time.monotonic() + phase.max_seconds)
    threads = [threading.Thread(target=_client, args=(port, phase, headers, tally, start), daemon=True)
               for _ in range(phase.clients)]
    for thread in threads:
        thread.start()
    cpu_before = _cpu_now(server_pid)
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    server_cpu, load_cpu, machine_busy = (after - before for after, before in zip(_cpu_now(server_pid), cpu_before))
    return PhaseResult(phase.name, phase.clients, len(tally.latencies) + len(tally.errors), len(tally.errors),
                       seconds, tally.latencies, tally.errors[:3], tally.stopped_by_time,
                       server_cpu, load_cpu, machine_busy - server_cpu - load_cpu, tally.server_ms)


def _cpu_now(server_pid: int | None) -> tuple[float, float, float]:
    """CPU seconds so far of the server's tree, of this process and of the whole machine (NaN when unknown)."""
    busy = machine_busy_seconds()
    server = tree_cpu_seconds(server_pid) if server_pid is not None else math.nan
    return server, time.process_time(), math.nan if busy is None else busy


def _ignore_sigint() -> None:
    # Ctrl-C is the benchmark's to handle: it stops the servers and terminates this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class LoadProcess:
    """The second process the load runs in (spawned, so it shares nothing with this one)."""

    def __init__(self) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(1, initializer=_ignore_sigint)

    def run(self, port: int, phase: Phase, headers: dict[str, str], server_pid: int | None = None) -> PhaseResult:
        return self.pool.apply(run_phase, (port, phase, headers, server_pid))

    def close(self) -> None:
        self.pool.terminate()
        self.pool.join()


# ----------------------------------------------------------------------------------------------------------
# The servers: started as process groups, watched, always stopped.

def process_tree(pid: int) -> list[psutil.Process]:
    """The process `pid` and all its descendants; empty once it has ended."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the tree of `pid` has used so far (of the processes alive now)."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class TreeMemory(threading.Thread):
    """Samples the summed RSS of a process and all its descendants every SAMPLE_SECONDS; keeps the peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_bytes = 0
        self.last_bytes = 0
        self.stopped = threading.Event()

    def sample(self) -> int:
        """The summed RSS now (processes that end meanwhile count as 0)."""
        return sum(rss for _, rss in self.breakdown())

    def pss_bytes(self) -> int | None:
        """The summed proportional set size now: shared pages (libraries, copy-on-write) counted once
        across the tree, where the RSS sum counts them in every process; None where it cannot be read."""
        total = 0
        for process in process_tree(self.root.pid):
            try:
                total += process.memory_full_info().pss
            except psutil.NoSuchProcess:
                pass
            except (psutil.AccessDenied, AttributeError):
                return None
        return total

    def breakdown(self) -> list[tuple[str, int]]:
        """Each process of the tree now: a short label (pid, role and a worker's allocator) and its RSS."""
        rows = []
        for process in process_tree(self.root.pid):
            try:
                role = _role(process.cmdline())
                if role == "worker":  # `lifetag serve` preloads jemalloc when the machine has it (serving.allocator)
                    role += f" ({loaded_allocator(process.pid)})"
                rows.append((f"{process.pid} {role}", process.memory_info().rss))
            except psutil.NoSuchProcess:
                pass
        return rows

    def run(self) -> None:
        while not self.stopped.is_set():
            self.last_bytes = self.sample()
            self.peak_bytes = max(self.peak_bytes, self.last_bytes)
            self.stopped.wait(SAMPLE_SECONDS)


def _role(cmdline: list[str]) -> str:
    """What a process of a BentoML server is, from its command line: the arbiter or a worker."""
    text = " ".join(cmdline)
    if "_bentoml_impl.worker" in text or "bentoml_impl.worker" in text:
        return "worker"
    return "arbiter" if "serve" in text else (cmdline[0].rsplit("/", 1)[-1] if cmdline else "?")


@dataclass
class Server:
    """A running `bentoml serve` process group on `port`."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    memory: TreeMemory
    log: Path
    ready_seconds: float = math.nan
    settled_seconds: float = math.nan


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _log_tail(path: Path, chars: int = 2_000) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    return text.strip()[-chars:] or "(no output)"


def _wait_ready(server: Server, began: float, timeout_seconds: float) -> float:
    """Seconds from start until /readyz answers 200; a BenchmarkError if the server dies or takes too long."""
    deadline = began + timeout_seconds
    while True:
        if server.process.poll() is not None:
            raise BenchmarkError(f"the {server.name} server exited with code {server.process.returncode} before it "
                                 f"was ready; its log ({server.log}) ends:\n{_log_tail(server.log)}")
        try:
            connection = http.client.HTTPConnection(HOST, server.port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                connection.close()
                return time.perf_counter() - began
            connection.close()
        except (OSError, http.client.HTTPException):
            pass
        if time.perf_counter() > deadline:
            raise BenchmarkError(f"the {server.name} server did not answer /readyz within {timeout_seconds:.0f} s; "
                                 f"its log ({server.log}) ends:\n{_log_tail(server.log)}")
        time.sleep(0.2)


def _wait_settled(server: Server, began: float, timeout_seconds: float = 300.0) -> float:
    """Seconds from start until the tree has been idle (< 5% of a core) for a second: every worker loaded.

    /readyz answers as soon as one worker serves; connections opened while another still loads would
    all go to the first one.
    """
    idle_polls, previous = 0, tree_cpu_seconds(server.process.pid)
    deadline = time.perf_counter() + timeout_seconds
    while idle_polls < 4 and time.perf_counter() < deadline:
        time.sleep(0.25)
        now = tree_cpu_seconds(server.process.pid)
        idle_polls = idle_polls + 1 if now - previous < 0.0125 else 0
        previous = now
    return time.perf_counter() - began


def _stop(process: subprocess.Popen[bytes], grace_seconds: float = 20.0) -> None:
    """SIGTERM to the server's process group, SIGKILL to whatever of its tree is left after the grace time."""
    tree = process_tree(process.pid)
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs(tree, timeout=max(1.0, grace_seconds / 4))
    for straggler in alive:
        try:
            straggler.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


@contextmanager
def served(name: str, argv: Sequence[str], env: dict[str, str], port: int, log: Path,
           ready_timeout_seconds: float = READY_TIMEOUT_SECONDS) -> Iterator[Server]:
    """Start `argv` (a server listening on `port`) in its own process group; yield it once ready and settled;
    stop it and its whole tree on the way out, whatever happened (Ctrl-C included)."""
    began = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    memory: TreeMemory | None = None
    try:
        memory = TreeMemory(process.pid)
        server = Server(name, port, process, memory, log)
        memory.start()
        server.ready_seconds = _wait_ready(server, began, ready_timeout_seconds)
        server.settled_seconds = _wait_settled(server, began)
        yield server
    finally:
        if memory is not None:
            memory.stopped.set()
        _stop(process)


# ----------------------------------------------------------------------------------------------------------
# What is served and sent: shop, bundle, snapshot, request bodies (made once, reused).

@dataclass(frozen=True)
class Fixture:
    """The bundle and snapshot lifetag serves, the ids asked for, the /score body and a sample tag row."""

    bundle: Path
    snapshot: Path
    snapshot_rows: int
    ids: list[str]
    score_body: bytes
    score_lines: int
    row: dict[str, Any]


def ensure_snapshot(workdir: Path, args: argparse.Namespace) -> tuple[Path, Path, list[str]]:
    """The bundle, the snapshot (made with `serving.scoring.score` unless cached) and lines saying how."""
    from benchmarks.features import ensure_shop
    from benchmarks.score import ensure_bundle

    notes = []
    began = time.perf_counter()
    bundle, made = ensure_bundle(workdir, args.train_customers, args.seed + 1, args.as_of)
    notes.append(f"bundle {bundle.name}: {made}")
    shop = ensure_shop(workdir, args.customers, args.seed)
    snapshot = workdir / f"snapshot-{args.customers}-{args.seed}-{bundle.name}.parquet"
    if shop.generated_seconds is not None:
        notes.append(f"shop of {shop.customers:,} customers ({shop.rows:,} order lines) generated in "
                     f"{shop.generated_seconds:.0f} s")
    if not snapshot.exists():
        from configs.schema import load_config
        from serving.scoring import score

        scoring_began = time.perf_counter()
        score(shop.orders, args.as_of, snapshot, load_config(None), model_uri=str(bundle))
        notes.append(f"snapshot scored in {time.perf_counter() - scoring_began:.0f} s")
    notes.append(f"set-up {time.perf_counter() - began:.0f} s")
    return bundle, snapshot, notes


def score_body(orders: Path, as_of: str, lines: int, cache: Path) -> tuple[bytes, int]:
    """A /score request for the customer whose order lines before `as_of` number closest to `lines`."""
    if cache.exists():
        body = cache.read_bytes()
        return body, len(json.loads(body)["customers"][0]["orders"])
    import duckdb

    con = duckdb.connect()
    source = "read_parquet($path) WHERE order_ts < CAST($as_of AS TIMESTAMP)"
    params = {"path": str(orders), "as_of": as_of}
    customer = con.execute(f"SELECT customer_id FROM {source} GROUP BY customer_id "  # noqa: S608 - no input in the SQL
                           "ORDER BY abs(count(*) - $lines), customer_id LIMIT 1",
                           {**params, "lines": lines}).fetchone()[0]
    frame = con.execute(f"SELECT * FROM {source} AND customer_id = $customer ORDER BY order_ts, order_id",  # noqa: S608
                        {**params, "customer": customer}).fetch_df()
    con.close()
    rows = [{
        "order_ts": row["order_ts"].strftime("%Y-%m-%dT%H:%M:%SZ"), "amount": float(row["amount"]),
        "order_id": str(row["order_id"]), "quantity": int(row["quantity"]), "category": row["category"],
        "product_id": row["product_id"], "discount": float(row["discount"]), "channel": row["channel"],
        "status": row["status"],
    } for row in frame.to_dict("records")]
    body = json.dumps({"as_of": as_of, "customers": [{"customer_id": str(customer), "signup_ts": None,
                                                      "attributes": {}, "orders": rows}]}).encode()
    _write_atomically(cache, body)
    return body, len(rows)


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    """NaN becomes null and timestamps ISO text, as the service answers them."""
    return {key: None if isinstance(value, float) and not math.isfinite(value)
            else value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}


def prepare(workdir: Path, args: argparse.Namespace) -> tuple[Fixture, list[str]]:
    """Everything the run serves and sends, and lines saying how it was made."""
    import pyarrow.parquet as pq

    from benchmarks.features import ensure_shop

    bundle, snapshot, notes = ensure_snapshot(workdir, args)
    ids_column = pq.read_table(snapshot, columns=["customer_id"]).column("customer_id").to_pylist()
    picks = np.random.default_rng(args.seed).choice(len(ids_column), size=min(len(ids_column), 5_000), replace=False)
    ids = [str(ids_column[i]) for i in picks]
    first = next(pq.ParquetFile(snapshot).iter_batches(batch_size=1)).to_pylist()[0]
    shop = ensure_shop(workdir, args.customers, args.seed)
    cache = workdir / f"score-body-{args.customers}-{args.seed}-{args.as_of}.json"
    body, lines = score_body(shop.orders, args.as_of, 20, cache)
    return Fixture(bundle, snapshot, len(ids_column), ids, body, lines, _json_ready(first)), notes


def phases(fixture: Fixture, args: argparse.Namespace) -> tuple[list[Phase], list[Phase]]:
    """The /tags phases and the /score phases of one service."""
    tags = tuple(json.dumps({"customer_ids": [customer]}).encode() for customer in fixture.ids)
    seconds = args.phase_seconds
    return ([Phase("tags sequential", "/tags", tags, 1, args.calls, seconds),
             Phase("tags 4 clients", "/tags", tags, 4, args.concurrent_calls, seconds),
             Phase("tags 16 clients", "/tags", tags, 16, args.concurrent_calls, seconds)],
            [Phase("score sequential", "/score", (fixture.score_body,), 1, args.score_calls, seconds),
             Phase("score 4 clients", "/score", (fixture.score_body,), 4, 2 * args.score_calls, seconds)])


# ----------------------------------------------------------------------------------------------------------
# One service measured; the run; the report.

@dataclass
class ServiceFigures:
    """One service's phases and memory."""

    name: str
    ready_seconds: float
    settled_seconds: float
    peak_rss_bytes: int = 0
    serving_rss_bytes: int = 0
    serving_pss_bytes: int | None = None
    port: int = 0
    processes: list[tuple[str, int]] = field(default_factory=list)  # (pid and role, RSS) once the load is done
    phases: dict[str, PhaseResult] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        return {"port": self.port, "ready_seconds": round(self.ready_seconds, 2),
                "settled_seconds": round(self.settled_seconds, 2),
                "peak_rss_bytes": self.peak_rss_bytes, "serving_rss_bytes": self.serving_rss_bytes,
                "serving_pss_bytes": self.serving_pss_bytes,
                "processes": [{"process": label, "rss_bytes": rss} for label, rss in self.processes],
                "phases": {name: result.figures() for name, result in self.phases.items()}, "skipped": self.skipped}


def _check_tags_answer(port: int, headers: dict[str, str], fixture: Fixture, name: str) -> None:
    """One /tags call outside the timings: a sampled id must come back as a tag row, or the load measures nothing."""
    connection = _connect(port)
    try:
        body = json.dumps({"customer_ids": [fixture.ids[0]]}).encode()
        status, payload, _ = _post(connection, "/tags", body, headers)
    finally:
        connection.close()
    tags = json.loads(payload).get("tags") if status == 200 else None
    if not tags or not isinstance(tags[0], dict) or "customer_id" not in tags[0]:
        raise BenchmarkError(f"{name}: POST /tags for {fixture.ids[0]!r} answered {status} "
                             f"{payload[:300].decode(errors='replace')}; expected a tag row")


def _score_status(port: int, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    connection = _connect(port)
    try:
        status, payload, _ = _post(connection, "/score", body, headers)
    finally:
        connection.close()
    return status, payload[:300].decode(errors="replace")


def measure(server: Server, load: LoadProcess, fixture: Fixture, args: argparse.Namespace,
            headers: dict[str, str]) -> ServiceFigures:
    """Run every phase against a ready server; its figures (memory read once the load is done)."""
    figures = ServiceFigures(server.name, server.ready_seconds, server.settled_seconds, port=server.port)
    _check_tags_answer(server.port, headers, fixture, server.name)
    tag_phases, score_phases = phases(fixture, args)
    for phase in tag_phases:
        figures.phases[phase.name] = _announce(load.run(server.port, phase, headers, server.process.pid),
                                                   server.name)
    status, text = _score_status(server.port, headers, fixture.score_body)
    if status == 404:
        print(f"  {server.name}: POST /score answers 404 (not on this branch yet): /score phases skipped", flush=True)
        figures.skipped = [phase.name for phase in score_phases]
    else:
        if not 200 <= status < 300:
            print(f"  {server.name}: POST /score answered {status} to the probe ({text}); measuring anyway", flush=True)
        for phase in score_phases:
            figures.phases[phase.name] = _announce(load.run(server.port, phase, headers, server.process.pid),
                                                   server.name)
    figures.processes = server.memory.breakdown()
    figures.serving_rss_bytes = sum(rss for _, rss in figures.processes)
    figures.serving_pss_bytes = server.memory.pss_bytes()
    figures.peak_rss_bytes = max(server.memory.peak_bytes, figures.serving_rss_bytes)
    return figures


def _announce(result: PhaseResult, service: str) -> PhaseResult:
    """Print one line of a finished phase (the table comes at the end)."""
    stopped = " (stopped by time)" if result.stopped_by_time else ""
    inside = (f" (in the server p50 {result.server_p50_ms:.1f}, p99 {result.server_p99_ms:.1f})"
              if result.server_ms else "")
    print(f"  {service:<8} {result.phase:<17} {result.calls:>6,} calls, {result.errors} errors, "
          f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms{inside}, {result.req_per_s:.0f} req/s; "
          f"CPU s server {result.server_cpu_seconds:.1f}, load {result.load_cpu_seconds:.1f}, "
          f"other cores busy {result.other_cores:.2f}{stopped}", flush=True)
    for error in result.first_errors:
        print(f"    e.g. {error}", flush=True)
    return result


def server_commands(fixture: Fixture, args: argparse.Namespace,
                    token: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """The command and environment of each service, same worker count and token."""
    base = {**os.environ, "LIFETAG_API_TOKEN": token, "PYTHONUNBUFFERED": "1"}
    trivial_env = {**base, "TRIVIAL_WORKERS": str(args.workers), "TRIVIAL_ROW": json.dumps(fixture.row)}
    trivial = [*console_script("bentoml"), "serve", "benchmarks.trivial_service:TrivialService", "--host", HOST]
    lifetag = [*console_script("lifetag"), "serve", "--host", HOST, "--model", str(fixture.bundle),
               "--snapshot", str(fixture.snapshot), "--workers", str(args.workers)]
    return {"trivial": (trivial, trivial_env), "lifetag": (lifetag, base)}


def run_services(fixture: Fixture, args: argparse.Namespace, workdir: Path) -> dict[str, ServiceFigures]:
    """Start each service in turn, load it, stop it; the figures of each."""
    token = secrets.token_urlsafe(16)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    results: dict[str, ServiceFigures] = {}
    load = LoadProcess()
    try:
        for name, (argv, env) in server_commands(fixture, args, token).items():
            port = free_port()
            with served(name, [*argv, "--port", str(port)], env, port, workdir / f"{name}.log") as server:
                print(f"{name}: ready in {server.ready_seconds:.1f} s, settled in {server.settled_seconds:.1f} s "
                      f"(port {port}, {args.workers} workers, RSS {server.memory.sample() / MB:,.0f} MB)", flush=True)
                results[name] = measure(server, load, fixture, args, headers)
    finally:
        load.close()
    return results


def goal_rows(lifetag: ServiceFigures) -> list[tuple[Goal, float | None, bool | None]]:
    """Each goal with lifetag's figure and whether it is met (None: not measured)."""
    rows = []
    for goal in GOALS:
        if goal.figure == "peak_rss_bytes":
            value: float | None = float(lifetag.peak_rss_bytes)
        else:
            result = lifetag.phases.get(goal.phase)
            value = None if result is None else getattr(result, goal.figure)
        if value is None or math.isnan(value):
            met = None
        else:
            met = value <= goal.limit if goal.at_most else value >= goal.limit
        rows.append((goal, value, met))
    errors = sum(r.errors for r in lifetag.phases.values())
    rows.append((Goal("zero errors", "", "errors", 0, True), float(errors), errors == 0))
    return rows


def _ratio(numerator: float, denominator: float) -> str:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return "-"
    return f"{numerator / denominator:.2f}x"


def print_report(figures: dict[str, ServiceFigures], fixture: Fixture, args: argparse.Namespace) -> list[tuple]:
    """The rich tables: phases side by side with ratios, memory and start-up, goals; the goal rows."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    trivial, lifetag = figures["trivial"], figures["lifetag"]
    table = Table(title=f"POST latency and throughput, {args.workers} workers, snapshot of {fixture.snapshot_rows:,} "
                        f"customers, {os.cpu_count()} cores (load generator on the same cores)")
    for column in ("phase", "service", "calls", "errors", "p50 ms", "p99 ms", "req/s", "p99 / trivial",
                   "req/s / trivial", "server CPU s", "other cores"):
        table.add_column(column, justify="left" if column in ("phase", "service") else "right")
    names = list(dict.fromkeys([*trivial.phases, *trivial.skipped, *lifetag.phases, *lifetag.skipped]))
    for name in names:
        base = trivial.phases.get(name)
        for service in (trivial, lifetag):
            result = service.phases.get(name)
            label = name if service is trivial else ""
            if result is None:
                table.add_row(label, service.name, "skipped (404)" if name in service.skipped else "-", *[""] * 8)
                continue
            is_lifetag = service is lifetag and base is not None
            table.add_row(label, service.name, f"{result.calls:,}", str(result.errors),
                          f"{result.p50_ms:.1f}", f"{result.p99_ms:.1f}", f"{result.req_per_s:,.0f}",
                          _ratio(result.p99_ms, base.p99_ms) if is_lifetag else "",
                          _ratio(result.req_per_s, base.req_per_s) if is_lifetag else "",
                          f"{result.server_cpu_seconds:.1f}", f"{result.other_cores:.2f}")
    console.print(table)
    memory = Table(title="Server process tree: RSS summed over its processes (peak from start to stop, and once "
                         "the load is done) and PSS (shared pages counted once); 1 MB = 10^6 bytes")
    for column in ("service", "ready s", "settled s", "peak MB", "serving MB", "serving PSS MB"):
        memory.add_column(column, justify="left" if column == "service" else "right")
    for service in (trivial, lifetag):
        memory.add_row(service.name, f"{service.ready_seconds:.1f}", f"{service.settled_seconds:.1f}",
                       f"{service.peak_rss_bytes / MB:,.0f}", f"{service.serving_rss_bytes / MB:,.0f}",
                       "-" if service.serving_pss_bytes is None else f"{service.serving_pss_bytes / MB:,.0f}")
    memory.add_row("lifetag / trivial", _ratio(lifetag.ready_seconds, trivial.ready_seconds),
                   _ratio(lifetag.settled_seconds, trivial.settled_seconds),
                   _ratio(lifetag.peak_rss_bytes, trivial.peak_rss_bytes),
                   _ratio(lifetag.serving_rss_bytes, trivial.serving_rss_bytes),
                   _ratio(lifetag.serving_pss_bytes or math.nan, trivial.serving_pss_bytes or math.nan))
    console.print(memory)
    for service in (trivial, lifetag):
        console.print(f"{service.name} tree once loaded: " + ", ".join(f"{label} {rss / MB:,.0f} MB"
                                                                     for label, rss in service.processes))
    console.print('"other cores": CPU the rest of the machine used during the phase, in cores; above ~0.1 '
                  "other work competed with the server and the load generator.")
    rows = goal_rows(lifetag)
    goals = Table(title="Issue 19's goals (lifetag)" + ("; a --quick run: the memory goal is for a 1M snapshot"
                                                         if fixture.snapshot_rows < 1_000_000 else ""))
    for column in ("goal", "lifetag", "met"):
        goals.add_column(column)
    for goal, value, met in rows:
        shown = "-" if value is None else (f"{gb(value):.2f} GB" if goal.figure == "peak_rss_bytes"
                                           else f"{value:,.0f}" if goal.figure == "errors" else f"{value:,.1f}")
        goals.add_row(goal.text, shown, "not measured" if met is None else "MET" if met else "MISSED")
    console.print(goals)
    return rows


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_json(path: Path, figures: dict[str, ServiceFigures], fixture: Fixture, args: argparse.Namespace,
               rows: list[tuple], notes: list[str]) -> None:
    """The run's figures as JSON at `path` (atomically), for the README to quote."""
    report = {
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "snapshot": {"path": str(fixture.snapshot), "rows": fixture.snapshot_rows, "bundle": str(fixture.bundle),
                     "score_order_lines": fixture.score_lines},
        "setup": notes,
        "services": {name: service.figures() for name, service in figures.items()},
        "goals": [{"goal": goal.text, "value": value, "met": met} for goal, value, met in rows],
    }
    _write_atomically(path, (json.dumps(report, indent=2) + "\n").encode())


# ----------------------------------------------------------------------------------------------------------

def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number, e.g. 1000 or 1_000_000") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=_count, help="snapshot size (default 1,000,000; 20,000 with --quick)")
    parser.add_argument("--train-customers", type=_count, help="shop the bundle is trained on (default 20,000)")
    parser.add_argument("--workers", type=_count, default=2, help="server workers of both services (default 2)")
    parser.add_argument("--calls", type=_count, help="sequential /tags calls (default 1,000; 200 with --quick)")
    parser.add_argument("--concurrent-calls", type=_count,
                        help="/tags calls at 4 and at 16 clients (default 2,000; 200 with --quick)")
    parser.add_argument("--score-calls", type=_count,
                        help="sequential /score calls, twice as many at 4 clients (default 500; 100 with --quick)")
    parser.add_argument("--phase-seconds", type=float, default=60.0,
                        help="a phase stops after this long whatever its count (default 60)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the snapshot's shop (default 0)")
    parser.add_argument("--as-of", default="2025-01-01", help="training and scoring cut-off (default 2025-01-01)")
    parser.add_argument("--quick", action="store_true", help="a small run: 20,000 customers, 200 calls a phase")
    parser.add_argument("--workdir", type=Path, default=None, help="default $LIFETAG_HOME/bench/serve")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else {"customers": 1_000_000, "train_customers": 20_000, "calls": 1_000,
                                         "concurrent_calls": 2_000, "score_calls": 500}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Build or reuse the fixture, measure both services, print and save the figures."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from features.engine import lifetag_home

    workdir = (args.workdir or lifetag_home() / "bench" / "serve").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (a supervisor, `timeout`) stops the servers like Ctrl-C; signals can be set in the main thread only.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    try:
        fixture, notes = prepare(workdir, args)
        print(f"serve benchmark: snapshot {fixture.snapshot.name} ({fixture.snapshot_rows:,} customers), "
              f"/score body of {fixture.score_lines} order lines; {'; '.join(notes)}", flush=True)
        figures = run_services(fixture, args, workdir)
        rows = print_report(figures, fixture, args)
        write_json(workdir / "last.json", figures, fixture, args, rows, notes)
        print(f"figures written to {workdir / 'last.json'}")
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 1 if args.check and not all(met is not False for _, _, met in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
