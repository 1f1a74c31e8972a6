"""The workers' memory allocator: jemalloc preloaded by `lifetag serve` when the machine has it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from serving.allocator import JEMALLOC_PATHS, AllocatorError, loaded_allocator, server_env


def test_auto_preloads_the_first_jemalloc_found_ahead_of_what_is_preloaded(tmp_path: Path) -> None:
    missing, lib = tmp_path / "nope.so.2", tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    env, said = server_env({"PATH": "/bin"}, [missing, lib])
    assert env["LD_PRELOAD"] == str(lib) and said == f"jemalloc ({lib})" and env["PATH"] == "/bin"
    env, _ = server_env({"LD_PRELOAD": "/opt/other.so"}, [lib])
    assert env["LD_PRELOAD"] == f"{lib}:/opt/other.so"


def test_without_the_library_the_environment_is_unchanged_unless_jemalloc_is_required(tmp_path: Path) -> None:
    env, said = server_env({"A": "1"}, [tmp_path / "libjemalloc.so.2"])
    assert env == {"A": "1"} and "C library" in said
    with pytest.raises(AllocatorError, match="apt-get install libjemalloc2"):
        server_env({"LIFETAG_ALLOCATOR": "jemalloc"}, [tmp_path / "libjemalloc.so.2"])


def test_system_and_an_existing_preload_are_left_alone_and_a_typo_is_refused(tmp_path: Path) -> None:
    lib = tmp_path / "libjemalloc.so.2"
    lib.write_bytes(b"")
    assert server_env({"LIFETAG_ALLOCATOR": "system"}, [lib])[0] == {"LIFETAG_ALLOCATOR": "system"}
    already = {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2"}
    assert server_env(already, [lib])[0] == already
    with pytest.raises(AllocatorError, match="not one of auto, jemalloc, system"):
        server_env({"LIFETAG_ALLOCATOR": "tcmalloc"}, [lib])


@pytest.mark.skipif(not any(Path(p).is_file() for p in JEMALLOC_PATHS), reason="no libjemalloc.so.2 on this machine")
def test_a_process_started_with_the_env_runs_on_jemalloc_and_one_without_does_not() -> None:
    env, _ = server_env({"LIFETAG_ALLOCATOR": "jemalloc"})
    probe = "from serving.allocator import loaded_allocator; print(loaded_allocator())"
    root = str(Path(__file__).resolve().parents[2])
    with_it = subprocess.run([sys.executable, "-c", probe], env={**env, "PYTHONPATH": root}, capture_output=True, text=True)
    without = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": root}, capture_output=True, text=True)
    assert (with_it.stdout.strip(), without.stdout.strip()) == ("jemalloc", "system"), with_it.stderr
    assert loaded_allocator(999_999_999) == "unknown"
