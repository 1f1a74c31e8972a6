"""True-holdout evaluation harness: lifetag against BG/NBD + Gamma-Gamma on CDNOW and generated shops.

Every run trains before `as_of` on one shop with one training seed and one variant of the settings,
scores every customer at `as_of` and compares with what they really bought afterwards; BG/NBD +
Gamma-Gamma is fitted on the same orders. A goal is met on a shop when lifetag's mean over the
seeds beats BG/NBD by more than the spread between the seeds (max - min).

    python -m benchmarks.holdout                       # CDNOW only, default trials (the acceptance)
    python -m benchmarks.holdout --harness             # every shop, 3 seeds, the shipped settings
    python -m benchmarks.holdout --harness --ablation  # ... and every ablation step
    python -m benchmarks.holdout --harness --shops gift_8k flat_60k --variants shipped calibration_none
    python -m benchmarks.holdout --harness --stored    # the tables of every stored run of this code
    python -m benchmarks.holdout --trials 0 --check    # exit 1 when a CDNOW acceptance criterion fails

Results go to $LIFETAG_HOME/bench/holdout/runs.jsonl, one line per run, keyed by shop, variant,
seed, trials and a hash of the code that trains and scores: a re-run reuses the runs whose key
has not changed (`--fresh` ignores them). The exit code is 0 whatever the figures, 1 with
`--check` when a CDNOW criterion fails.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from configs.schema import Config, TrainingConfig, load_config  # noqa: E402
from features.engine import lifetag_home  # noqa: E402
from benchmarks.common import ensure_generated  # noqa: E402
from training.holdout import Holdout, holdout_comparison  # noqa: E402

__all__ = ["ACCEPTANCE", "CDNOW", "GOALS", "SHOPS", "VARIANTS", "Shop", "acceptance_failures", "ablation_rows",
           "cdnow_config", "goal_rows", "main", "markdown", "run_cdnow", "run_one"]

ROOT = Path(__file__).resolve().parents[1]
CDNOW = ROOT.parent / "shared" / "data" / "cdnow" / "CDNOW_master.txt"
CDNOW_AS_OF = "1998-01-01"
TOTAL_TOLERANCE = 0.05
# (target, metric) pairs on which lifetag must beat BG/NBD on CDNOW.
ACCEPTANCE = [("repurchase", "roc_auc"), ("churn", "roc_auc"), ("ltv", "spearman"), ("ltv", "gini_normalised")]
# The harness's goals on every shop: (target, metric, higher is better, needs a margin beyond the seed spread).
GOALS = [("churn", "roc_auc", True, True), ("repurchase", "roc_auc", True, True), ("ltv", "spearman", True, True),
         ("ltv", "gini_normalised", True, True), ("churn", "ece", False, False)]
SEEDS = (42, 7, 2026)


@dataclass(frozen=True)
class Shop:
    """A shop of the harness: CDNOW, or a generated shop of one shape, size, seed and period."""

    key: str
    customers: int  # generated customers (CDNOW: 0, the file decides)
    seed: int
    start: str
    end: str
    as_of: str
    shape: str = "default"
    ltv_days: int | None = None  # None: the config's
    total_tolerance: float = 0.10

    @property
    def name(self) -> str:
        """Label for tables."""
        if self.key == "cdnow":
            return "CDNOW"
        months = round((np.datetime64(self.as_of) - np.datetime64(self.start)).astype(int) / 30.44)
        return f"{self.shape} {self.customers // 1000}k, {months} m before as_of"


CDNOW_SHOP = Shop("cdnow", 0, 0, "1997-01-01", "1998-06-30", CDNOW_AS_OF, "cdnow", 181, TOTAL_TOLERANCE)
# Sizes 5k-100k, 12-36 months of history before as_of, weak and strong seasons, wholesale buyers,
# returns and cancellations, invoices of many lines; every outcome window is observed in full.
SHOPS = [
    CDNOW_SHOP,
    Shop("default_30k", 30_000, 101, "2022-01-01", "2024-12-31", "2024-01-01"),
    Shop("default_10k", 10_000, 202, "2021-07-01", "2024-06-30", "2023-07-01"),
    Shop("short_20k", 20_000, 303, "2022-09-01", "2024-12-31", "2024-01-01"),  # 16 months
    Shop("gift_8k", 8_000, 404, "2022-12-01", "2024-12-31", "2024-07-01", "gift", 180),
    # 12 months of history: a year-long LTV horizon would leave no training cut-off, so half a year.
    Shop("flat_60k", 60_000, 505, "2023-01-01", "2024-12-31", "2024-01-01", "flat", 180),
    Shop("wholesale_5k", 5_000, 606, "2021-01-01", "2024-12-31", "2024-01-01", "wholesale"),  # 36 months
]


def _set(section: str, **values: Any) -> Callable[[Config], Config]:
    def change(config: Config) -> Config:
        part = getattr(config, section).model_copy(update=values)
        return config.model_copy(update={section: part})
    return change


def _exclude_bg(config: Config) -> Config:
    from features.clv import bg_feature_columns

    horizons = sorted(set(config.horizons.model_dump().values()))
    excluded = [*config.training.exclude_features, *bg_feature_columns(horizons)]
    return _set("training", exclude_features=excluded, bgnbd_offset=False,
                ltv_models=[m for m in config.training.ltv_models if "bgnbd" not in m] or ["tweedie", "hurdle"])(config)


def _target_plans(cutoffs: int, step_days: int, *names: str) -> Callable[[Config], Config]:
    """The named targets on their own cut-off plan (training.target_cutoffs); the others as they are."""
    def change(config: Config) -> Config:
        plans = {**config.training.target_cutoffs,
                 **{name: {"cutoffs": cutoffs, "cutoff_step_days": step_days} for name in names}}
        return _set("training", target_cutoffs=TrainingConfig.model_validate(
            {"target_cutoffs": plans}).target_cutoffs)(config)
    return change


def _shared_plan(*names: str) -> Callable[[Config], Config]:
    """The named targets back on the shared cut-off plan (training.cutoffs, cutoff_step_days)."""
    def change(config: Config) -> Config:
        plans = {k: v for k, v in config.training.target_cutoffs.items() if k not in names}
        return _set("training", target_cutoffs=plans)(config)
    return change


def _last_year_window(config: Config) -> Config:
    """Per-customer columns of last year's LTV window (features.last_year_days = [LTV horizon]); none
    where that horizon is a year or more (the window would be spend_365d)."""
    h = config.horizons.ltv_days
    return _set("features", last_year_days=[h] if h < 365 else [])(config)


# Ablation steps: name -> (what changes, the change). "shipped" is the settings as they are.
VARIANTS: dict[str, tuple[str, Callable[[Config], Config]]] = {
    "shipped": ("the defaults", lambda c: c),
    "calibration_none": ("raw classifier scores", _set("training", calibration="none")),
    "calibration_isotonic": ("isotonic calibration", _set("training", calibration="isotonic")),
    "calibration_logistic": ("logistic calibration", _set("training", calibration="logistic")),
    "cutoffs_8x30": ("8 cut-offs 30 days apart", _set("training", cutoffs=8)),
    "cutoffs_6x60": ("6 cut-offs 60 days apart", _set("training", cutoffs=6, cutoff_step_days=60)),
    "churn_8x30": ("churn alone on 8 cut-offs 30 days apart", _target_plans(8, 30, "churn")),
    "repurchase_8x30": ("repurchase alone on 8 cut-offs 30 days apart", _target_plans(8, 30, "repurchase")),
    "classifiers_8x30": ("churn and repurchase on 8 cut-offs 30 days apart, LTV as shipped",
                         _target_plans(8, 30, "churn", "repurchase")),
    "last_year": ("also a cut-off a year before as_of (last year's coming window)",
                  _set("training", last_year_cutoff=True)),
    "last_year_season": ("the year-before cut-off and season features",
                         lambda c: _set("features", season=True)(_set("training", last_year_cutoff=True)(c))),
    "last_year_window": ("each customer's own orders and spend in last year's LTV window (features.last_year_days)",
                         _last_year_window),
    "last_year_window_cutoff": ("those columns and a cut-off a year before as_of",
                                lambda c: _last_year_window(_set("training", last_year_cutoff=True)(c))),
    "ltv_last_year_level": ("LTV level times BG/NBD + GG's miss over the same window a year before as_of",
                            _set("training", ltv_last_year_level=True)),
    "ltv_level_free_rounds": ("LTV Tweedie rounds kept by the level-free loss over the gap",
                              _set("training", ltv_gap_rounds="level_free")),
    "ltv_level_free_if_none": ("LTV: the level-free loss only where the loss keeps no round of the offset model",
                               _set("training", ltv_gap_rounds="level_free_if_none")),
    "classifier_margin": ("classifier without the offset only by a clear log-loss margin",
                          _set("training", classifier_choice="margin")),
    "repurchase_shared": ("repurchase on the shared 4 cut-offs 30 days apart (before)", _shared_plan("repurchase")),
    "validation_2": ("choose on 2 validation cut-offs (5 in all)", _set("training", cutoffs=5, validation_cutoffs=2)),
    "no_offset": ("no BG/NBD offset candidates", _set("training", bgnbd_offset=False)),
    "no_bg": ("no BG/NBD offset and no bg_* columns", _exclude_bg),
    "season": ("season features", _set("features", season=True)),
    "ltv_tweedie": ("LTV: Tweedie only", _set("training", ltv_models=["tweedie"])),
    "ltv_hurdle": ("LTV: hurdle only", _set("training", ltv_models=["hurdle"])),
    "ltv_offset": ("LTV: Tweedie from the BG/NBD offset only", _set("training", ltv_models=["tweedie_bgnbd_offset"])),
    "ltv_no_bgnbd_gg": ("LTV: BG/NBD + GG itself not a candidate",
                        _set("training", ltv_models=["tweedie", "hurdle", "tweedie_bgnbd_offset"])),
    "ltv_validation_choice": ("LTV: chosen on the validation cut-off", _set("training", ltv_choice="validation")),
    "ltv_level_gap": ("LTV level: the one closest over the gap", _set("training", ltv_level="gap")),
    "bag_1": ("one booster per chosen model, no seed bagging (before)", _set("training", bag_members=1)),
    "bag_3": ("seed bagging: each chosen model the average of 3 boosters", _set("training", bag_members=3)),
    "bag_5": ("seed bagging: each chosen model the average of 5 boosters", _set("training", bag_members=5)),
}


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


def _shop_orders(shop: Shop) -> Path:
    if shop.key == "cdnow":
        return CDNOW
    folder = lifetag_home() / "bench" / f"holdout_{shop.shape}_{shop.customers}_{shop.seed}_{shop.start}_{shop.end}"
    extra = {} if shop.shape == "default" else {"shape": shop.shape}
    ensure_generated(folder, shop.customers, shop.seed, start=shop.start, end=shop.end, **extra)
    return folder / "orders.parquet"


def _shop_config(shop: Shop) -> Config:
    config = cdnow_config() if shop.key == "cdnow" else load_config(None)
    if shop.ltv_days:
        config.horizons.ltv_days = shop.ltv_days
    return config


def run_one(shop: Shop, variant: str, seed: int, trials: int) -> dict[str, Any]:
    """One training and true-holdout comparison; a JSON-ready record of every figure."""
    config = VARIANTS[variant][1](_shop_config(shop))
    config.training.seed = seed
    began = time.perf_counter()
    result = holdout_comparison(_shop_orders(shop), config, shop.as_of, trials=trials)
    chosen = {name: r.chosen or ("fallback" if r.fallback_reason else r.model.kind)
              for name, r in result.train.results.items()}
    return {"shop": shop.key, "variant": variant, "seed": seed, "trials": trials, "customers": result.customers,
            "seconds": time.perf_counter() - began, "metrics": result.metrics,
            "calibrations": result.calibrations, "chosen": chosen}


def code_hash() -> str:
    """A hash of the code a run depends on: any change there makes earlier runs stale."""
    digest = hashlib.sha256()
    for folder in ("configs", "features", "training", "serving"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                digest.update(path.relative_to(ROOT).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _runs_file() -> Path:
    return lifetag_home() / "bench" / "holdout" / "runs.jsonl"


def _load_runs(code: str) -> dict[tuple, dict[str, Any]]:
    path, runs = _runs_file(), {}
    if path.exists():
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("code") == code:
                runs[(record["shop"], record["variant"], record["seed"], record["trials"])] = record
    return runs


def _save_runs(runs: list[dict[str, Any]]) -> None:
    """Keep every stored line of other code versions, replace this version's, atomically."""
    path = _runs_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    keep = []
    if path.exists():
        keys = {(r["code"], r["shop"], r["variant"], r["seed"], r["trials"]) for r in runs}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if (record.get("code"), record["shop"], record["variant"], record["seed"], record["trials"]) not in keys:
                keep.append(line)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".runs.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write("\n".join(keep + [json.dumps(r) for r in runs]) + "\n")
    os.replace(tmp, path)


def _worker(shop: Shop, variant: str, seed: int, trials: int) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_one(shop, variant, seed, trials)


def run_harness(shops: list[Shop], variants: list[str], seeds: tuple[int, ...], trials: int, jobs: int,
                fresh: bool, console: Console) -> list[dict[str, Any]]:
    """Every (shop, variant, seed) run, reusing stored runs of the same code; returns them all."""
    code = code_hash()
    stored = {} if fresh else _load_runs(code)
    plan = [(shop, variant, seed) for shop in shops for variant in variants for seed in seeds]
    todo = [p for p in plan if (p[0].key, p[1], p[2], trials) not in stored]
    console.print(f"{len(plan)} runs, {len(plan) - len(todo)} reused (code {code}), {len(todo)} to do on {jobs} job(s)")
    for shop in {p[0] for p in todo}:
        _shop_orders(shop)  # generate once, before the workers race for it
    done: list[dict[str, Any]] = []
    if todo:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            futures = {pool.submit(_worker, shop, variant, seed, trials): (shop, variant, seed)
                       for shop, variant, seed in todo}
            for future in as_completed(futures):
                shop, variant, seed = futures[future]
                record = {**future.result(), "code": code}
                done.append(record)
                stored[(shop.key, variant, seed, trials)] = record
                console.print(f"  {shop.key} {variant} seed {seed}: {record['seconds']:.0f} s")
                _save_runs(done)
    return [stored[(p[0].key, p[1], p[2], trials)] for p in plan]


def _value(run: dict[str, Any], target: str, model: str, metric: str) -> float:
    return float(run["metrics"][target][model].get(metric, np.nan))


def goal_rows(runs: list[dict[str, Any]], variant: str = "shipped") -> list[dict[str, Any]]:
    """Per shop and goal: lifetag's mean and seed spread, BG/NBD's value, the gap and whether the goal is met."""
    rows = []
    by_shop: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run["variant"] == variant:
            by_shop.setdefault(run["shop"], []).append(run)
    for shop, shop_runs in by_shop.items():
        tolerance = next((s.total_tolerance for s in SHOPS if s.key == shop), 0.10)
        for target, metric, higher, margin in GOALS:
            ours = np.array([_value(r, target, "lifetag", metric) for r in shop_runs])
            theirs = _value(shop_runs[0], target, "bgnbd", metric)
            spread = float(ours.max() - ours.min()) if len(ours) > 1 else 0.0
            gap = float(ours.mean() - theirs) * (1 if higher else -1)
            met = gap > (spread if margin else 0.0) or (not margin and gap >= 0)
            rows.append({"shop": shop, "goal": f"{target} {metric}", "lifetag": float(ours.mean()), "spread": spread,
                         "bgnbd": theirs, "gap": gap, "met": bool(met)})
        ratios = np.array([_value(r, "ltv", "lifetag", "total_ratio") for r in shop_runs])
        rows.append({"shop": shop, "goal": "ltv total_ratio", "lifetag": float(ratios.mean()),
                     "spread": float(ratios.max() - ratios.min()), "bgnbd": _value(shop_runs[0], "ltv", "bgnbd",
                                                                                     "total_ratio"),
                     "gap": float(abs(ratios.mean() - 1)), "met": bool(abs(ratios.mean() - 1) <= tolerance)})
    return rows


def _shop_name(key: str) -> str:
    return next((s.name for s in SHOPS if s.key == key), key)


def _pivot(rows: list[dict[str, Any]], row_key: str, column_key: str,
           cell: Callable[[dict[str, Any]], str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Long rows as a grid: the column names, and each row's name with one formatted cell per column."""
    columns = list(dict.fromkeys(r[column_key] for r in rows))
    grid = []
    for name in dict.fromkeys(r[row_key] for r in rows):
        by_column = {r[column_key]: r for r in rows if r[row_key] == name}
        grid.append((name, [cell(by_column[c]) for c in columns]))
    return columns, grid


def goal_table(runs: list[dict[str, Any]], variant: str = "shipped") -> Table:
    """Lifetag (mean +- half the seed spread) against BG/NBD per shop and goal, met or not."""
    rows = goal_rows(runs, variant)
    table = Table(title=f"Goals ({variant}): lifetag mean over seeds \\[spread]  / BG/NBD + GG; * = met")
    table.add_column("shop")
    goals, grid = _pivot(rows, "shop", "goal",
                         lambda r: f"{'*' if r['met'] else ' '}{r['lifetag']:.3f} [{r['spread']:.3f}] / {r['bgnbd']:.3f}")
    for goal in goals:
        table.add_column(goal, justify="right")
    for shop, cells in grid:
        table.add_row(_shop_name(shop), *cells)
    met = sum(r["met"] for r in rows)
    table.caption = f"{met} of {len(rows)} goals met"
    return table


ABLATION_METRICS = [("churn", "roc_auc", True), ("repurchase", "roc_auc", True), ("ltv", "spearman", True),
                    ("ltv", "gini_normalised", True), ("churn", "ece", False)]


def ablation_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and metric: the mean change against `shipped` over shops (on the same seeds as the
    variant's runs), and on how many shops it wins, or loses by more than the shipped settings' seed
    spread there (max - min over all its seeds)."""
    def mean_of(sel: list[dict[str, Any]], target: str, metric: str) -> float:
        return float(np.mean([_value(r, target, "lifetag", metric) for r in sel]))

    rows = []
    shops = list(dict.fromkeys(r["shop"] for r in runs))
    for variant in dict.fromkeys(r["variant"] for r in runs):
        if variant == "shipped":
            continue
        for target, metric, higher in ABLATION_METRICS:
            deltas, wins, losses = [], 0, 0
            for shop in shops:
                mine = [r for r in runs if r["shop"] == shop and r["variant"] == variant]
                shipped = [r for r in runs if r["shop"] == shop and r["variant"] == "shipped"]
                same_seeds = [r for r in shipped if r["seed"] in {m["seed"] for m in mine}]
                if not mine or not same_seeds:
                    continue
                values = [_value(r, target, "lifetag", metric) for r in shipped]
                spread = max(values) - min(values)
                delta = (mean_of(mine, target, metric) - mean_of(same_seeds, target, metric)) * (1 if higher else -1)
                deltas.append(delta)
                wins += delta > 1e-12
                losses += delta < -max(spread, 1e-9)
            if deltas:
                rows.append({"variant": variant, "metric": f"{target} {metric}", "mean_delta": float(np.mean(deltas)),
                             "shops": len(deltas), "wins": wins, "losses_beyond_spread": losses})
    return rows


def ablation_table(runs: list[dict[str, Any]]) -> Table:
    """Each variant against the shipped settings: mean change (better is positive) and wins / losses."""
    rows = ablation_rows(runs)
    table = Table(title="Ablation against shipped: mean change over shops (+ is better); wins/shops, "
                        "losses beyond the seed spread")
    table.add_column("variant")
    metrics, grid = _pivot(rows, "variant", "metric",
                           lambda r: f"{r['mean_delta']:+.4f} {r['wins']}/{r['shops']} -{r['losses_beyond_spread']}")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for variant, cells in grid:
        table.add_row(f"{variant}: {VARIANTS[variant][0]}", *cells)
    return table


def calibration_table(runs: list[dict[str, Any]], variant: str = "shipped") -> Table:
    """The shipped churn model under each calibration: ranking, ECE and ties, mean over seeds."""
    table = Table(title=f"Churn calibration at as_of ({variant} model): AUC / ECE / largest tie share")
    table.add_column("shop")
    for method in ("none", "isotonic", "logistic"):
        table.add_column(method, justify="right")
    table.add_column("BG/NBD", justify="right")
    for shop in dict.fromkeys(r["shop"] for r in runs):
        sel = [r for r in runs if r["shop"] == shop and r["variant"] == variant and r["calibrations"].get("churn")]
        if not sel:
            continue
        cells = []
        for method in ("none", "isotonic", "logistic"):
            m = {k: np.mean([r["calibrations"]["churn"][method][k] for r in sel])
                 for k in ("roc_auc", "ece", "largest_tie_share")}
            cells.append(f"{m['roc_auc']:.3f} / {m['ece']:.3f} / {m['largest_tie_share']:.3f}")
        bg = sel[0]["metrics"]["churn"]["bgnbd"]
        table.add_row(_shop_name(shop), *cells, f"{bg['roc_auc']:.3f} / {bg['ece']:.3f}")
    return table


def markdown(runs: list[dict[str, Any]]) -> str:
    """The goal table (shipped variant) and, with other variants, the ablation table, as Markdown."""
    rows = goal_rows(runs)

    def goal_cell(r: dict[str, Any]) -> str:
        ours = f"{r['lifetag']:.3f}" + (f" ±{r['spread'] / 2:.3f}" if r["spread"] else "")
        return f"{'**' + ours + '**' if r['met'] else ours} / {r['bgnbd']:.3f}"

    goals, grid = _pivot(rows, "shop", "goal", goal_cell)
    lines = ["| shop | " + " | ".join(goals) + " |", "|---|" + "---|" * len(goals)]
    lines += [f"| {_shop_name(shop)} | " + " | ".join(cells) + " |" for shop, cells in grid]
    lines.append(f"\n{sum(r['met'] for r in rows)} of {len(rows)} goals met (bold).")
    ablation = ablation_rows(runs)
    if ablation:
        metrics, grid = _pivot(ablation, "variant", "metric", lambda x: f"{x['mean_delta']:+.4f} ({x['wins']}/"
                               f"{x['shops']} won, {x['losses_beyond_spread']} lost)")
        lines += ["", "| step (against the shipped settings) | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        lines += [f"| {VARIANTS[variant][0]} | " + " | ".join(cells) + " |" for variant, cells in grid]
    return "\n".join(lines)


def _cdnow_table(title: str, result: Holdout) -> Table:
    table = Table(title=title)
    for column in ("target", "metric", "lifetag", "BG/NBD + GG", "gap"):
        table.add_column(column, justify="left" if column in ("target", "metric") else "right")
    for row in result.rows():
        table.add_row(row["target"], row["metric"], f"{row['lifetag']:.4f}", f"{row['bgnbd']:.4f}", f"{row['gap']:+.4f}")
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the CDNOW acceptance or the harness and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=None, help="Optuna trials per target (default: config; "
                                                                  "the harness: 0)")
    parser.add_argument("--harness", action="store_true", help="every shop over several training seeds")
    parser.add_argument("--ablation", action="store_true", help="with --harness: every ablation step too")
    parser.add_argument("--shops", nargs="*", default=None, help=f"harness shops (default all: "
                                                                 f"{' '.join(s.key for s in SHOPS)})")
    parser.add_argument("--variants", nargs="*", default=None, help=f"harness variants ({' '.join(VARIANTS)})")
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS), help="training seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (each fits on one core)")
    parser.add_argument("--fresh", action="store_true", help="ignore stored runs of the same code")
    parser.add_argument("--stored", action="store_true", help="only print the tables of every stored run of this "
                                                              "code (all seeds and variants)")
    parser.add_argument("--json", type=Path, default=None, help="also write the harness's rows here")
    parser.add_argument("--markdown", action="store_true", help="also print the tables as Markdown")
    parser.add_argument("--check", action="store_true", help="exit 1 when a CDNOW acceptance criterion fails")
    args = parser.parse_args(argv)
    console = Console(width=220)
    if args.harness:
        unknown = [s for s in (args.shops or []) if s not in {x.key for x in SHOPS}] + \
                  [v for v in (args.variants or []) if v not in VARIANTS]
        if unknown:
            parser.error(f"unknown shop or variant: {', '.join(unknown)}")
        shops = [s for s in SHOPS if args.shops is None or s.key in args.shops]
        variants = args.variants or (list(VARIANTS) if args.ablation else ["shipped"])
        if "shipped" not in variants:
            variants = ["shipped", *variants]
        trials = 0 if args.trials is None else args.trials
        if args.stored:
            runs = [r for r in _load_runs(code_hash()).values() if r["trials"] == trials
                    and r["shop"] in {s.key for s in shops} and (args.variants is None or r["variant"] in variants)]
            variants = list(dict.fromkeys(r["variant"] for r in runs))
        else:
            runs = run_harness(shops, variants, tuple(args.seeds), trials, args.jobs, args.fresh, console)
        console.print(goal_table(runs))
        console.print(calibration_table(runs))
        if len(variants) > 1:
            console.print(ablation_table(runs))
        if args.markdown:
            print(markdown(runs))
        if args.json:
            args.json.write_text(json.dumps({"goals": goal_rows(runs), "ablation": ablation_rows(runs)}, indent=1))
        return 0
    began = time.perf_counter()
    cdnow = run_cdnow(args.trials)
    models = ", ".join(f"{n}: {r.chosen or r.model.kind}" for n, r in cdnow.train.results.items())
    console.print(_cdnow_table(f"CDNOW, as_of {CDNOW_AS_OF}, {cdnow.customers:,} customers, outcomes to 1998-06-30 "
                               f"({time.perf_counter() - began:.0f} s; {models})", cdnow))
    failures = acceptance_failures(cdnow)
    console.print("CDNOW acceptance: " + ("all criteria met" if not failures else "FAILED: " + "; ".join(failures)))
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
