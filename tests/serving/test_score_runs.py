"""`lifetag score` runs as real processes: one run per output, and a killed run's leftovers.

A small shop is trained once (trials=0) and saved as a bundle folder; every run below is a real
`lifetag score` process with its own LIFETAG_HOME, scoring in many partitions so that it runs long
enough to be caught mid-way. Nothing is mocked.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from configs.schema import Config
from training.pipeline import fit_bundle
from support import generated_shop, module_home

CUSTOMERS = 1_500
SEED = 29
AS_OF = "2025-01-01"
PARTITIONS = "40"  # each partition is one feature query: a run of several seconds


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED) / "orders.parquet"


@pytest.fixture(scope="module")
def bundle_dir(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    monkeypatch = module_home(tmp_path_factory.mktemp("train_home"))
    try:
        trained = fit_bundle(shop, config, as_of=AS_OF, trials=0)
    finally:
        monkeypatch.undo()
    return trained.bundle.save(tmp_path_factory.mktemp("models") / "bundle")


def _start(shop: Path, bundle_dir: Path, out: Path, home: Path) -> subprocess.Popen[str]:
    lifetag = Path(sys.executable).with_name("lifetag")
    return subprocess.Popen(
        [str(lifetag), "score", "--orders", str(shop), "--as-of", AS_OF, "--out", str(out), "--model", str(bundle_dir),
         "--partitions", PARTITIONS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "LIFETAG_HOME": str(home)},
    )


def _wait_for_part(home: Path, run: subprocess.Popen[str], timeout: float = 120.0) -> Path:
    """The run's scratch folder, once it holds a partial result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list((home / "scratch").glob("score-*/part-*.parquet"))
        if parts:
            return parts[0].parent
        assert run.poll() is None, f"the run ended before writing a partial result: {run.communicate()}"
        time.sleep(0.02)
    raise AssertionError("no partial result appeared")


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_an_output_glob_finds_and_the_next_run_clears_its_scratch(
    shop: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    home, out = tmp_path / "home", tmp_path / "tags" / "tags.parquet"
    out.parent.mkdir()
    # A final temporary file as a run killed during the last rename would leave it.
    (out.parent / ".tags.parquet.0badc0de.tmp").write_bytes(b"partial")
    run = _start(shop, bundle_dir, out, home)
    scratch = _wait_for_part(home, run)

    run.send_signal(signal.SIGKILL)
    run.wait()

    assert scratch.is_dir(), "the killed run's scratch is still there"
    assert not scratch.is_relative_to(out.parent)
    assert list(out.parent.glob("*.parquet")) == [] and list(out.parent.glob("**/*.parquet")) == []

    again = _start(shop, bundle_dir, out, home)
    again_out, again_err = again.communicate(timeout=300)

    assert again.returncode == 0, again_err
    assert not scratch.exists()
    assert [p.name for p in out.parent.iterdir()] == ["tags.parquet"]
    assert list((home / "scratch").iterdir()) == []
    assert len(pd.read_parquet(out)) > 0


@pytest.mark.slow
def test_a_second_run_to_the_same_output_is_refused_naming_the_first_runs_pid(
    shop: Path, bundle_dir: Path, tmp_path: Path
) -> None:
    home, out = tmp_path / "home", tmp_path / "tags.parquet"
    first = _start(shop, bundle_dir, out, home)
    _wait_for_part(home, first)

    second = _start(shop, bundle_dir, out, home)
    second_out, second_err = second.communicate(timeout=300)
    first_out, first_err = first.communicate(timeout=300)

    assert second.returncode == 2, second_err
    assert "Traceback" not in second_err and second_out == ""
    message = " ".join(second_err.split())
    assert f"another `lifetag score` is writing this output right now (pid {first.pid} " in message
    assert "Nothing was written." in message
    assert first.returncode == 0, first_err
    assert len(pd.read_parquet(out)) > 0
