"""The serving benchmark's machinery: phases bounded in count and time, errors counted, servers always
stopped, and a tiny end-to-end run that measures both services and writes its figures."""
from __future__ import annotations

import json
import math
import os
import re
import socket
from pathlib import Path

import psutil
import pytest

from benchmarks.common import console_script
from benchmarks.serve import HOST, Phase, PhaseResult, free_port, main, parse_args, run_phase, served

TAGS_BODY = (json.dumps({"customer_ids": ["c1"]}).encode(),)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def test_figures_are_percentiles_of_the_answered_calls_and_calls_per_wall_second() -> None:
    result = PhaseResult("p", 1, calls=101, errors=1, seconds=2.0, latencies_ms=[float(i) for i in range(1, 101)],
                         first_errors=["HTTP 500"], stopped_by_time=False)
    assert result.p50_ms == pytest.approx(50.5) and result.p99_ms == pytest.approx(99.01)
    assert result.req_per_s == pytest.approx(50.5)
    assert math.isnan(PhaseResult("p", 1, 3, 3, 1.0, [], [], False).p99_ms)


def test_quick_makes_every_count_small_and_explicit_counts_win() -> None:
    quick = parse_args(["--quick", "--calls", "50"])
    assert (quick.customers, quick.calls, quick.concurrent_calls) == (20_000, 50, 200)
    full = parse_args([])
    assert (full.customers, full.calls, full.concurrent_calls, full.workers) == (1_000_000, 1_000, 2_000, 2)


@pytest.mark.slow
def test_a_phase_stops_on_time_counts_errors_and_the_server_tree_is_gone_after_an_interrupt(tmp_path: Path) -> None:
    port = free_port()
    argv = [*console_script("bentoml"), "serve", "benchmarks.trivial_service:TrivialService", "--host", HOST,
            "--port", str(port)]
    env = {**os.environ, "TRIVIAL_WORKERS": "1"}
    headers = {"Content-Type": "application/json"}
    with pytest.raises(KeyboardInterrupt):
        with served("trivial", argv, env, port, tmp_path / "trivial.log") as server:
            tree = [psutil.Process(server.process.pid), *psutil.Process(server.process.pid).children(recursive=True)]
            endless = run_phase(port, Phase("endless", "/tags", TAGS_BODY, 2, 10**9, 0.5), headers)
            assert endless.stopped_by_time and endless.errors == 0 and endless.calls > 10
            assert endless.seconds < 5
            missing = run_phase(port, Phase("missing", "/no-such-route", TAGS_BODY, 1, 5, 30), headers)
            assert (missing.calls, missing.errors, missing.latencies_ms) == (5, 5, [])
            assert missing.first_errors[0].startswith("HTTP 404")
            assert server.memory.sample() > 0
            raise KeyboardInterrupt
    assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in tree)
    assert not _listening(port)


@pytest.mark.slow
def test_a_tiny_run_measures_both_services_side_by_side_and_writes_last_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--quick", "--customers", "1500", "--train-customers", "1500", "--calls", "30",
                 "--concurrent-calls", "40", "--score-calls", "10", "--workers", "1", "--workdir", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    figures = json.loads((tmp_path / "last.json").read_text())
    for name in ("trivial", "lifetag"):
        service = figures["services"][name]
        phases = service["phases"]
        assert [phases[p]["calls"] for p in ("tags sequential", "tags 4 clients", "tags 16 clients")] == [30, 40, 40]
        assert all(phase["errors"] == 0 for phase in phases.values()), phases
        assert service["peak_rss_bytes"] >= service["serving_rss_bytes"] > 0 and service["ready_seconds"] > 0
        # Each worker says which allocator it runs on (`lifetag serve` preloads jemalloc where the machine has it).
        assert any(re.fullmatch(r"\d+ worker \((jemalloc|system)\)", p["process"]) for p in service["processes"]), \
            service["processes"]
        assert phases["tags sequential"]["server_cpu_seconds"] is not None and service["serving_pss_bytes"] > 0
        assert not _listening(service["port"]), f"the {name} server still listens"
    lifetag = figures["services"]["lifetag"]
    if lifetag["skipped"]:
        assert "POST /score answers 404" in printed and lifetag["skipped"] == ["score sequential", "score 4 clients"]
    else:
        scored = lifetag["phases"]["score sequential"]
        # The server's own time (its Server-Timing header) is part of each latency, never more.
        assert scored["calls"] == 10 and 0 < scored["server_p50_ms"] <= scored["p99_ms"], scored
        assert figures["services"]["trivial"]["phases"]["score sequential"]["server_p50_ms"] is None
    assert figures["snapshot"]["rows"] == 1500 and {g["goal"] for g in figures["goals"]} >= {"zero errors"}
    assert "lifetag / trivial" in printed and "tags 16 clients" in printed
