"""True-holdout comparison of lifetag against BG/NBD + Gamma-Gamma fitted on the same history.

Train on the orders before `as_of`, score every customer at `as_of`, compare with what they really
bought afterwards. Two data sets:

- CDNOW (the issue's acceptance): `as_of` 1998-01-01, `ltv_days: 181`, outcomes to 1998-06-30.
  lifetag must beat BG/NBD on churn AUC, repurchase AUC, LTV Spearman and LTV Gini, with total
  predicted spend within +-5% of actual.
- Generated shops of other sizes, seeds and history lengths (the same comparison, gap shown).

    python -m benchmarks.holdout                    # CDNOW, default trials from config
    python -m benchmarks.holdout --trials 0 --check # exit 1 when an acceptance criterion fails
    python -m benchmarks.holdout --shops            # also three generated shops
    python -m benchmarks.holdout --shops --customers  # ... with their customers tables (attributes as inputs)

The exit code is 0 whatever the figures, 1 with `--check` when a CDNOW criterion fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from configs.schema import Config, load_config  # noqa: E402
from features.engine import lifetag_home  # noqa: E402
from benchmarks.common import ensure_generated  # noqa: E402
from training.holdout import Holdout, holdout_comparison  # noqa: E402

__all__ = ["CDNOW", "ACCEPTANCE", "Shop", "acceptance_failures", "cdnow_config", "main", "run_cdnow"]

ROOT = Path(__file__).resolve().parents[1]
CDNOW = ROOT.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
CDNOW_AS_OF = "1998-01-01"
TOTAL_TOLERANCE = 0.05
# (target, metric) pairs on which lifetag must beat BG/NBD on CDNOW.
ACCEPTANCE = [("repurchase", "roc_auc"), ("churn", "roc_auc"), ("ltv", "spearman"), ("ltv", "gini_normalised")]


@dataclass(frozen=True)
class Shop:
    """A generated shop for the comparison: size, seed, history span and the holdout cut-off."""

    customers: int
    seed: int
    start: str
    end: str
    as_of: str

    @property
    def name(self) -> str:
        """Short label for tables."""
        return f"{self.customers // 1000}k seed {self.seed}, {self.start[:7]}..{self.end[:7]}"


# Other sizes, seeds and history lengths than the demo shop; outcomes observed for a full year.
SHOPS = [
    Shop(30_000, 101, "2022-01-01", "2024-12-31", "2024-01-01"),
    Shop(10_000, 202, "2021-07-01", "2024-06-30", "2023-07-01"),
    Shop(20_000, 303, "2022-09-01", "2024-12-31", "2024-01-01"),  # 16 months before as_of
]


def cdnow_config() -> Config:
    """The CDNOW mapping with the acceptance horizon for LTV (181 days: 1998-01-01 to 1998-06-30)."""
    config = load_config(ROOT / "configs" / "cdnow.yaml")
    config.horizons.ltv_days = 181
    return config


def run_cdnow(trials: int | None = None) -> Holdout:
    """The acceptance comparison on CDNOW."""
    return holdout_comparison(CDNOW, cdnow_config(), CDNOW_AS_OF, trials=trials)


def acceptance_failures(result: Holdout) -> list[str]:
    """Which acceptance criteria the CDNOW comparison misses (empty: all met)."""
    failures = [f"{target} {metric}: lifetag {result.metrics[target]['lifetag'][metric]:.4f} does not beat "
                f"BG/NBD {result.metrics[target]['bgnbd'][metric]:.4f}"
                for target, metric in ACCEPTANCE if not result.beats_bgnbd(target, metric)]
    ratio = result.metrics["ltv"]["lifetag"]["total_ratio"]
    if abs(ratio - 1) > TOTAL_TOLERANCE:
        failures.append(f"ltv total predicted / actual {ratio:.3f} is outside 1 +- {TOTAL_TOLERANCE}")
    return failures


def _table(title: str, result: Holdout) -> Table:
    table = Table(title=title)
    for column in ("target", "metric", "lifetag", "BG/NBD + GG", "gap"):
        table.add_column(column, justify="left" if column in ("target", "metric") else "right")
    for row in result.rows():
        table.add_row(row["target"], row["metric"], f"{row['lifetag']:.4f}", f"{row['bgnbd']:.4f}", f"{row['gap']:+.4f}")
    return table


def _shop_path(shop: Shop) -> Path:
    folder = lifetag_home() / "bench" / f"holdout_{shop.customers}_{shop.seed}_{shop.start}_{shop.end}"
    ensure_generated(folder, shop.customers, shop.seed, start=shop.start, end=shop.end)
    return folder / "orders.parquet"


def _models(result: Holdout) -> str:
    parts = []
    for name, r in result.train.results.items():
        kind = "BG/NBD fallback" if r.fallback_reason else r.model.kind + ("" if r.model.offset == "none" else "+offset")
        parts.append(f"{name}: {kind}")
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials per target (default: config)")
    parser.add_argument("--shops", action="store_true", help="also compare on three generated shops")
    parser.add_argument("--customers", action="store_true",
                        help="generated shops: train and score with their customers table (attributes as inputs)")
    parser.add_argument("--skip-cdnow", action="store_true", help="only the generated shops")
    parser.add_argument("--check", action="store_true", help="exit 1 when a CDNOW acceptance criterion fails")
    args = parser.parse_args(argv)
    console = Console()
    failures: list[str] = []
    if not args.skip_cdnow:
        began = time.perf_counter()
        cdnow = run_cdnow(args.trials)
        console.print(_table(f"CDNOW, as_of {CDNOW_AS_OF}, {cdnow.customers:,} customers, outcomes to 1998-06-30 "
                             f"({time.perf_counter() - began:.0f} s; {_models(cdnow)})", cdnow))
        failures = acceptance_failures(cdnow)
        console.print("CDNOW acceptance: " + ("all criteria met" if not failures else "FAILED: " + "; ".join(failures)))
    if args.shops or args.skip_cdnow:
        for shop in SHOPS:
            began = time.perf_counter()
            orders = _shop_path(shop)
            customers = orders.with_name("customers.parquet") if args.customers else None
            result = holdout_comparison(orders, load_config(None), shop.as_of, trials=args.trials, customers=customers)
            with_table = " with the customers table" if customers else ""
            console.print(_table(f"Generated shop {shop.name}{with_table}, as_of {shop.as_of}, {result.customers:,} "
                                 f"customers ({time.perf_counter() - began:.0f} s; {_models(result)})", result))
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
