"""Run coordination under LIFETAG_HOME: file locks between lifetag processes, and per-run scratch folders.

- `store_lock`: held while a process creates (migrates) the embedded MLflow store, so two first
  trainings on a fresh LIFETAG_HOME do not both run MLflow's schema migration.
- `output_lock`: one scoring run per output; a second run to the same output is refused, naming
  the first run's pid (the lock is the kernel's, so a killed run never leaves a stale lock).
- `scratch_folder`: partial results of a run live in LIFETAG_HOME/scratch/<kind>-<host>-<pid>-<id>,
  never beside the output, and folders of runs whose process is gone are removed when a run starts.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from features.engine import lifetag_home, remove_dead_runs_folders, run_folder_name

__all__ = ["LockHeld", "output_lock", "remove_stale_scratch", "scratch_folder", "scratch_root", "store_lock"]


class LockHeld(RuntimeError):
    """Another live process holds the lock; `holder` is what it wrote there (its pid and what it does)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.path, self.holder = path, holder


@contextmanager
def _flock(path: Path, wait: bool, note: str) -> Iterator[None]:
    """An exclusive `flock` on `path` for the block; raises LockHeld at once when busy and not `wait`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockHeld(path, os.pread(fd, 4096, 0).decode(errors="replace").strip()) from None
        # The file itself is never deleted: removing it would let a third process lock a new inode.
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def store_lock(folder: Path) -> Iterator[None]:
    """Wait for, then hold, the lock guarding creation of the MLflow store kept in `folder`."""
    with _flock(folder / ".store.lock", wait=True, note=f"pid {os.getpid()} creating the MLflow store"):
        yield


@contextmanager
def output_lock(target: str) -> Iterator[None]:
    """Hold the lock of one output (a resolved path); LockHeld when a live run already writes it."""
    key = hashlib.sha256(target.encode()).hexdigest()[:24]
    note = f"pid {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')}) writing {target}"
    with _flock(lifetag_home().resolve() / "locks" / f"output-{key}.lock", wait=False, note=note):
        yield


def scratch_root() -> Path:
    """The folder holding every run's scratch: LIFETAG_HOME/scratch."""
    return lifetag_home().resolve() / "scratch"


def scratch_folder(kind: str) -> Path:
    """A new, empty scratch folder for this run (after removing those of runs that are gone)."""
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(root)
    folder = root / run_folder_name(kind)
    folder.mkdir()
    return folder


def remove_stale_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders of this host's runs whose process no longer exists; returns them."""
    return remove_dead_runs_folders(root or scratch_root())
