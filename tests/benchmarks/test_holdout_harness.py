"""The evaluation harness: its verdicts on made-up runs, and one real run on a small generated shop."""
from __future__ import annotations

import copy

import pytest

from benchmarks.holdout import SHOPS, VARIANTS, Shop, ablation_rows, goal_rows, run_one


def _run(shop: str, variant: str, seed: int, churn_auc: float, bg_auc: float = 0.80, ece: float = 0.02,
         ratio: float = 1.0) -> dict:
    classifier = {"roc_auc": churn_auc, "ece": ece}
    ltv = {"spearman": 0.6, "gini_normalised": 0.7, "total_ratio": ratio}
    return {"shop": shop, "variant": variant, "seed": seed,
            "metrics": {"churn": {"lifetag": classifier, "bgnbd": {"roc_auc": bg_auc, "ece": 0.03}},
                        "repurchase": {"lifetag": {"roc_auc": 0.8}, "bgnbd": {"roc_auc": 0.7}},
                        "ltv": {"lifetag": ltv, "bgnbd": {**ltv, "spearman": 0.5, "gini_normalised": 0.6}}}}


def _goal(rows: list[dict], shop: str, goal: str) -> dict:
    return next(r for r in rows if r["shop"] == shop and r["goal"] == goal)


def test_a_goal_is_met_only_beyond_the_spread_between_seeds() -> None:
    clear = [_run("a", "shipped", s, auc) for s, auc in ((1, 0.83), (2, 0.84))]  # +0.035, spread 0.01
    noisy = [_run("b", "shipped", s, auc) for s, auc in ((1, 0.79), (2, 0.83))]  # +0.01, spread 0.04
    rows = goal_rows(clear + noisy)
    assert _goal(rows, "a", "churn roc_auc")["met"]
    assert not _goal(rows, "b", "churn roc_auc")["met"]
    assert _goal(rows, "b", "churn roc_auc")["spread"] == pytest.approx(0.04)


def test_lower_is_better_for_ece_and_the_ltv_total_must_be_within_the_shops_tolerance() -> None:
    rows = goal_rows([_run("a", "shipped", 1, 0.9, ece=0.04, ratio=1.12), _run("b", "shipped", 1, 0.9, ratio=0.95)])
    assert not _goal(rows, "a", "churn ece")["met"]  # 0.04 vs BG/NBD's 0.03
    assert _goal(rows, "b", "churn ece")["met"]
    assert not _goal(rows, "a", "ltv total_ratio")["met"]  # 12% off, generated shops allow 10%
    assert _goal(rows, "b", "ltv total_ratio")["met"]


def test_the_ablation_counts_wins_and_losses_beyond_the_shipped_spread_per_shop() -> None:
    runs = [_run("a", "shipped", 1, 0.80), _run("a", "shipped", 2, 0.81),
            _run("b", "shipped", 1, 0.80), _run("b", "shipped", 2, 0.80),
            _run("a", "no_offset", 1, 0.805), _run("a", "no_offset", 2, 0.805),  # inside a's spread 0.01
            _run("b", "no_offset", 1, 0.78), _run("b", "no_offset", 2, 0.78)]   # b: a clear loss
    row = next(r for r in ablation_rows(runs) if r["variant"] == "no_offset" and r["metric"] == "churn roc_auc")
    assert row["shops"] == 2 and row["wins"] == 0 and row["losses_beyond_spread"] == 1
    assert row["mean_delta"] == pytest.approx(((0.805 - 0.805) + (0.78 - 0.80)) / 2)


def test_every_shop_and_variant_of_the_harness_is_well_formed() -> None:
    generated = [s for s in SHOPS if s.key != "cdnow"]
    assert len(generated) >= 5
    assert {s.shape for s in generated} >= {"default", "gift", "flat", "wholesale"}
    assert min(s.customers for s in generated) >= 5_000 and max(s.customers for s in generated) <= 100_000
    assert len({s.key for s in SHOPS}) == len(SHOPS)
    assert "shipped" in VARIANTS


@pytest.mark.slow
def test_one_real_run_compares_with_bgnbd_whose_figures_do_not_depend_on_the_training_seed() -> None:
    shop = Shop("tiny", 3_000, 9, "2022-01-01", "2023-12-31", "2023-06-01", ltv_days=180)
    first, second = (run_one(shop, "shipped", seed, trials=0) for seed in (1, 2))
    for target in ("churn", "repurchase", "ltv"):
        assert first["metrics"][target]["bgnbd"] == second["metrics"][target]["bgnbd"]
        assert 0.5 < first["metrics"][target]["lifetag"].get("roc_auc", first["metrics"][target]["lifetag"].get(
            "gini_normalised", 0.6)) <= 1
    assert set(first["calibrations"]["churn"]) == {"none", "isotonic", "logistic"}
    assert copy.deepcopy(first)["customers"] > 1_000


def test_the_cut_off_plan_variants_move_only_the_targets_they_name() -> None:
    from benchmarks.holdout import _shop_config

    shipped = _shop_config(SHOPS[1]).training
    both = VARIANTS["classifiers_8x30"][1](_shop_config(SHOPS[1])).training
    before = VARIANTS["repurchase_shared"][1](_shop_config(SHOPS[1])).training
    for name in ("churn", "repurchase"):
        assert (both.cutoff_plan(name).cutoffs, both.cutoff_plan(name).cutoff_step_days) == (8, 30)
    assert both.cutoff_plan("ltv") == shipped.cutoff_plan("ltv")
    assert before.cutoff_plan("repurchase") == before.cutoff_plan("churn") == shipped.cutoff_plan("churn")
    assert VARIANTS["last_year"][1](_shop_config(SHOPS[1])).training.cutoff_plan("churn").last_year
    assert VARIANTS["classifier_margin"][1](_shop_config(SHOPS[1])).training.classifier_choice == "margin"


def test_the_bagging_variants_set_the_member_count_and_shipped_bags_three() -> None:
    from benchmarks.holdout import _shop_config

    members = {name: {VARIANTS[name][1](_shop_config(shop)).training.bag_members for shop in SHOPS[:2]}
               for name in ("shipped", "bag_1", "bag_3", "bag_5")}
    assert members == {"shipped": {3}, "bag_1": {1}, "bag_3": {3}, "bag_5": {5}}
