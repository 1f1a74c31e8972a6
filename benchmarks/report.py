"""Benchmark `lifetag report` on the 1M-customer generated shop: wall time, peak RSS and the page's size.

Goal (issue 20): at most 60 s wall time, 4 GB peak RSS and a 15 MB file on 2 cores, for reading the
tags, validating the orders, cohorts, clusters, the model section and writing the page (and logging
it to MLflow). The shop (`shop-<customers>-<seed>`, shared with benchmarks/features.py and
benchmarks/score.py), a registered model and the tags are made once under $LIFETAG_HOME/bench and
reused: the model is trained with trials=0 on a `--train-customers` shop of the same generator (another
seed) and registered as version 1 in an MLflow store of its own (`report-home-...`), and the big shop
is scored with it, so the report finds the version's run, reads its validation and logs the page there,
as the nightly job would. The command runs as a child process; wall time, CPU time and peak RSS are
the kernel's (wait4). "other cores" is the CPU the rest of the machine used meanwhile.

    python -m benchmarks.report                       # 1M customers
    python -m benchmarks.report --customers 20000     # smoke run
    python -m benchmarks.report --check               # exit 1 on a missed goal

Exit code 0 whatever the figures, 1 with `--check` when a goal is missed, 2 when a command fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file, benchmarks/ would come first on sys.path and shadow the project's packages.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from benchmarks.common import BenchmarkError, Runs, check_ok, console_script, gb, run_measured, warm_page_cache  # noqa: E402
from benchmarks.features import ensure_shop  # noqa: E402
from features.engine import lifetag_home  # noqa: E402

__all__ = ["GOAL_FILE_BYTES", "GOAL_PEAK_RSS_BYTES", "GOAL_SECONDS", "main"]

GOAL_SECONDS = 60.0
GOAL_PEAK_RSS_BYTES = 4 * 10**9
GOAL_FILE_BYTES = 15 * 10**6


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="shop size (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed of the shop (default 0)")
    parser.add_argument("--train-customers", type=int, default=20_000,
                        help="size of the shop the model is trained on (default 20,000; seed = --seed + 1)")
    parser.add_argument("--as-of", default="2025-01-01", help="training and scoring cut-off (default 2025-01-01)")
    parser.add_argument("--lang", default="en", help="--lang of the report (default en)")
    parser.add_argument("--workdir", type=Path, default=None, help="default $LIFETAG_HOME/bench")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    return parser.parse_args(argv)


def ensure_registered(workdir: Path, customers: int, seed: int, as_of: str) -> tuple[Path, str]:
    """An MLflow home holding version 1 of `lifetag`, trained (trials=0) on a generated shop; made once."""
    home = workdir / f"report-home-{customers}-{seed}-{as_of}"
    done = home / "registered"
    if done.exists():
        return home, f"reused {home}"
    from configs.schema import load_config
    from training.pipeline import fit_bundle
    from training.tracking import record_training

    shop = ensure_shop(workdir, customers, seed)
    began = time.perf_counter()
    previous = os.environ.get("LIFETAG_HOME")
    os.environ["LIFETAG_HOME"] = str(home)
    try:
        result = fit_bundle(shop.orders, load_config(None), as_of=as_of, trials=0)
        recorded = record_training(result, promote=True, trials=0)
    finally:
        if previous is None:
            os.environ.pop("LIFETAG_HOME", None)
        else:
            os.environ["LIFETAG_HOME"] = previous
    if recorded.version != "1":
        raise BenchmarkError(f"{home}: expected a fresh store, but the model was registered as version {recorded.version}")
    done.touch()
    return home, f"trained on {customers:,} customers in {time.perf_counter() - began:.0f} s and registered"


def ensure_tags(workdir: Path, orders: Path, home: Path, as_of: str) -> tuple[Path, str]:
    """The shop scored with the registered version 1 (`lifetag score`), made once."""
    tags = home / f"tags-{orders.parent.name}.parquet"
    if tags.exists():
        return tags, f"reused {tags}"
    argv = [*console_script("lifetag"), "score", "--orders", str(orders), "--as-of", as_of, "--out", str(tags),
            "--model", "models:/lifetag/1"]
    run = check_ok(run_measured(argv, env={**os.environ, "LIFETAG_HOME": str(home), "COLUMNS": "160"}), " ".join(argv))
    return tags, f"scored in {run.seconds:.0f} s"


def main(argv: list[str] | None = None) -> int:
    """Measure `lifetag report` and print wall time, CPU time, peak RSS and file size against the goals."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = (args.workdir or lifetag_home() / "bench").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        shop = ensure_shop(workdir, args.customers, args.seed)
        home, trained = ensure_registered(workdir, args.train_customers, args.seed + 1, args.as_of)
        tags, scored = ensure_tags(workdir, shop.orders, home, args.as_of)
        made = "reused" if shop.generated_seconds is None else f"generated in {shop.generated_seconds:.0f} s"
        print(f"lifetag report: {shop.customers:,} customers, {shop.rows:,} order lines ({made}); model: {trained}; "
              f"tags: {scored}; as_of {args.as_of}; {os.cpu_count()} cores", flush=True)
        warm_page_cache(shop.orders)
        warm_page_cache(tags)
        with tempfile.TemporaryDirectory(prefix="lifetag-report-bench-", dir=workdir) as scratch:
            out = Path(scratch) / "report.html"
            command = [*console_script("lifetag"), "report", "--tags", str(tags), "--orders", str(shop.orders),
                     "--out", str(out), "--lang", args.lang]
            run = check_ok(run_measured(command, env={**os.environ, "LIFETAG_HOME": str(home), "COLUMNS": "200"}),
                           " ".join(command))
            size = out.stat().st_size
        runs = Runs("report", [run])
        met = run.seconds <= GOAL_SECONDS and run.peak_rss_bytes <= GOAL_PEAK_RSS_BYTES and size <= GOAL_FILE_BYTES
        other = "n/a" if runs.other_cores is None else f"{runs.other_cores:.2f}"
        print(f"  wall {run.seconds:.1f} s (goal <= {GOAL_SECONDS:.0f} s: {_verdict(run.seconds <= GOAL_SECONDS)}), "
              f"CPU {run.cpu_seconds:.1f} s, peak RSS {gb(run.peak_rss_bytes):.2f} GB (goal <= "
              f"{gb(GOAL_PEAK_RSS_BYTES):.0f} GB: {_verdict(run.peak_rss_bytes <= GOAL_PEAK_RSS_BYTES)}), file "
              f"{size / 1e6:.1f} MB (goal <= {GOAL_FILE_BYTES / 1e6:.0f} MB: {_verdict(size <= GOAL_FILE_BYTES)}), "
              f"other cores busy {other}", flush=True)
        print("  " + run.stdout.strip().splitlines()[-1], flush=True)
    except BenchmarkError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    return 1 if args.check and not met else 0


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


if __name__ == "__main__":
    sys.exit(main())
