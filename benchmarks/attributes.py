"""Do static customer attributes improve the models? Validation metrics with and without the customers table.

For each generated shop (other sizes, seeds and history lengths than the demo), train three times on
the same orders and settings: orders only, with only the noise attributes (region, gender), and
with all attributes (as model features). Both are judged on the same held-out validation cut-off (out of time). The generator's
attributes are a mix: membership_level truly changes retention, age weakly tracks the order rate,
region and gender are noise; so the honest expectation is a small gain, mostly on churn.

    python -m benchmarks.attributes              # three shops, trials from --trials (default 0)
    python -m benchmarks.attributes --trials 4
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

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from configs.schema import load_config  # noqa: E402
from features.engine import lifetag_home  # noqa: E402
from benchmarks.common import ensure_generated  # noqa: E402
from training.pipeline import fit_bundle  # noqa: E402

__all__ = ["SHOPS", "compare", "main"]

# (customers, seed, start, end, as_of)
SHOPS = [
    (15_000, 101, "2023-01-01", "2024-12-31", "2025-01-01"),
    (25_000, 202, "2022-01-01", "2024-06-30", "2024-07-01"),
    (10_000, 303, "2023-06-01", "2024-12-31", "2025-01-01"),
]
NOISE = ("region", "gender")  # the generator's attributes that carry no signal
METRICS = [("churn", "roc_auc"), ("churn", "log_loss"), ("repurchase", "roc_auc"), ("ltv", "gini_normalised"),
           ("ltv", "spearman")]


def compare(shop: tuple[int, int, str, str, str], trials: int, workdir: Path) -> dict[str, dict[str, float]]:
    """Validation metrics per (target, metric) without and with the customers table, plus first-purchase AUC."""
    customers, seed, start, end, as_of = shop
    folder = workdir / f"shop-{customers}-{seed}"
    ensure_generated(folder, customers, seed, start=start, end=end)
    config = load_config()
    # The same table with only the noise attributes declared: they should cost nothing.
    attributes = config.customers.attributes
    noise = config.model_copy(update={"customers": config.customers.model_copy(
        update={"attributes": {k: attributes[k] for k in NOISE}})})
    table = folder / "customers.parquet"
    out: dict[str, dict[str, float]] = {}
    for label, run_config, customers_table in (("orders only", config, None), ("noise only", noise, table),
                                               ("with attributes", config, table)):
        result = fit_bundle(folder / "orders.parquet", run_config, as_of=as_of, trials=trials,
                            customers=customers_table)
        row = {f"{t}.{m}": result.results[t].metrics["model"][m] for t, m in METRICS}
        if result.first_purchase is not None and result.first_purchase.metrics:
            row["first_purchase.roc_auc"] = result.first_purchase.metrics["model"]["roc_auc"]
            row["first_purchase.signup_recency_auc"] = result.first_purchase.metrics["signup_recency"]["roc_auc"]
        out[label] = row
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table for every shop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=0, help="Optuna trials per target (default 0: default params)")
    args = parser.parse_args(argv)
    console = Console()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    workdir = lifetag_home() / "bench" / "attributes"
    workdir.mkdir(parents=True, exist_ok=True)
    for shop in SHOPS:
        began = time.perf_counter()
        figures = compare(shop, args.trials, workdir)
        table = Table(title=f"{shop[0]:,} customers, seed {shop[1]}, {shop[2]}..{shop[3]}, as_of {shop[4]} "
                            f"({time.perf_counter() - began:.0f} s)")
        table.add_column("validation metric")
        for label in figures:
            table.add_column(label, justify="right")
        table.add_column("change (all vs orders only)", justify="right")
        for key in figures["with attributes"]:
            before = figures["orders only"].get(key)
            after = figures["with attributes"][key]
            cells = [f"{figures[label][key]:.4f}" if key in figures[label] else "" for label in figures]
            table.add_row(key, *cells, "" if before is None else f"{after - before:+.4f}")
        console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
