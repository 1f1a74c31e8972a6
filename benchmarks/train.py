"""Benchmark `lifetag train` end to end: a generated shop of 100k customers, 20 Optuna trials per target.

Goal (from the issue): at most 10 minutes wall time and 4 GB peak RSS on 2 cores. The command runs
as a child process with a fresh MLflow store (a temporary LIFETAG_HOME), exactly as a data scientist
would run it; its wall time, CPU time and peak RSS are measured by the kernel (wait4). The shop is
generated once per (customers, seed) under $LIFETAG_HOME/bench and reused. "other cores" is the CPU
the rest of the machine used meanwhile: a figure above ~0.1 means the run was slowed by other work.

    python -m benchmarks.train                                   # 100k customers, 20 trials
    python -m benchmarks.train --customers 10000 --trials 2      # smoke run
    python -m benchmarks.train --check                           # exit 1 on a missed goal

Exit code 0 whatever the figures, 1 with `--check` when a goal is missed, 2 when the command fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks.common import BenchmarkError, check_ok, console_script, gb, run_measured  # noqa: E402
from features.engine import lifetag_home  # noqa: E402
from features.synthetic import write_shop  # noqa: E402

__all__ = ["GOAL_PEAK_RSS_BYTES", "GOAL_SECONDS", "main"]

GOAL_SECONDS = 600.0
GOAL_PEAK_RSS_BYTES = 4 * 10**9


def _shop(customers: int, seed: int) -> Path:
    folder = lifetag_home() / "bench" / f"train_{customers}_{seed}"
    if not (folder / "orders.parquet").exists():
        began = time.perf_counter()
        summary = write_shop(folder, n_customers=customers, seed=seed)
        print(f"generated {summary['customers']:,} customers, {summary['orders']:,} orders "
              f"in {time.perf_counter() - began:.1f} s -> {folder}")
    return folder / "orders.parquet"


def main(argv: list[str] | None = None) -> int:
    """Measure one `lifetag train` run and print wall time, CPU time and peak RSS against the goals."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--show-output", action="store_true", help="print the command's own output (metrics table)")
    args = parser.parse_args(argv)
    orders = _shop(args.customers, args.seed)
    with tempfile.TemporaryDirectory(prefix="lifetag-train-bench-") as home:
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update({"LIFETAG_HOME": home, "COLUMNS": "160"})
        command = [*console_script("lifetag"), "train", "--orders", str(orders), "--trials", str(args.trials)]
        try:
            run = check_ok(run_measured(command, env=env), "lifetag train")
        except BenchmarkError as exc:
            print(exc, file=sys.stderr)
            return 2
    if args.show_output:
        print(run.stdout)
    other = "n/a" if run.other_cpu_seconds is None else f"{max(run.other_cpu_seconds, 0) / run.seconds:.2f}"
    time_ok, rss_ok = run.seconds <= GOAL_SECONDS, run.peak_rss_bytes <= GOAL_PEAK_RSS_BYTES
    print(f"lifetag train: {args.customers:,} customers, {args.trials} trials per target, {os.cpu_count()} cores")
    print(f"  wall {run.seconds:.0f} s (goal <= {GOAL_SECONDS:.0f} s: {'PASS' if time_ok else 'FAIL'}), "
          f"CPU {run.cpu_seconds:.0f} s, other cores busy {other}")
    print(f"  peak RSS {gb(run.peak_rss_bytes):.2f} GB (goal <= {gb(GOAL_PEAK_RSS_BYTES):.0f} GB: "
          f"{'PASS' if rss_ok else 'FAIL'})")
    return 1 if args.check and not (time_ok and rss_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
