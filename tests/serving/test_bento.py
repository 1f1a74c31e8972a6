"""`bentoml build` makes a Bento of the service from bentofile.yaml on this machine (no resolution of
packages, no network), and the Bento itself serves: what `bentoml containerize` would put in an image."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from configs.schema import load_config
from training.pipeline import fit_bundle
from support import free_port, generated_shop, running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bentoml_build_makes_a_bento_of_the_service_code_and_lock_that_serves(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    import httpx

    bentoml = str(Path(sys.executable).with_name("bentoml"))
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    built = subprocess.run([bentoml, "build", "--output", "tag"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    bento = next((tmp_path / "bentoml" / "bentos" / "lifetag").glob("*/bento.yaml")).parent
    source = bento / "src"
    assert (source / "serving" / "service.py").is_file() and (source / "configs" / "default.yaml").is_file()
    assert not (source / "training").exists() and not list(source.rglob("*.parquet"))  # no training code, no data
    pinned = set((bento / "env" / "python" / "requirements.txt").read_text().split())
    assert set((ROOT / "requirements.lock").read_text().split()) <= pinned  # the lock as it is

    shop = generated_shop(tmp_path_factory, 600, 5, start="2023-01-01", end="2024-12-31")
    folder = fit_bundle(shop / "orders.parquet", load_config(), as_of=pd.Timestamp("2024-09-01"),
                        trials=0).bundle.save(tmp_path / "bundle")
    port = free_port()
    command = [bentoml, "serve", "lifetag:latest", "--port", str(port), "--host", "127.0.0.1"]
    served = {**env, "LIFETAG_MODEL": str(folder), "LIFETAG_HOME": str(tmp_path)}
    with running_server(command, port, served, tmp_path / "bento.log", cwd=tmp_path) as base:
        answer = httpx.post(f"{base}/score", timeout=30, json={
            "as_of": "2024-09-01", "customers": [{"customer_id": "c1", "orders": [
                {"order_ts": "2024-08-01T09:00:00Z", "amount": 42.0, "order_id": "o1"}]}]})
        assert answer.status_code == 200 and answer.json()["tags"][0]["monetary_total"] == 42.0, answer.text
