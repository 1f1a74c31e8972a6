"""Helpers the test modules share (importable as `support`: pytest puts tests/ on sys.path for conftest.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest


def use_embedded_store(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """Point LIFETAG_HOME (and so the embedded MLflow store) at `home`, with no MLflow URI left over."""
    monkeypatch.setenv("LIFETAG_HOME", str(home))
    # MLflow itself writes both variables into os.environ when a URI is set; start clean.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv("COLUMNS", "240")  # room for the CLI's tables on one line per row


def module_home(home: Path) -> pytest.MonkeyPatch:
    """LIFETAG_HOME for a module-scoped fixture (they run before the autouse per-test one); undo when done."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("LIFETAG_HOME", str(home))
    return monkeypatch


def parquet_file(frame: pd.DataFrame, folder: Path, name: str) -> Path:
    """`frame` written to folder/name (Parquet, no index), for fixtures that hand a path to lifetag."""
    path = folder / name
    frame.to_parquet(path, index=False)
    return path


def generated_shop(factory: pytest.TempPathFactory, customers: int, seed: int, **period: str) -> Path:
    """A shop from the generator (orders.parquet, customers.parquet) in a fresh temporary folder."""
    from features.synthetic import write_shop

    folder = factory.mktemp("shop")
    write_shop(folder, n_customers=customers, seed=seed, **period)
    return folder


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(command: list[str], port: int, env: dict[str, str], log: Path, cwd: Path | None = None,
                   timeout_s: float = 120) -> Iterator[str]:
    """A real server process (`lifetag serve`, `bentoml serve`) in a process group of its own, its output in
    `log` (a pipe nobody reads would fill up and stall it): its base URL once /readyz answers 200; stopped
    (SIGTERM, then SIGKILL) on the way out."""
    import httpx

    with log.open("wb") as sink:
        server = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, f"the server stopped before it was ready:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server was not ready in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
