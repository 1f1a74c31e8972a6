"""Benchmark `--engine spark` against the embedded engine in the same run: scoring and the training set.

The 1M-customer shop (`shop-<customers>-<seed>`, shared with benchmarks/features.py and score.py) and a
bundle trained on a 50,000-customer shop are made once under $LIFETAG_HOME/bench. Each measured step
runs as a child process; its wall time, CPU time and peak memory are those of the whole process tree
(Spark runs a JVM and Python workers beside the driver: their resident memory is sampled every 0.2 s
and summed; proportional set sizes, so shared pages count once). "other cores" is the CPU the rest of
the machine used meanwhile: above ~0.1 the run was slowed by other work.

    python -m benchmarks.spark                             # 1M customers, local[2]
    python -m benchmarks.spark --customers 20000 --train-customers 5000   # smoke run

Steps: `lifetag score --engine local` and `--engine spark --spark-master local[2]` (tags compared: same
customers); the training data `lifetag train` reads before fitting (intake, the history's shop-wide facts,
and the features and labels at every cut-off it plans) by training.history.embedded_history with
training.dataset.CutoffStore on one DuckDB connection, and by training.spark_dataset.spark_training_set.
The Spark scoring run also reports each partition task's own time; for each Spark step the run on more
executor cores is estimated from its own measured figures (`_estimate`) and printed.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import psutil  # noqa: E402

from benchmarks.common import BenchmarkError, console_script, gb, machine_busy_seconds, warm_page_cache  # noqa: E402
from benchmarks.features import ensure_shop  # noqa: E402
from benchmarks.score import ensure_bundle  # noqa: E402
from features.engine import lifetag_home  # noqa: E402

__all__ = ["main"]


@dataclass(frozen=True)
class Measured:
    """One child process tree: wall and CPU seconds, peak summed memory, machine load, its stdout."""

    seconds: float
    cpu_seconds: float
    peak_bytes: int
    other_cores: float | None
    stdout: str

    def line(self, label: str) -> str:
        other = "n/a" if self.other_cores is None else f"{self.other_cores:.2f}"
        return (f"  {label:<34} wall {self.seconds:7.1f} s, CPU {self.cpu_seconds:7.1f} s, peak memory "
                f"{gb(self.peak_bytes):5.2f} GB (process tree), other cores busy {other}")


def run_tree(argv: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `argv`, sampling its process tree's memory; BenchmarkError when it fails."""
    busy_before, began = machine_busy_seconds(), time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    root, peak, cpu = psutil.Process(child.pid), 0, {}
    while child.poll() is None:
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                with proc.oneshot():
                    memory = proc.memory_full_info()
                    times = proc.cpu_times()
                total += getattr(memory, "pss", memory.rss)
                cpu[proc.pid] = times.user + times.system + times.children_user + times.children_system
            except psutil.Error:
                continue
        peak = max(peak, total)
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - began
    if child.returncode != 0:
        raise BenchmarkError(f"{' '.join(argv)} exited {child.returncode}: {stderr[-2000:]}")
    busy_after = machine_busy_seconds()
    own = sum(cpu.values())
    other = None if busy_before is None or busy_after is None else \
        max(0.0, (busy_after - busy_before - own) / seconds / (os.cpu_count() or 1))
    return Measured(seconds, own, peak, other, stdout)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-customers", type=int, default=50_000)
    parser.add_argument("--as-of", default="2025-01-01")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--partitions", type=int, default=None, help="Spark scoring partitions (default: lifetag's)")
    parser.add_argument("--workdir", type=Path, default=None, help="default $LIFETAG_HOME/bench")
    parser.add_argument("--steps", nargs="+", choices=["score", "training-set"], default=["score", "training-set"])
    parser.add_argument("--child", choices=["score-spark", "set-local", "set-spark"], help=argparse.SUPPRESS)
    parser.add_argument("--orders", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _planned(first: Any, as_of: Any, config: Any) -> tuple[list, list[int]]:
    """The cut-offs `lifetag train` plans (and as_of itself) and the horizons."""
    from training.dataset import plan_cutoffs, targets

    cutoffs = sorted({as_of, *(c for t in targets(config) for c in plan_cutoffs(as_of, t.horizon_days, first, config, t.name))})
    return cutoffs, sorted({t.horizon_days for t in targets(config)})


def child(args: argparse.Namespace) -> int:
    """One measured step, in this (child) process; prints a JSON line of what it did."""
    import pandas as pd

    from configs.schema import load_config
    from features.engine import connect

    config, as_of = load_config(None), pd.Timestamp(args.as_of)
    if args.child == "score-spark":
        from serving.spark import score_on_spark

        spark, started = _session(args.master)
        began = time.perf_counter()
        result = score_on_spark(str(args.orders), as_of, str(args.out), config, model_uri=str(args.bundle),
                                partitions=args.partitions, spark=spark)
        print(json.dumps({"customers": result.customers, "seconds": time.perf_counter() - began,
                          "partition_seconds": result.partition_seconds, "session_seconds": started,
                          "driver_cpu_seconds": time.process_time()}))
        return 0
    con = connect(config.engine)
    if args.child == "set-local":
        from training.dataset import CutoffStore
        from training.history import embedded_history

        history = embedded_history(con, args.orders, config, None, None, as_of)
        store, started = CutoffStore(con, "_history", config), 0.0
    else:
        from training.spark_dataset import spark_training_set

        spark, started = _session(args.master)
        history, store = spark_training_set(spark=spark)(con, args.orders, config, None, None, as_of)
    cutoffs, horizons = _planned(history.first_order, as_of, config)
    rows = sum(len(store.feature_frame(c)) for c in cutoffs)
    rows += sum(len(store.label_frame(c, h)) for c in cutoffs for h in horizons)
    print(json.dumps({"cutoffs": len(cutoffs), "rows": rows, "session_seconds": started,
                      "driver_cpu_seconds": time.process_time()}))
    return 0


def _session(master: str) -> tuple[Any, float]:
    """The Spark session and the seconds it took to start (part of the driver's fixed time)."""
    from features.spark import session

    began = time.perf_counter()
    spark = session(master)
    return spark, time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    """Measure both engines on the same shop and print the figures."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return child(args)
    workdir = (args.workdir or lifetag_home() / "bench").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, "-m", "benchmarks.spark", "--as-of", args.as_of, "--master", args.master]
    try:
        shop = ensure_shop(workdir, args.customers, args.seed)
        bundle, made = ensure_bundle(workdir, args.train_customers, args.seed + 1, args.as_of)
        print(f"--engine spark vs local: {shop.customers:,} customers, {shop.rows:,} order lines; model: {made}; "
              f"as_of {args.as_of}; Spark {args.master}; {os.cpu_count()} cores", flush=True)
        warm_page_cache(shop.orders)
        with tempfile.TemporaryDirectory(prefix="lifetag-spark-bench-", dir=workdir) as scratch:
            local_out, spark_out = Path(scratch) / "local.parquet", Path(scratch) / "spark_tags"
            if "score" in args.steps:
                _score_both(args, shop, bundle, local_out, spark_out, me)
            for mode, label in (("set-local", "training data, embedded (local)"),
                                ("set-spark", f"training data, Spark {args.master}")):
                if "training-set" not in args.steps:
                    break
                measured = run_tree([*me, "--child", mode, "--orders", str(shop.orders)])
                done = json.loads(measured.stdout.strip().splitlines()[-1])
                print(measured.line(label) + f"; {done['cutoffs']} cut-offs, {done['rows']:,} rows", flush=True)
                if mode == "set-spark":
                    _estimate("training data", done, measured)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    return 0


def _score_both(args: argparse.Namespace, shop: Any, bundle: Path, local_out: Path, spark_out: Path,
                me: list[str]) -> None:
    """`lifetag score` by each engine, the tags compared, the Spark run's partition figures."""
    local = run_tree([*console_script("lifetag"), "score", "--orders", str(shop.orders), "--as-of", args.as_of,
                      "--out", str(local_out), "--model", str(bundle)])
    print(local.line("score, embedded (local)"), flush=True)
    extra = ["--partitions", str(args.partitions)] if args.partitions else []
    on_spark = run_tree([*me, "--child", "score-spark", "--orders", str(shop.orders), "--bundle", str(bundle),
                         "--out", str(spark_out), *extra])
    print(on_spark.line(f"score, Spark {args.master}"), flush=True)
    _compare(local_out, spark_out)
    report = json.loads(on_spark.stdout.strip().splitlines()[-1])
    tasks = report["partition_seconds"]
    print(f"  Spark scoring: {len(tasks)} partition tasks, {sum(tasks):.0f} s of task time in all (median "
          f"{sorted(tasks)[len(tasks) // 2]:.1f} s, longest {max(tasks):.1f} s); the rest of the "
          f"{on_spark.cpu_seconds:.0f} CPU seconds read, number and key the lines, shuffle and write", flush=True)
    _estimate("scoring", report, on_spark)


def _compare(local_out: Path, spark_out: Path) -> None:
    import duckdb

    with duckdb.connect() as con:
        same = con.execute(
            "SELECT count(*) FROM read_parquet(?) l FULL JOIN read_parquet(?) s USING (customer_id) "
            "WHERE l.customer_id IS NULL OR s.customer_id IS NULL OR l.rfm_segment IS DISTINCT FROM s.rfm_segment "
            "OR abs(l.churn_risk - s.churn_risk) > 1e-9 OR abs(l.ltv - s.ltv) > 1e-9",
            [str(local_out), str(spark_out / "*.parquet")]).fetchall()[0][0]
    if same:
        raise BenchmarkError(f"the engines' tags differ on {same:,} customers")
    print("  tags: the same customers, churn_risk and ltv within 1e-9, the same RFM segments", flush=True)


def _estimate(step: str, report: dict, measured: Measured) -> None:
    """An estimate of the Spark run on more executor cores, from this run's own figures.

    The driver's part does not shrink with executors: the session's start and the driver process's own CPU
    time (planning, the reports, the training set read back, the rename), both measured in the run. Everything
    else ran as tasks (reading and keying the lines, the shuffle, the partitions' work): the rest of the
    process tree's CPU time, spread over the cores. Shuffle over a network is not in it, so it is optimistic.
    The 10x line scales the task part by ten (ten times the lines, the driver part unchanged).
    """
    driver = report["session_seconds"] + report["driver_cpu_seconds"]
    tasks = max(0.0, measured.cpu_seconds - report["driver_cpu_seconds"])
    print(f"  Spark {step}: driver part {driver:.0f} s (session start {report['session_seconds']:.0f} s, driver "
          f"CPU {report['driver_cpu_seconds']:.0f} s), task CPU {tasks:.0f} s", flush=True)
    for cores in (4, 16, 64):
        print(f"    estimate with {cores:>2} executor cores: ~{driver + tasks / cores:.0f} s; "
              f"10x the lines ~{driver + 10 * tasks / cores:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
