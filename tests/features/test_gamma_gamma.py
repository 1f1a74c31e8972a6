"""Specification of the Gamma-Gamma spend model (features.gamma_gamma).

It reproduces the published CDNOW estimates, agrees with simulation from the model itself,
and refuses spend it cannot model, saying how many customers are affected and what to do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

# The CDNOW helpers (panel, 1/10th sample, calibration summary) live with the BG/NBD tests.
from test_bgnbd import cdnow_summary

from features.gamma_gamma import GammaGammaModel

# Published Gamma-Gamma estimates on the CDNOW calibration period (Fader, Hardie & Lee 2005;
# v is the paper's gamma).
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "v": 15.44}


def fitted_params(model: GammaGammaModel) -> dict[str, float]:
    return {"p": model.p_, "q": model.q_, "v": model.v_}


def model_with(p: float, q: float, v: float) -> GammaGammaModel:
    model = GammaGammaModel()
    model.p_, model.q_, model.v_ = p, q, v
    return model


# ---------------------------------------------------------------------------------------------
# The published benchmark
# ---------------------------------------------------------------------------------------------


def test_fit_reproduces_published_cdnow_estimates() -> None:
    # 2,357 customers of the 1/10th sample; monetary value is the mean spend of the repeat
    # purchase days in the calibration period (orders on one day summed, first day left out).
    summary = cdnow_summary(sample_only=True)

    model = GammaGammaModel().fit(summary["frequency"], summary["monetary_value"])

    assert model.n_customers_ == 946
    # Measured: p=6.2496, q=3.7442, v=15.4435; the published values are rounded.
    assert fitted_params(model) == pytest.approx(PUBLISHED_GAMMA_GAMMA, rel=0.002)


def test_full_cdnow_master_has_a_zero_spend_repeat_customer_that_must_be_excluded() -> None:
    summary = cdnow_summary(sample_only=False)

    with pytest.raises(ValueError, match=r"1 value\(s\) .*0\.0.*exclude those customers"):
        GammaGammaModel().fit(summary["frequency"], summary["monetary_value"])

    spends = summary[~((summary["frequency"] > 0) & (summary["monetary_value"] <= 0))]
    model = GammaGammaModel().fit(spends["frequency"], spends["monetary_value"])

    assert model.n_customers_ == 9450
    # Pinned from this implementation (regression guard); ten times the published sample.
    measured = {"p": 6.27536, "q": 3.62445, "v": 14.98369}
    assert fitted_params(model) == pytest.approx(measured, rel=1e-3)
    assert fitted_params(model) == pytest.approx(PUBLISHED_GAMMA_GAMMA, rel=0.05)


# ---------------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------------


def test_customers_without_repeat_purchases_get_the_population_mean() -> None:
    model = model_with(6.25, 3.74, 15.44)

    value = model.conditional_expected_average_value([0, 0, 0], [np.nan, 0.0, 99.0])

    assert value == pytest.approx([6.25 * 15.44 / 2.74] * 3)


def test_expected_value_weighs_own_spend_more_the_more_purchases_back_it() -> None:
    p, q, v = 6.25, 3.74, 15.44
    model = model_with(p, q, v)
    frequency = np.array([1, 2, 5, 20, 200])
    own_mean = np.full(frequency.shape, 60.0)

    value = model.conditional_expected_average_value(frequency, own_mean)

    population_mean = p * v / (q - 1)
    weight_on_population = (q - 1) / (p * frequency + q - 1)
    assert value == pytest.approx(
        weight_on_population * population_mean + (1 - weight_on_population) * own_mean
    )
    assert np.all(np.diff(value) > 0) and value[-1] == pytest.approx(60.0, rel=0.01)


def test_expected_value_is_infinite_where_the_posterior_mean_does_not_exist() -> None:
    model = model_with(0.1, 0.8, 10.0)

    value = model.conditional_expected_average_value([0, 1, 5], [np.nan, 20.0, 20.0])

    # q <= 1: no population mean; p*1 + q = 0.9 <= 1: none for one purchase either.
    assert value[0] == np.inf and value[1] == np.inf
    assert np.isfinite(value[2])


# ---------------------------------------------------------------------------------------------
# Simulation from the model with known parameters
# ---------------------------------------------------------------------------------------------

SIMULATION_PARAMS = (6.25, 3.74, 15.44)


@pytest.fixture(scope="module")
def simulated() -> dict[str, np.ndarray]:
    """Repeat customers drawn from the Gamma-Gamma story, plus one more purchase each."""
    p, q, v = SIMULATION_PARAMS
    rng = np.random.default_rng(7)
    n = 20_000
    frequency = rng.integers(1, 8, n)
    nu = rng.gamma(q, 1.0 / v, n)
    # The sum of x Gamma(p, nu) purchase values is Gamma(p x, nu).
    monetary_value = rng.gamma(p * frequency, 1.0 / nu) / frequency
    next_purchase = rng.gamma(p, 1.0 / nu)
    return {"frequency": frequency, "monetary_value": monetary_value, "next": next_purchase}


def test_expected_value_matches_the_next_simulated_purchase(
    simulated: dict[str, np.ndarray],
) -> None:
    model = model_with(*SIMULATION_PARAMS)

    predicted = model.conditional_expected_average_value(
        simulated["frequency"], simulated["monetary_value"]
    )

    for x in (1, 3, 7):
        residual = (simulated["next"] - predicted)[simulated["frequency"] == x]
        z = residual.sum() / np.sqrt(np.sum(residual**2))
        assert abs(z) < 4.0, f"frequency {x}: z = {z:.2f}"


@pytest.fixture(scope="module")
def fitted_on_simulation(simulated: dict[str, np.ndarray]) -> GammaGammaModel:
    return GammaGammaModel().fit(simulated["frequency"], simulated["monetary_value"])


def test_fit_recovers_the_simulation_parameters(fitted_on_simulation: GammaGammaModel) -> None:
    truth = dict(zip(("p", "q", "v"), SIMULATION_PARAMS))

    # Measured: p=6.54, q=3.72, v=14.6 from 20,000 customers.
    assert fitted_params(fitted_on_simulation) == pytest.approx(truth, rel=0.1)


def test_fit_ignores_customers_without_repeat_purchases_whatever_their_spend(
    simulated: dict[str, np.ndarray],
) -> None:
    head = {k: values[:2000] for k, values in simulated.items()}
    frequency = np.concatenate([head["frequency"], [0, 0, 0]])
    monetary_value = np.concatenate([head["monetary_value"], [np.nan, 0.0, -5.0]])

    with_extra = GammaGammaModel().fit(frequency, monetary_value)
    without = GammaGammaModel().fit(head["frequency"], head["monetary_value"])

    assert with_extra.n_customers_ == 2000
    assert fitted_params(with_extra) == pytest.approx(fitted_params(without), rel=1e-9)


def test_fit_does_not_depend_on_the_currency_unit(
    simulated: dict[str, np.ndarray], fitted_on_simulation: GammaGammaModel
) -> None:
    in_dollars = fitted_on_simulation
    in_cents = GammaGammaModel().fit(simulated["frequency"], 100.0 * simulated["monetary_value"])

    assert in_cents.p_ == pytest.approx(in_dollars.p_, rel=1e-5)
    assert in_cents.q_ == pytest.approx(in_dollars.q_, rel=1e-5)
    assert in_cents.v_ == pytest.approx(100.0 * in_dollars.v_, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Interface and input errors
# ---------------------------------------------------------------------------------------------


def test_follows_the_scikit_learn_estimator_contract() -> None:
    model = GammaGammaModel(penalizer=0.01)

    assert model.get_params() == {"penalizer": 0.01}
    assert clone(model).penalizer == 0.01
    with pytest.raises(NotFittedError):
        model.conditional_expected_average_value([1], [10.0])


def test_accepts_pandas_series() -> None:
    summary = pd.DataFrame({"frequency": [1, 2, 0], "monetary_value": [10.0, 12.0, np.nan]})
    model = model_with(*SIMULATION_PARAMS)

    value = model.conditional_expected_average_value(
        summary["frequency"], summary["monetary_value"]
    )

    assert isinstance(value, np.ndarray) and value.shape == (3,)


@pytest.mark.parametrize(
    ("frequency", "monetary_value", "message"),
    [
        (
            [1, 2, 3, 0],
            [0.0, -4.0, 10.0, 0.0],
            r"monetary_value: 2 value\(s\) \(positions 0, 1: 0\.0, -4\.0\) of customers with "
            r"repeat purchases are not positive.*exclude those customers.*or fix",
        ),
        ([1, 2], [np.nan, 3.0], r"monetary_value: 1 value\(s\)"),
        ([1, -2], [5.0, 3.0], r"frequency: 1 value\(s\) .* are not whole numbers >= 0"),
        ([1.5], [5.0], r"frequency: 1 value\(s\)"),
        ([1, 2], [5.0], r"lengths frequency=2, monetary_value=1"),
        ([0, 0], [np.nan, np.nan], r"at least one repeat purchase"),
    ],
    ids=["non-positive-spend", "missing-spend", "negative-frequency", "fractional-frequency",
         "lengths-differ", "no-repeat-customers"],
)
def test_fit_rejects_spend_it_cannot_model_naming_the_problem(
    frequency: list[float], monetary_value: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GammaGammaModel().fit(frequency, monetary_value)


def test_negative_penalizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="penalizer must be a finite number >= 0"):
        GammaGammaModel(penalizer=-0.5).fit([1], [5.0])
