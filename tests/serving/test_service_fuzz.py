"""Issue 19: a property-based fuzz of the live service from its own OpenAPI schema. Schemathesis reads the
schema a real `lifetag serve` publishes (/docs.json) and, for every operation it lists, sends the schema's
boundary cases and generated valid and invalid requests; no answer may be a 5xx, and every answer must be
what the schema says: a documented status code, content type and body.

Schemathesis runs as its own command (`python -m schemathesis.cli run`), not through its pytest plugin:
the plugin's loader for a schema known only at run time (`schemathesis.pytest.from_fixture`) breaks on
pytest 9.2 (it sets `request.node._nodeid`, which pytest 9.2 no longer has), and `APIOperation.as_strategy`
alone would skip schemathesis' boundary cases (undeclared content types, sizes at and past the limits).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest

from configs.schema import load_config
from serving.scoring import score
from training.pipeline import fit_bundle
from support import free_port, generated_shop, module_home, running_server

AS_OF = pd.Timestamp("2024-09-01")
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance")
# Generated requests per operation (Hypothesis' usual 100), on top of the schema's boundary cases;
# deterministic generation (Hypothesis' derandomize) makes every run send the same requests. The fuzz itself
# takes about 3 s on an idle 2-core machine; past BUDGET_S it is stopped and fails, so a hung server cannot
# hold the suite.
EXAMPLES = 100
BUDGET_S = 45


def _trained_model(factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A bundle folder and its `lifetag score` snapshot from a small generated shop (a few seconds)."""
    shop = generated_shop(factory, 600, 43, start="2023-01-01", end="2024-12-31")
    home = factory.mktemp("home")
    monkeypatch = module_home(home)
    try:
        config = load_config()
        trained = fit_bundle(shop / "orders.parquet", config, as_of=AS_OF, trials=0)
        folder = trained.bundle.save(home / "bundle")
        snapshot = home / "tags.parquet"
        score(shop / "orders.parquet", AS_OF, snapshot, config, bundle=trained.bundle, model_version="fuzz")
    finally:
        monkeypatch.undo()
    return Path(folder), snapshot


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`lifetag serve` on a free loopback port with a token, a model and a snapshot: its base URL and log."""
    folder, snapshot = _trained_model(tmp_path_factory)
    home = tmp_path_factory.mktemp("serve_home")
    log = home / "server.log"
    port = free_port()
    env = {**os.environ, "LIFETAG_API_TOKEN": TOKEN, "LIFETAG_HOME": str(home)}
    lifetag = str(Path(sys.executable).with_name("lifetag"))
    command = [lifetag, "serve", "--port", str(port), "--model", str(folder), "--snapshot", str(snapshot)]
    with running_server(command, port, env, log) as base:
        yield base, log


@pytest.fixture(scope="module")
def live_schema(live_server: tuple[str, Path]) -> dict:
    """The OpenAPI schema the live server publishes (BentoML's, behind the token like every non-health path)."""
    base, _ = live_server
    answer = httpx.get(f"{base}/docs.json", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _operations(schema: dict) -> list[tuple[str, str]]:
    """(METHOD, path) of every operation the schema lists."""
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    return [(method.upper(), path) for path, item in schema["paths"].items() for method in item if method in methods]


def _fuzz(base: str, workdir: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    """One schemathesis run against the live server: its output and its JSON report."""
    report = workdir / "schemathesis.json"
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/docs.json",
               "--header", f"Authorization: Bearer {TOKEN}", "--checks", ",".join(CHECKS),
               "--max-examples", str(EXAMPLES), "--generation-deterministic",
               "--continue-on-failure", "--workers", "1", "--request-timeout", "10", "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    try:
        # cwd: no schemathesis.toml of the developer's is picked up, and nothing is written into the repo.
        run = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=BUDGET_S)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the fuzz did not finish in its {BUDGET_S} s budget; its output so far:\n{output[-5000:]}")
    return run, json.loads(report.read_text()) if report.exists() else {}


@pytest.mark.slow
def test_every_generated_request_gets_a_documented_answer_that_matches_the_schema_and_never_a_5xx(
        live_server: tuple[str, Path], live_schema: dict, tmp_path: Path) -> None:
    base, log = live_server
    operations = _operations(live_schema)
    service_apis = [f"{m} {p}" for m, p in operations if "x-bentoml-name" in live_schema["paths"][p][m.lower()]]
    assert service_apis, f"the schema lists only BentoML's own endpoints: {operations}"
    run, report = _fuzz(base, tmp_path)
    if run.returncode != 0:
        heading = run.stdout.find(" FAILURES ")
        found = run.stdout[run.stdout.rfind("\n", 0, heading) + 1:] if heading >= 0 else run.stdout + run.stderr
        pytest.fail(f"schemathesis exited with {run.returncode} (server log: {log}):\n{found}")
    counts = report["operations"]
    assert counts["tested"] == counts["selected"] == len(operations), counts


@pytest.mark.slow
def test_an_operation_that_answers_401_without_the_token_documents_that_401(
        live_server: tuple[str, Path], live_schema: dict) -> None:
    base, _ = live_server
    undocumented = []
    with httpx.Client(base_url=base, timeout=10) as client:
        for method, path in _operations(live_schema):
            answer = client.request(method, path, json={} if method == "POST" else None)
            documented = live_schema["paths"][path][method.lower()].get("responses", {})
            if answer.status_code == 401 and not {"401", "4XX", "default"} & set(documented):
                undocumented.append(f"{method} {path} (documents {', '.join(sorted(documented))})")
    assert not undocumented, ("these operations answer 401 without the token, but the published schema does "
                              f"not say so: {'; '.join(undocumented)}")
