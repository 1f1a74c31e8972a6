"""The online service's first part: snapshot lookups and the model description, through BentoML's own
ASGI app in process (the real-server integration test comes with the rest of issue 19)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from configs.schema import load_config
from serving.scoring import score
from serving.service import ServiceError, Snapshot, model_info
from training.pipeline import TrainResult, fit_bundle
from support import free_port, generated_shop, module_home, running_server

AS_OF = pd.Timestamp("2024-09-01")
TOKEN = "s3cret-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_SHOP_ORDERS: list[Path] = []  # the served shop's orders file, set by the fixture


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


class _TimedScorer:
    """A scorer that takes `seconds` per call and records how many customers each call tagged: the batching
    policy's test needs calls of known length, not the engine."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, []

    def score(self, customers: list, moment) -> pd.DataFrame:  # noqa: ANN001 - the OnlineScorer.score shape
        import time

        self.calls.append(len(customers))
        time.sleep(self.seconds)
        return pd.DataFrame({"customer_id": [c.customer_id for c in customers]})


def _batched(scorer: _TimedScorer, count: int, **limits) -> list:
    """`count` one-customer requests sent together to a ScoreBatcher over `scorer` (answers or exceptions)."""
    import asyncio

    from serving.online import CustomerOrders
    from serving.service import ScoreBatcher, ServiceState

    state = ServiceState(None, "v", None, scorer, "now")

    async def send() -> list:
        batcher = ScoreBatcher(**limits)
        first = asyncio.ensure_future(batcher.score(state, pd.Timestamp("2024-09-01"), [CustomerOrders(customer_id="c0")]))
        await asyncio.sleep(0.02)  # the first call is running: the others arrive meanwhile
        rest = [batcher.score(state, pd.Timestamp("2024-09-01"), [CustomerOrders(customer_id=f"c{i}")])
                for i in range(1, count)]
        return await asyncio.gather(first, *rest, return_exceptions=True)

    return asyncio.run(send())


def test_a_lone_score_request_is_tagged_at_once_and_those_arriving_meanwhile_together() -> None:
    scorer = _TimedScorer(0.1)
    answers = _batched(scorer, 6, max_requests=16)
    assert scorer.calls == [1, 5]
    assert [a["customer_id"].tolist() for a in answers] == [[f"c{i}"] for i in range(6)]
    scorer = _TimedScorer(0.05)
    _batched(scorer, 6, max_requests=3)
    assert scorer.calls == [1, 3, 2]


def test_a_score_request_waiting_past_the_limit_is_answered_overloaded_not_tagged() -> None:
    from serving.service import _Overloaded

    scorer = _TimedScorer(0.2)
    answers = _batched(scorer, 3, max_requests=16, max_latency_ms=50)
    assert scorer.calls == [1]
    assert not isinstance(answers[0], Exception)
    assert all(isinstance(a, _Overloaded) and "overloaded" in str(a) for a in answers[1:])


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
        _SHOP_ORDERS[:] = [shop / "orders.parquet"]
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
    assert too_many.status_code == 422 and "customer_ids" in too_many.text and f"at most {MAX_IDS}" in too_many.text
    missing = client.post("/tags", json={}, headers=AUTH)
    assert missing.status_code == 422 and "customer_ids" in missing.text
    not_json = client.post("/tags", content=b"{customer_ids: [", headers={**AUTH, "content-type": "application/json"})
    assert not_json.status_code == 422


@pytest.mark.slow
def test_model_describes_the_bundle_and_the_snapshot_and_health_is_bentomls_own(
        client, served: tuple[Path, Path, TrainResult]) -> None:  # noqa: ANN001
    _, snapshot, trained = served
    body = client.get("/model", headers=AUTH).json()
    assert {k: v for k, v in body.items() if k != "loaded_at"} == model_info(
        trained.bundle, body["model_version"], Snapshot.load(snapshot))
    assert body["trained_as_of"] == "2024-09-01" and body["snapshot_rows"] == len(pd.read_parquet(snapshot))
    assert body["horizons_days"] == {"churn": 90, "repurchase": 30, "ltv": 365}
    churn = body["validation_metrics"]["churn"]
    assert {"model", "bgnbd"} <= churn.keys() and 0.5 < churn["model"]["roc_auc"] <= 1
    assert churn == {who: {k: (None if v != v else v) for k, v in m.items()}
                     for who, m in trained.results["churn"].metrics.items()}
    # /metrics answers only in a real `bentoml serve` process (its Prometheus setup); checked there later.
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_with_a_token_set_every_endpoint_but_health_needs_it_and_a_wrong_one_gets_401(client) -> None:  # noqa: ANN001
    calls = [("POST", "/tags", {"customer_ids": ["x"]}), ("GET", "/model", None), ("POST", "/admin/reload", None),
             ("POST", "/score", {"as_of": "2024-09-01", "customers": [{"customer_id": "x"}]}),
             ("GET", "/docs.json", None)]
    for method, path, body in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            answer = client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 401 and "Authorization: Bearer" in answer.json()["error"], (path, headers)
            assert answer.headers["www-authenticate"] == "Bearer"
        assert client.request(method, path, json=body, headers=AUTH).status_code == 200, path
    assert client.get("/readyz").status_code == 200 and client.get("/healthz").status_code == 200


@pytest.mark.slow
def test_score_over_http_tags_the_orders_sent_as_the_nightly_run_did(
        client, served: tuple[Path, Path, TrainResult]) -> None:  # noqa: ANN001
    from features.intake import read_orders

    _, snapshot, _ = served
    nightly = pd.read_parquet(snapshot).set_index("customer_id", drop=False)
    orders, _ = read_orders(_SHOP_ORDERS[0], load_config())
    ids = nightly.index[:5].tolist()
    customers = [{"customer_id": c, "orders": [
        {**{k: (None if not isinstance(v, str) and pd.isna(v) else v) for k, v in line.items() if k != "customer_id"},
         "order_ts": line["order_ts"].isoformat() + "Z"}
        for line in orders[orders["customer_id"] == c].to_dict("records")]} for c in ids]
    answer = client.post("/score", json={"as_of": "2024-09-01", "customers": customers}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    # Where the time went (W3C Server-Timing): tagging, then the rows as JSON, in milliseconds.
    timing = re.fullmatch(r"tag;dur=(\d+\.\d), rows;dur=(\d+\.\d)", answer.headers["server-timing"])
    assert timing and float(timing[1]) > 0, answer.headers["server-timing"]
    body = answer.json()
    assert body["as_of"] == "2024-09-01" and [r["customer_id"] for r in body["tags"]] == ids
    for row in body["tags"]:
        expected = nightly.loc[row["customer_id"]]
        for column in ("churn_risk", "repurchase_prob", "ltv"):
            assert row[column] == pytest.approx(expected[column], abs=1e-9, rel=0), column
        for column in ("rfm_segment", "lifecycle_stage", "reasons", "churn_tier", "value_tier"):
            assert row[column] == expected[column], column


@pytest.mark.slow
@pytest.mark.parametrize(("body", "words"), [
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "last tuesday", "amount": 5}]}]}, "order_ts"),
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "2024-05-01", "amount": float("nan")}]}]}, "amount"),
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "2024-05-01", "amount": float("inf")}]}]}, "amount"),
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "2024-05-01"}]}]}, "amount"),
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "2024-05-01", "amount": 1, "colour": "red"}]}]},
     "colour"),
    ({"customers": [{"orders": []}]}, "customer_id"),
    ({"customers": []}, "customers"),
    ({"as_of": "soon", "customers": [{"customer_id": "a"}]}, "as_of"),
    ({"customers": [{"customer_id": "a", "orders": [{"order_ts": "2024-05-01", "amount": 1, "status": "lost"}]}]},
     "status"),
    ({"customers": [{"customer_id": "a"}, {"customer_id": "a"}]}, "more than once"),
])
def test_a_request_score_cannot_use_is_a_422_naming_the_field(client, body: dict, words: str) -> None:  # noqa: ANN001
    import json

    # Python's JSON writes NaN and Infinity, as some clients do.
    sent = json.dumps({"as_of": "2024-09-01", **body})
    answer = client.post("/score", content=sent, headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == 422 and words in answer.text, answer.text


@pytest.mark.slow
def test_limits_on_customers_per_call_and_lines_per_customer_state_the_limit(client) -> None:  # noqa: ANN001
    from serving.online import MAX_CUSTOMERS, MAX_ORDER_LINES

    many = [{"customer_id": str(i)} for i in range(MAX_CUSTOMERS + 1)]
    answer = client.post("/score", json={"customers": many}, headers=AUTH)
    assert answer.status_code == 422 and f"at most {MAX_CUSTOMERS}" in answer.text and "customers" in answer.text
    line = {"order_ts": "2024-05-01T10:00:00Z", "amount": 1.0}
    long = [{"customer_id": "a", "orders": [line] * (MAX_ORDER_LINES + 1)}]
    answer = client.post("/score", json={"customers": long}, headers=AUTH)
    assert answer.status_code == 422 and f"at most {MAX_ORDER_LINES}" in answer.text and "orders" in answer.text


@pytest.mark.slow
def test_reload_picks_up_a_new_snapshot_and_a_bad_one_keeps_the_old(
        client, served: tuple[Path, Path, TrainResult]) -> None:  # noqa: ANN001
    import os

    _, snapshot, _ = served
    original = snapshot.read_bytes()
    nightly = pd.read_parquet(snapshot)
    first = str(nightly["customer_id"].iloc[0])
    try:
        smaller = snapshot.with_name("smaller.parquet")
        nightly.iloc[1:].to_parquet(smaller, index=False)
        os.replace(smaller, snapshot)  # tonight's run replaced the file
        answer = client.post("/admin/reload", headers=AUTH)
        assert answer.status_code == 200 and answer.json()["snapshot_rows"] == len(nightly) - 1
        assert client.post("/tags", json={"customer_ids": [first]}, headers=AUTH).json()["unknown"] == [first]
        snapshot.write_text("not parquet")
        failed = client.post("/admin/reload", headers=AUTH)
        assert failed.status_code == 422 and "still serving" in failed.json()["error"]
        assert client.get("/model", headers=AUTH).json()["snapshot_rows"] == len(nightly) - 1
    finally:
        snapshot.write_bytes(original)
        client.post("/admin/reload", headers=AUTH)


def test_without_a_token_the_middleware_lets_everything_through() -> None:
    import asyncio

    from serving.service import BearerToken

    seen = []

    async def app(scope, receive, send):  # noqa: ANN001, ANN202
        seen.append(scope["path"])

    asyncio.run(BearerToken(app, token="")({"type": "http", "path": "/tags", "headers": []}, None, None))
    assert seen == ["/tags"]


@pytest.mark.slow
def test_lifetag_serve_runs_a_real_bentoml_server_that_answers_reloads_under_traffic_and_stops(
        served: tuple[Path, Path, TrainResult], tmp_path: Path) -> None:
    import os
    import shutil
    import sys
    import threading
    import time

    import httpx

    folder, snapshot, _ = served
    # The model is served through a link, as a deployment points at "the current bundle"; reloading after the
    # link moves must bring the other bundle in on both workers.
    first, second = tmp_path / "bundle_a", tmp_path / "bundle_b"
    shutil.copytree(folder, first)
    shutil.copytree(folder, second)
    current = tmp_path / "current"
    current.symlink_to(first)
    port = free_port()
    env = {**os.environ, "LIFETAG_API_TOKEN": TOKEN, "LIFETAG_HOME": str(tmp_path / "home")}
    lifetag = str(Path(sys.executable).with_name("lifetag"))
    command = [lifetag, "serve", "--port", str(port), "--model", str(current), "--snapshot", str(snapshot),
               "--workers", "2"]
    with running_server(command, port, env, tmp_path / "server.log") as base:
        nightly = pd.read_parquet(snapshot)
        known = str(nightly["customer_id"].iloc[0])
        one = {"as_of": "2024-09-01", "customers": [{"customer_id": "web-1", "orders": [
            {"order_ts": "2024-08-20T10:00:00+02:00", "amount": 30.0, "order_id": "w1", "category": "books"}]}]}
        with httpx.Client(base_url=base, timeout=10) as client:
            answer = client.post("/tags", json={"customer_ids": [known, "nobody"]}, headers=AUTH)
            assert answer.status_code == 200 and answer.json()["unknown"] == ["nobody"]
            assert answer.json()["tags"][0]["customer_id"] == known
            assert client.post("/tags", json={"customer_ids": [known]}).status_code == 401
            assert client.get("/model", headers={"Authorization": "Bearer nope"}).status_code == 401
            assert client.post("/admin/reload").status_code == 401
            assert client.get("/model", headers=AUTH).json()["snapshot_rows"] == len(nightly)
            scored = client.post("/score", json=one, headers=AUTH)
            assert scored.status_code == 200 and scored.json()["tags"][0]["frequency"] == 1
            assert client.post("/score", json={"customers": [{"customer_id": "x", "orders": [{"amount": 1}]}]},
                               headers=AUTH).status_code == 422
            metrics = client.get("/metrics")
            assert metrics.status_code == 200 and "bentoml_service_request_total" in metrics.text
            assert client.get("/healthz").status_code == 200
            assert client.get("/docs.json", headers=AUTH).json()["paths"].keys() >= {"/tags", "/score", "/model",
                                                                                    "/admin/reload"}

        failures: list[str] = []
        calls = [0]
        stop = threading.Event()

        def traffic() -> None:
            with httpx.Client(base_url=base, timeout=30, headers=AUTH) as own:
                while not stop.is_set():
                    for path, body in (("/tags", {"customer_ids": [known]}), ("/score", one)):
                        try:
                            reply = own.post(path, json=body)
                            if reply.status_code != 200:
                                failures.append(f"{path}: {reply.status_code} {reply.text[:200]}")
                        except httpx.HTTPError as exc:
                            failures.append(f"{path}: {exc!r}")
                        calls[0] += 1

        clients = [threading.Thread(target=traffic) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(1.0)
        current.unlink()
        current.symlink_to(second)
        with httpx.Client(base_url=base, timeout=60, headers=AUTH) as admin:
            reloaded = admin.post("/admin/reload")
            time.sleep(1.5)
            stop.set()
            for thread in clients:
                thread.join()
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["previous_model_version"] == "bundle:bundle_a"
            assert reloaded.json()["model_version"] == "bundle:bundle_b"
            assert not failures and calls[0] > 20, (failures[:5], calls[0])
            # Both workers answer from the new bundle (a connection per call spreads them over the workers).
            versions = {httpx.get(f"{base}/model", headers=AUTH, timeout=10).json()["model_version"]
                        for _ in range(12)}
            assert versions == {"bundle:bundle_b"}


def test_serve_refuses_a_bad_snapshot_in_one_paragraph_before_starting_a_server(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from serving.cli import app

    bad = tmp_path / "tags.parquet"
    bad.write_text("not parquet")
    result = CliRunner().invoke(app, ["serve", "--snapshot", str(bad), "--port", str(free_port())])
    assert result.exit_code == 2 and "lifetag score --out" in result.output
