"""Per-target cut-off plans (training.target_cutoffs): each target's rolling cut-offs, planned and trained on."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from configs.errors import LifetagError
from configs.schema import Config, load_config
from training.dataset import plan_cutoffs, targets
from training.pipeline import fit_bundle
from support import generated_shop

AS_OF = pd.Timestamp("2025-01-01")
FIRST_ORDER = pd.Timestamp("2023-01-01")


def _with_plans(config: Config, **plans: dict[str, int]) -> Config:
    training = config.training.model_validate({**config.training.model_dump(), "target_cutoffs": plans})
    return config.model_copy(update={"training": training})


def test_a_target_with_its_own_plan_gets_its_cut_offs_and_the_others_keep_the_shared_plan(config: Config) -> None:
    planned = _with_plans(config, repurchase={"cutoffs": 8, "cutoff_step_days": 30})

    repurchase = plan_cutoffs(AS_OF, 30, FIRST_ORDER, planned, "repurchase")
    churn = plan_cutoffs(AS_OF, 90, FIRST_ORDER, planned, "churn")

    assert len(repurchase) == 8 and repurchase[-1] == AS_OF - pd.Timedelta(days=30)
    assert all((b - a).days == 30 for a, b in zip(repurchase, repurchase[1:]))
    assert churn == plan_cutoffs(AS_OF, 90, FIRST_ORDER, config, "churn") == plan_cutoffs(AS_OF, 90, FIRST_ORDER, config)
    assert len(churn) == config.training.cutoffs


def test_a_target_plan_still_drops_cut_offs_without_enough_history(config: Config) -> None:
    planned = _with_plans(config, ltv={"cutoffs": 12, "cutoff_step_days": 60})

    cutoffs = plan_cutoffs(AS_OF, 365, FIRST_ORDER, planned, "ltv")

    assert cutoffs and len(cutoffs) < 12
    assert min(cutoffs) >= FIRST_ORDER + pd.Timedelta(days=config.training.min_history_days)


def test_target_plans_are_read_from_a_config_file_and_a_plan_for_no_target_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("training:\n  target_cutoffs:\n    churn: {cutoffs: 6, cutoff_step_days: 45}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  target_cutoffs:\n    churnn: {cutoffs: 6, cutoff_step_days: 45}\n")

    plan = load_config(good).training.cutoff_plan("churn")

    assert (plan.cutoffs, plan.cutoff_step_days) == (6, 45)
    shipped = load_config(None).training
    assert set(shipped.target_cutoffs) == {"repurchase"}  # the others on the shared plan
    assert (shipped.cutoff_plan("repurchase").cutoffs, shipped.cutoff_plan("churn").cutoffs) == (8, shipped.cutoffs)
    with pytest.raises(LifetagError, match="churnn"):
        load_config(bad)


@pytest.mark.slow
def test_training_fits_each_target_on_its_own_cut_offs(config: Config, tmp_path_factory: pytest.TempPathFactory) -> None:
    shop = generated_shop(tmp_path_factory, 800, 3) / "orders.parquet"
    planned = _with_plans(config, repurchase={"cutoffs": 6, "cutoff_step_days": 20})

    trained = fit_bundle(shop, planned, as_of=AS_OF, trials=0)

    first = pd.read_parquet(shop, columns=["order_ts"])["order_ts"].min()
    for target in targets(planned):
        result = trained.results[target.name]
        assert result.cutoffs == plan_cutoffs(AS_OF, target.horizon_days, first, planned, target.name), target.name
    assert len(trained.results["repurchase"].cutoffs) == 6
    assert len(trained.results["churn"].cutoffs) == config.training.cutoffs


def test_the_last_year_cut_off_opens_last_years_coming_window_where_the_history_allows(config: Config) -> None:
    planned = _with_plans(config, churn={"cutoffs": 4, "cutoff_step_days": 30, "last_year": True})
    young = FIRST_ORDER + pd.Timedelta(days=400)  # less than a year (plus min_history_days) before as_of

    churn = plan_cutoffs(AS_OF, 90, FIRST_ORDER, planned, "churn")

    assert churn[0] == AS_OF - pd.Timedelta(days=365)
    assert churn[1:] == plan_cutoffs(AS_OF, 90, FIRST_ORDER, config, "churn")
    assert plan_cutoffs(AS_OF, 90, young, planned, "churn") == plan_cutoffs(AS_OF, 90, young, config, "churn")
    # A year-long horizon's latest cut-off already is a year before as_of: nothing is added twice.
    every = config.model_copy(update={"training": config.training.model_copy(update={"last_year_cutoff": True})})
    assert plan_cutoffs(AS_OF, 365, FIRST_ORDER, every, "ltv") == plan_cutoffs(AS_OF, 365, FIRST_ORDER, config, "ltv")
