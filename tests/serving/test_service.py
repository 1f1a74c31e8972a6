"""The online service's first part: snapshot lookups and the model description, through BentoML's own
ASGI app in process (the real-server integration test comes with the rest of issue 19)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from configs.schema import load_config
from serving.scoring import score
from serving.service import ServiceError, Snapshot, model_info
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home

AS_OF = pd.Timestamp("2024-09-01")
TOKEN = "s3cret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_a_snapshot_answers_known_ids_in_the_order_asked_and_lists_the_unknown(tmp_path: Path) -> None:
    path = tmp_path / "tags.parquet"
    pd.DataFrame({"customer_id": ["a", "b", "c"], "churn_risk": [0.1, float("nan"), 0.9],
                  "as_of": pd.to_datetime(["2024-09-01"] * 3)}).to_parquet(path)
    snapshot = Snapshot.load(path)
    rows, unknown = snapshot.lookup(["c", "zz", "b"])
    assert [r["customer_id"] for r in rows] == ["c", "b"] and unknown == ["zz"]
    assert rows[0]["churn_risk"] == 0.9 and rows[1]["churn_risk"] is None  # JSON has no NaN
    assert rows[0]["as_of"].startswith("2024-09-01") and snapshot.as_of == "2024-09-01"


@pytest.mark.parametrize(("frame", "words"), [
    (pd.DataFrame({"id": ["a"]}), "no customer_id column"),
    (pd.DataFrame({"customer_id": ["a", "b", "a"]}), "appear more than once (a)"),
])
def test_a_snapshot_that_is_not_one_row_per_customer_is_refused_in_one_paragraph(
        tmp_path: Path, frame: pd.DataFrame, words: str) -> None:
    path = tmp_path / "tags.parquet"
    frame.to_parquet(path)
    with pytest.raises(ServiceError, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
        Snapshot.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_file_that_is_not_parquet_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "tags.parquet"
    path.write_text("customer_id,churn_risk\na,0.1\n")
    with pytest.raises(ServiceError, match="lifetag score --out"):
        Snapshot.load(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, TrainResult]:
    """A small trained shop: its bundle folder and its `lifetag score` snapshot."""
    shop = generated_shop(tmp_path_factory, 1_500, 41, start="2023-01-01", end="2024-12-31")
    home = tmp_path_factory.mktemp("home")
    monkeypatch = module_home(home)
    try:
        config = load_config()
        trained = fit_bundle(shop / "orders.parquet", config, as_of=AS_OF, trials=0)
        folder = trained.bundle.save(home / "bundle")
        snapshot = home / "tags.parquet"
        score(shop / "orders.parquet", AS_OF, snapshot, config, bundle=trained.bundle, model_version="test")
    finally:
        monkeypatch.undo()
    return Path(folder), snapshot, trained


@pytest.fixture(scope="module")
def client(served: tuple[Path, Path, TrainResult]):  # noqa: ANN201
    """One app per process: BentoML registers its Prometheus metrics once per app it builds."""
    from starlette.testclient import TestClient

    from serving.service import LifetagService

    folder, snapshot, _ = served
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("LIFETAG_MODEL", str(folder))
    monkeypatch.setenv("LIFETAG_SNAPSHOT", str(snapshot))
    monkeypatch.setenv("LIFETAG_API_TOKEN", TOKEN)
    try:
        with TestClient(LifetagService.to_asgi()) as test_client:
            yield test_client
    finally:
        monkeypatch.undo()


@pytest.mark.slow
def test_tags_over_http_are_the_snapshot_rows_and_unknown_ids_are_listed_not_an_error(
        client, served: tuple[Path, Path, TrainResult]) -> None:  # noqa: ANN001
    _, snapshot, _ = served
    nightly = pd.read_parquet(snapshot).set_index("customer_id", drop=False)
    asked = [*nightly.index[:3], "no-such-customer"]
    answer = client.post("/tags", json={"customer_ids": asked}, headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["unknown"] == ["no-such-customer"] and body["as_of"] == "2024-09-01"
    assert [row["customer_id"] for row in body["tags"]] == asked[:3]
    for row in body["tags"]:
        expected = nightly.loc[row["customer_id"]]
        for column in ("churn_risk", "repurchase_prob", "ltv", "rfm_segment", "lifecycle_stage", "reasons"):
            value = expected[column]
            assert row[column] == (None if isinstance(value, float) and math.isnan(value) else value), column


@pytest.mark.slow
def test_too_many_ids_or_a_missing_field_is_a_4xx_that_names_the_field_and_the_limit(client) -> None:  # noqa: ANN001
    from serving.service import MAX_IDS

    too_many = client.post("/tags", json={"customer_ids": [str(i) for i in range(MAX_IDS + 1)]}, headers=AUTH)
    assert too_many.status_code == 400 and "customer_ids" in too_many.text and f"at most {MAX_IDS}" in too_many.text
    missing = client.post("/tags", json={}, headers=AUTH)
    assert missing.status_code == 400 and "customer_ids" in missing.text


@pytest.mark.slow
def test_model_describes_the_bundle_and_the_snapshot_and_health_is_bentomls_own(
        client, served: tuple[Path, Path, TrainResult]) -> None:  # noqa: ANN001
    _, snapshot, trained = served
    body = client.post("/model", json={}, headers=AUTH).json()
    assert body == model_info(trained.bundle, body["model_version"], Snapshot.load(snapshot))
    assert body["trained_as_of"] == "2024-09-01" and body["snapshot_rows"] == len(pd.read_parquet(snapshot))
    assert body["horizons_days"] == {"churn": 90, "repurchase": 30, "ltv": 365}
    # /metrics answers only in a real `bentoml serve` process (its Prometheus setup); checked there later.
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_with_a_token_set_every_endpoint_but_health_needs_it_and_a_wrong_one_gets_401(client) -> None:  # noqa: ANN001
    for path in ("/tags", "/model"):
        body = {"customer_ids": ["x"]} if path == "/tags" else {}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = client.post(path, json=body, headers=headers)
            assert answer.status_code == 401 and "Authorization: Bearer" in answer.json()["error"], (path, headers)
            assert answer.headers["www-authenticate"] == "Bearer"
        assert client.post(path, json=body, headers=AUTH).status_code == 200
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200


def test_without_a_token_the_middleware_lets_everything_through() -> None:
    import asyncio

    from serving.service import BearerToken

    seen = []

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        seen.append(scope["path"])

    asyncio.run(BearerToken(app, token="")({"type": "http", "path": "/tags", "headers": []}, None, None))
    assert seen == ["/tags"]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_lifetag_serve_runs_a_real_bentoml_server_that_answers_over_http_and_stops(
        served: tuple[Path, Path, TrainResult], tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    folder, snapshot, _ = served
    port = _free_port()
    env = {**os.environ, "LIFETAG_API_TOKEN": TOKEN, "LIFETAG_HOME": str(tmp_path)}
    lifetag = str(Path(sys.executable).with_name("lifetag"))
    server = subprocess.Popen([lifetag, "serve", "--port", str(port), "--model", str(folder), "--snapshot", str(snapshot),
                               "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the server did not become ready in 120 s"
            time.sleep(0.5)
        nightly = pd.read_parquet(snapshot)
        known = str(nightly["customer_id"].iloc[0])
        with httpx.Client(base_url=base, timeout=10) as client:
            answer = client.post("/tags", json={"customer_ids": [known, "nobody"]}, headers=AUTH)
            assert answer.status_code == 200 and answer.json()["unknown"] == ["nobody"]
            assert answer.json()["tags"][0]["customer_id"] == known
            assert client.post("/tags", json={"customer_ids": [known]}).status_code == 401
            assert client.post("/model", json={}, headers={"Authorization": "Bearer nope"}).status_code == 401
            assert client.post("/model", json={}, headers=AUTH).json()["snapshot_rows"] == len(nightly)
            assert client.get("/metrics").status_code == 200 and client.get("/healthz").status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert server.returncode is not None


def test_serve_refuses_a_bad_snapshot_in_one_paragraph_before_starting_a_server(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from serving.cli import app

    bad = tmp_path / "tags.parquet"
    bad.write_text("not parquet")
    result = CliRunner().invoke(app, ["serve", "--snapshot", str(bad), "--port", str(_free_port())])
    assert result.exit_code == 2 and "lifetag score --out" in result.output
