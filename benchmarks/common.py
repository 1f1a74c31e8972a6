"""Helpers the benchmark scripts share: run a command and measure its wall time, CPU time and peak RSS.

Sizes are reported in decimal units (1 GB = 10**9 bytes), so a goal written as "3 GB" is checked
against 3,000,000,000 bytes.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BenchmarkError", "Run", "Runs", "check_ok", "console_script", "ensure_generated", "gb", "machine_busy_seconds",
    "run_measured", "warm_page_cache",
]

GB = 10**9
_STDERR_TAIL_CHARS = 2_000
# /proc/stat cpu fields that count as busy: user nice system (idle iowait) irq softirq steal.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


SHOP_FILES = ("orders.parquet", "customers.parquet", "shop.json")


def ensure_generated(
    folder: Path, customers: int, seed: int, *, shape: str = "default", **period: str
) -> float | None:
    """Generate a shop into `folder` unless all its files are there; seconds taken, None when reused.

    `period`: the generator's `start` / `end`; `shape`: a name in `features.synthetic.SHAPES`.
    Shops cached before the generator wrote a customers table are generated again: the same seed
    gives the same orders, plus the table. A cached shop is reused whatever its shape: name the
    folder after the shape when a benchmark uses several.
    """
    if all((folder / name).exists() for name in SHOP_FILES):
        return None
    from features.synthetic import write_shop

    began = time.perf_counter()
    write_shop(folder, n_customers=customers, seed=seed, shape=shape, **period)
    return time.perf_counter() - began


class BenchmarkError(RuntimeError):
    """A measured command failed, so there is no figure to report."""


@dataclass(frozen=True)
class Run:
    """One finished command: wall and CPU seconds, peak resident memory, exit code and output."""

    seconds: float
    cpu_seconds: float  # user + system over all its threads
    peak_rss_bytes: int
    returncode: int
    stdout: str
    stderr: str
    other_cpu_seconds: float | None = None  # CPU the rest of the machine used meanwhile; None off Linux


@dataclass
class Runs:
    """Repeated runs of one command; the median time and the largest peak RSS are its figures."""

    label: str
    runs: list[Run]

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def min_seconds(self) -> float:
        return min(r.seconds for r in self.runs)

    @property
    def max_seconds(self) -> float:
        return max(r.seconds for r in self.runs)

    @property
    def median_cpu_seconds(self) -> float:
        return statistics.median(r.cpu_seconds for r in self.runs)

    @property
    def peak_rss_bytes(self) -> int:
        return max(r.peak_rss_bytes for r in self.runs)

    @property
    def other_cores(self) -> float | None:
        """Cores the rest of the machine kept busy, on average, while these runs ran."""
        others = [r.other_cpu_seconds for r in self.runs]
        if any(o is None for o in others):
            return None
        return max(sum(others), 0.0) / sum(r.seconds for r in self.runs)


# Runs sys.argv[2:] as its child, writes "<seconds> <ru_maxrss> <cpu seconds>" of that child to the
# file sys.argv[1] and exits with its exit code (128 + signal when killed). It exists so that the
# measured process starts from this small interpreter: a command spawned straight from the benchmark
# (vfork + exec) has the benchmark's own high-water RSS counted in its ru_maxrss.
_MEASURE_CHILD = """
import os, sys, time
began = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as exc:
        os.write(2, f"cannot run {sys.argv[2]}: {exc}\\n".encode())
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - began
with open(sys.argv[1], "w") as report:
    report.write(f"{seconds!r} {usage.ru_maxrss} {usage.ru_utime + usage.ru_stime!r}")
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def run_measured(
    argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> Run:
    """Run `argv` to completion and measure it as the kernel records it (wait4).

    The figures are those of exactly this command (and whatever it waited for). `other_cpu_seconds`
    is the machine's busy CPU time meanwhile minus the command's own: other work that competed
    with it and inflated its wall time.
    """
    with tempfile.TemporaryDirectory(prefix="lifetag-bench-") as scratch:
        report = Path(scratch) / "usage"
        out_path, err_path = Path(scratch) / "stdout", Path(scratch) / "stderr"
        busy_before = machine_busy_seconds()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            returncode = subprocess.call(
                [sys.executable, "-I", "-S", "-c", _MEASURE_CHILD, str(report), *argv],
                stdout=out, stderr=err, env=dict(env) if env else None, cwd=cwd,
            )
        busy_after = machine_busy_seconds()
        stdout = out_path.read_text(encoding="utf-8", errors="replace")
        stderr = err_path.read_text(encoding="utf-8", errors="replace")
        if not report.exists():
            tail = stderr.strip()[-_STDERR_TAIL_CHARS:]
            raise BenchmarkError(f"could not measure {argv[0]} (exit code {returncode}): {tail}")
        seconds, maxrss, cpu = report.read_text().split()
    other = None if busy_before is None or busy_after is None else busy_after - busy_before - float(cpu)
    return Run(float(seconds), float(cpu), _maxrss_bytes(int(maxrss)), returncode, stdout, stderr, other)


def check_ok(run: Run, what: str) -> Run:
    """`run` if it exited 0; otherwise a BenchmarkError quoting the end of its stderr."""
    if run.returncode != 0:
        tail = run.stderr.strip()[-_STDERR_TAIL_CHARS:] or "(no output on stderr)"
        raise BenchmarkError(f"{what} failed with exit code {run.returncode}:\n{tail}")
    return run


def machine_busy_seconds() -> float | None:
    """CPU seconds all processors have spent busy since boot (Linux /proc/stat); None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()[1:]
    except OSError:
        return None
    ticks = sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
    return ticks / os.sysconf("SC_CLK_TCK")


def _maxrss_bytes(maxrss: int) -> int:
    # Linux reports kibibytes, macOS bytes.
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def console_script(name: str) -> list[str]:
    """The command for a console script installed beside this interpreter (e.g. the venv's `lifetag`)."""
    script = Path(sys.executable).with_name(name)
    if not script.exists():
        raise BenchmarkError(
            f"{script} not found: install the project into this interpreter's environment "
            "(`make venv`, or `pip install -e .`) and run the benchmark with that interpreter."
        )
    return [str(script)]


def warm_page_cache(path: str | os.PathLike[str], chunk_bytes: int = 1 << 24) -> None:
    """Read a file once so the first measured run does not pay for cold disk reads alone."""
    with open(path, "rb") as handle:
        while handle.read(chunk_bytes):
            pass


def gb(n_bytes: float) -> float:
    """Bytes as decimal gigabytes."""
    return n_bytes / GB
