"""Specification of the BG/NBD model (features.bgnbd).

It reproduces the published CDNOW benchmark, agrees with an independent numerical integral and
with simulation from the model itself, and rejects summaries that cannot be right.

The CDNOW helpers at the top (reading the panel, the 1/10th sample, the weekly calibration
summary) are shared with test_gamma_gamma.py.
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from features.bgnbd import BetaGeoModel

# The repository is checked out as <somewhere>/main next to <somewhere>/shared.
CDNOW_PATH = Path(__file__).resolve().parents[3] / "shared/data/cdnow/CDNOW_master.txt"
# Last day of the 39-week calibration period; the 39-week holdout runs to 1998-06-30.
CALIBRATION_END = pd.Timestamp("1997-09-30")
HOLDOUT_WEEKS = 39.0

# Published BG/NBD estimates for the CDNOW example of Fader, Hardie & Lee (2005).
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOG_LIKELIHOOD = -9582.4


# ---------------------------------------------------------------------------------------------
# CDNOW data
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def cdnow_purchases() -> pd.DataFrame:
    """The CDNOW panel as one row per customer and purchase day, with that day's spend.

    Several orders on one day count as one purchase (their dollar values are summed), which is
    how the published summaries were built.
    """
    if not CDNOW_PATH.is_file():
        pytest.fail(
            f"CDNOW panel not found at {CDNOW_PATH}. The tests expect the repository checked "
            "out as <dir>/main next to <dir>/shared, with shared/data/cdnow/CDNOW_master.txt."
        )
    orders = pd.read_csv(CDNOW_PATH, sep=r"\s+", dtype={"customer_id": int, "date": str})
    orders["date"] = pd.to_datetime(orders["date"], format="%Y%m%d")
    return orders.groupby(["customer_id", "date"], as_index=False)["dollar_value"].sum()


@lru_cache(maxsize=2)
def cdnow_summary(sample_only: bool) -> pd.DataFrame:
    """Per-customer calibration summary in weeks, plus what happened in the holdout.

    Columns: ``frequency`` (repeat purchase days up to 1997-09-30), ``recency`` and ``T`` in
    weeks from the first purchase to the last one and to 1997-09-30, ``monetary_value`` (mean
    spend of the repeat purchase days in calibration, NaN without any) and
    ``holdout_purchases`` (purchase days from 1997-10-01 to 1998-06-30). ``T`` counts to the
    last calibration day, 1997-09-30, not to the day after: that convention reproduces the
    published log-likelihood (-9582.43; counting to 1997-10-01 gives -9589.89).

    ``sample_only`` keeps the 2,357 customers of the 1/10th systematic sample that the
    published estimates were made on.
    """
    purchases = cdnow_purchases()
    if sample_only:
        purchases = purchases[purchases["customer_id"].isin(cdnow_sample_ids())]
    calibration = purchases[purchases["date"] <= CALIBRATION_END]
    dates = calibration.groupby("customer_id")["date"]
    first, last = dates.min(), dates.max()
    summary = pd.DataFrame(
        {
            "frequency": dates.size() - 1,
            "recency": (last - first).dt.days / 7.0,
            "T": (CALIBRATION_END - first).dt.days / 7.0,
        }
    )
    is_repeat = calibration["date"] > dates.transform("min")
    repeat_spend = calibration[is_repeat].groupby("customer_id")["dollar_value"].mean()
    summary["monetary_value"] = repeat_spend.reindex(summary.index)
    holdout = purchases[purchases["date"] > CALIBRATION_END].groupby("customer_id").size()
    summary["holdout_purchases"] = holdout.reindex(summary.index, fill_value=0)
    return summary


def cdnow_sample_ids() -> np.ndarray:
    """Master customer ids of the 1/10th systematic sample (CDNOW_sample.txt, 2,357 customers).

    The published BG/NBD and Gamma-Gamma estimates were made on this sample, not on the full
    master file, and which customers it holds cannot be derived from the master file. The ids
    were read from the first column of Hardie's CDNOW_sample.txt (6,919 rows, exactly the rows
    these customers have in the master file; with them both published fits are reproduced to
    four digits) and are stored here as gaps between consecutive sorted ids, starting from 0.
    """
    ids = np.cumsum(np.array(_CDNOW_SAMPLE_ID_GAPS.split(), dtype=np.int64))
    assert ids.size == 2357 and ids[0] == 4 and ids[-1] == 23569, "sample id list is corrupt"
    return ids


@pytest.fixture(scope="module")
def cdnow_sample() -> pd.DataFrame:
    return cdnow_summary(sample_only=True)


@pytest.fixture(scope="module")
def cdnow_master() -> pd.DataFrame:
    return cdnow_summary(sample_only=False)


@pytest.fixture(scope="module")
def sample_model(cdnow_sample: pd.DataFrame) -> BetaGeoModel:
    return fit_bgnbd(cdnow_sample)


@pytest.fixture(scope="module")
def master_model(cdnow_master: pd.DataFrame) -> BetaGeoModel:
    return fit_bgnbd(cdnow_master)


def fit_bgnbd(summary: pd.DataFrame, **kwargs: float) -> BetaGeoModel:
    return BetaGeoModel(**kwargs).fit(summary["frequency"], summary["recency"], summary["T"])


def fitted_params(model: BetaGeoModel) -> dict[str, float]:
    return {"r": model.r_, "alpha": model.alpha_, "a": model.a_, "b": model.b_}


# ---------------------------------------------------------------------------------------------
# The published benchmark
# ---------------------------------------------------------------------------------------------


def test_fit_reproduces_published_cdnow_estimates(sample_model: BetaGeoModel) -> None:
    model = sample_model

    assert model.n_customers_ == 2357
    # Measured: r=0.24259, alpha=4.41360, a=0.79292, b=2.42591, log-likelihood -9582.429. The
    # published values are rounded to three decimals, which alone is up to 0.2% of r.
    assert fitted_params(model) == pytest.approx(PUBLISHED_BGNBD, rel=0.003)
    assert model.log_likelihood_ == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.05)


def test_fit_on_full_cdnow_master_is_close_to_the_sample_estimates(
    cdnow_master: pd.DataFrame,
) -> None:
    start = time.perf_counter()
    model = fit_bgnbd(cdnow_master)
    seconds = time.perf_counter() - start

    assert model.n_customers_ == 23570
    # Pinned from this implementation (regression guard); all 23,570 customers.
    measured = {"r": 0.25162, "alpha": 4.7889, "a": 0.72343, "b": 2.16109}
    assert fitted_params(model) == pytest.approx(measured, rel=1e-3)
    assert model.log_likelihood_ == pytest.approx(-95368.44, abs=0.1)
    # Ten times the customers of the published sample: within its sampling error, not equal.
    assert fitted_params(model) == pytest.approx(PUBLISHED_BGNBD, rel=0.12)
    assert seconds < 5.0, f"fitting 23,570 customers took {seconds:.1f} s"


@pytest.mark.parametrize(
    ("sample_only", "actual", "predicted"),
    [(True, 1882, 1653.4), (False, 19684, 16873.7)],
    ids=["sample", "master"],
)
def test_holdout_forecast_undershoots_actual_repeat_purchases_by_about_an_eighth(
    sample_only: bool, actual: int, predicted: float, request: pytest.FixtureRequest
) -> None:
    summary = cdnow_summary(sample_only)
    model = request.getfixturevalue("sample_model" if sample_only else "master_model")

    forecast = model.expected_purchases(
        HOLDOUT_WEEKS, summary["frequency"], summary["recency"], summary["T"]
    ).sum()

    # Purchase days in 1997-10-01..1998-06-30 (the sample has 1,959 order rows there).
    assert summary["holdout_purchases"].sum() == actual
    assert forecast == pytest.approx(predicted, rel=1e-3)
    # Measured ratios 0.879 (sample) and 0.857 (master): the model under-forecasts this
    # holdout, as the published tracking plots also show towards their end.
    assert 0.82 < forecast / actual < 0.92


def test_probability_of_no_holdout_purchase_is_calibrated_on_cdnow(
    cdnow_master: pd.DataFrame, master_model: BetaGeoModel
) -> None:
    summary = cdnow_master

    p_none = master_model.prob_no_purchase(
        HOLDOUT_WEEKS, summary["frequency"], summary["recency"], summary["T"]
    )

    # Measured: 0.734 predicted vs 0.701 observed. Off by the same under-forecast as above.
    observed = float((summary["holdout_purchases"] == 0).mean())
    assert p_none.mean() == pytest.approx(observed, abs=0.05)


def test_fit_scales_to_a_million_customers_by_aggregating_identical_histories(
    cdnow_master: pd.DataFrame, master_model: BetaGeoModel
) -> None:
    copies = 43  # 43 * 23,570 = 1,013,510 customers
    frequency = np.tile(cdnow_master["frequency"].to_numpy(), copies)
    recency = np.tile(cdnow_master["recency"].to_numpy(), copies)
    T = np.tile(cdnow_master["T"].to_numpy(), copies)

    start = time.perf_counter()
    model = BetaGeoModel().fit(frequency, recency, T)
    seconds = time.perf_counter() - start

    assert model.n_customers_ == copies * 23570
    assert fitted_params(model) == pytest.approx(fitted_params(master_model), rel=1e-6)
    assert model.log_likelihood_ == pytest.approx(copies * master_model.log_likelihood_, rel=1e-9)
    assert seconds < 10.0, f"fitting a million customers took {seconds:.1f} s"


# ---------------------------------------------------------------------------------------------
# Formulas against independent computations
# ---------------------------------------------------------------------------------------------


def model_with(r: float, alpha: float, a: float, b: float) -> BetaGeoModel:
    model = BetaGeoModel()
    model.r_, model.alpha_, model.a_, model.b_ = r, alpha, a, b
    return model


CDNOW_PARAMS = (0.243, 4.414, 0.793, 2.426)


@pytest.mark.parametrize(
    ("t", "x", "t_x", "T"),
    [
        (39.0, 0, 0.0, 38.86),
        (39.0, 2, 30.43, 38.86),
        (10.0, 5, 20.0, 30.0),
        (52.0, 300, 150.0, 156.0),
        (1000.0, 1000, 500.0, 520.0),  # eq. 10 evaluated literally gives nan here
        (39.0, 2000, 1590.0, 1600.0),
        (1e4, 3, 5.0, 50.0),
    ],
)
def test_expected_purchases_equals_integral_over_the_posterior_of_the_dropout_probability(
    t: float, x: int, t_x: float, T: float
) -> None:
    r, alpha, a, b = CDNOW_PARAMS
    model = model_with(*CDNOW_PARAMS)

    # Given alive at T, lambda ~ Gamma(r+x, alpha+T) and p ~ Beta(a, b+x) independently, and
    # E[purchases in t | lambda, p] = (1 - exp(-lambda p t)) / p; integrating lambda out
    # leaves a one-dimensional integral over p.
    def integrand(p: float) -> float:
        no_dropout_factor = -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T)))
        return stats.beta.pdf(p, a, b + x) * no_dropout_factor / p

    if_alive, _ = integrate.quad(integrand, 0.0, 1.0, limit=200, points=[1e-6, 1e-3])
    expected = if_alive * model.prob_alive(x, t_x, T)[0]

    assert model.expected_purchases(t, x, t_x, T)[0] == pytest.approx(expected, rel=1e-7)


@pytest.mark.parametrize(
    "params", [(1.0, 1.0, 2.0, 1.0), (1.5, 1.0, 1.5, 2.0)], ids=["a-1=1", "a+b-1-r=1"]
)
def test_expected_purchases_survives_where_scipy_hypergeometric_function_fails(
    params: tuple[float, float, float, float],
) -> None:
    # With an integer among the first two parameters of 2F1 and z near 1, scipy 1.17's hyp2f1
    # returns inf or nan here; the model must still give the right answer.
    r, alpha, a, b = params
    t, x, t_x, T = 200.0, 99, 9.0, 10.0

    def integrand(p: float) -> float:
        no_dropout_factor = -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T)))
        return stats.beta.pdf(p, a, b + x) * no_dropout_factor / p

    if_alive, _ = integrate.quad(integrand, 0.0, 1.0, limit=200, points=[1e-6, 1e-3])
    model = model_with(*params)

    assert model.expected_purchases(t, x, t_x, T)[0] == pytest.approx(
        if_alive * model.prob_alive(x, t_x, T)[0], rel=1e-7
    )


def test_expected_purchases_of_a_new_customer_is_the_empty_history_case() -> None:
    model = model_with(*CDNOW_PARAMS)
    t = np.array([1.0, 13.0, 39.0, 78.0])

    assert model.expected_purchases_new_customer(t) == pytest.approx(
        model.expected_purchases(t, 0, 0.0, 0.0), rel=1e-12
    )


@pytest.mark.parametrize(("a", "b"), [(1.0, 2.0), (0.5, 0.5)], ids=["a=1", "a+b=1"])
def test_expected_purchases_is_continuous_where_equation_10_is_zero_over_zero(
    a: float, b: float
) -> None:
    x, t_x, T = np.array([0, 3]), np.array([0.0, 20.0]), np.array([0.0, 30.0])

    at = model_with(0.3, 4.0, a, b).expected_purchases(10.0, x, t_x, T)
    nearby = [
        model_with(0.3, 4.0, a + da, b).expected_purchases(10.0, x, t_x, T)
        for da in (-1e-5, 1e-5)
    ]

    assert np.all(np.isfinite(at))
    assert at == pytest.approx(0.5 * (nearby[0] + nearby[1]), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Simulation from the model with known parameters
# ---------------------------------------------------------------------------------------------

SIMULATION_PARAMS = (0.5, 5.0, 0.8, 2.5)
HORIZON = 26.0


def simulate_bgnbd(
    n: int, r: float, alpha: float, a: float, b: float, T: np.ndarray, t_ahead: float,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Customers drawn from the BG/NBD story, observed over (0, T] and then (T, T + t_ahead].

    Returns frequency, recency, the number of purchases after T (``future``) and whether each
    customer was still alive at T.
    """
    rate = rng.gamma(r, 1.0 / alpha, n)
    dropout_p = rng.beta(a, b, n)
    clock = np.zeros(n)
    frequency = np.zeros(n, dtype=int)
    recency = np.zeros(n)
    future = np.zeros(n, dtype=int)
    dropped_at = np.full(n, np.inf)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        clock[idx] += rng.exponential(1.0 / rate[idx])
        past_end = clock[idx] > T[idx] + t_ahead
        active[idx[past_end]] = False
        buyers = idx[~past_end]
        in_window = clock[buyers] <= T[buyers]
        frequency[buyers[in_window]] += 1
        recency[buyers[in_window]] = clock[buyers[in_window]]
        future[buyers[~in_window]] += 1
        # The only moment a customer can leave: right after a (repeat) purchase.
        leavers = buyers[rng.random(buyers.size) < dropout_p[buyers]]
        dropped_at[leavers] = clock[leavers]
        active[leavers] = False
    return {"frequency": frequency, "recency": recency, "future": future,
            "alive": dropped_at > T}


@pytest.fixture(scope="module")
def simulated() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2024)
    n = 20_000
    T = rng.uniform(26.0, 52.0, n)
    customers = simulate_bgnbd(n, *SIMULATION_PARAMS, T, HORIZON, rng)
    customers["T"] = T
    return customers


FREQUENCY_BINS = [(0, 0), (1, 1), (2, 3), (4, 7), (8, 10**6)]


def z_score_of_bernoulli_total(outcomes: np.ndarray, probabilities: np.ndarray) -> float:
    """(observed - expected) count over its standard deviation, for independent Bernoullis."""
    spread = np.sqrt(np.sum(probabilities * (1.0 - probabilities)))
    return float((outcomes.sum() - probabilities.sum()) / spread)


@pytest.mark.parametrize(("low", "high"), FREQUENCY_BINS)
def test_prob_no_purchase_matches_simulation(
    simulated: dict[str, np.ndarray], low: int, high: int
) -> None:
    model = model_with(*SIMULATION_PARAMS)
    in_bin = (simulated["frequency"] >= low) & (simulated["frequency"] <= high)
    history = [simulated[k][in_bin] for k in ("frequency", "recency", "T")]

    predicted = model.prob_no_purchase(HORIZON, *history)

    # Given each history the outcomes are independent Bernoullis with exactly these
    # probabilities if the formula is right, so the z-score is standard normal.
    observed = simulated["future"][in_bin] == 0
    assert abs(z_score_of_bernoulli_total(observed, predicted)) < 4.0


@pytest.mark.parametrize(("low", "high"), FREQUENCY_BINS[1:])
def test_prob_alive_matches_simulation(
    simulated: dict[str, np.ndarray], low: int, high: int
) -> None:
    model = model_with(*SIMULATION_PARAMS)
    in_bin = (simulated["frequency"] >= low) & (simulated["frequency"] <= high)
    history = [simulated[k][in_bin] for k in ("frequency", "recency", "T")]

    predicted = model.prob_alive(*history)

    assert abs(z_score_of_bernoulli_total(simulated["alive"][in_bin], predicted)) < 4.0


def test_expected_purchases_matches_simulation(simulated: dict[str, np.ndarray]) -> None:
    model = model_with(*SIMULATION_PARAMS)
    history = [simulated[k] for k in ("frequency", "recency", "T")]

    residual = simulated["future"] - model.expected_purchases(HORIZON, *history)

    assert abs(residual.sum() / np.sqrt(np.sum(residual**2))) < 4.0


def test_expected_purchases_new_customer_matches_simulated_calibration_counts(
    simulated: dict[str, np.ndarray],
) -> None:
    model = model_with(*SIMULATION_PARAMS)

    residual = simulated["frequency"] - model.expected_purchases_new_customer(simulated["T"])

    assert abs(residual.sum() / np.sqrt(np.sum(residual**2))) < 4.0


def test_fit_recovers_the_simulation_parameters(simulated: dict[str, np.ndarray]) -> None:
    model = BetaGeoModel().fit(simulated["frequency"], simulated["recency"], simulated["T"])

    # Measured: r=0.510, alpha=5.10, a=0.743, b=2.28 from 20,000 customers; a and b are the
    # least well determined.
    truth = dict(zip(("r", "alpha", "a", "b"), SIMULATION_PARAMS))
    assert fitted_params(model) == pytest.approx(truth, rel=0.15)


# ---------------------------------------------------------------------------------------------
# Properties for any parameters and history
# ---------------------------------------------------------------------------------------------

positive = st.floats(min_value=0.05, max_value=20.0, allow_nan=False)


@st.composite
def histories(draw: st.DrawFn) -> tuple[int, float, float]:
    T = draw(st.floats(min_value=0.0, max_value=500.0))
    x = draw(st.integers(min_value=0, max_value=500))
    t_x = 0.0 if x == 0 else draw(st.floats(min_value=0.0, max_value=T))
    return x, t_x, T


@settings(max_examples=150, deadline=None)
@given(
    r=positive, alpha=positive, a=positive, b=positive, history=histories(),
    t=st.floats(min_value=0.01, max_value=500.0),
)
def test_predictions_are_probabilities_and_consistent_expectations(
    r: float, alpha: float, a: float, b: float, history: tuple[int, float, float], t: float
) -> None:
    model = model_with(r, alpha, a, b)
    x, t_x, T = history

    p_alive = model.prob_alive(x, t_x, T)[0]
    p_none, p_none_later = model.prob_no_purchase([t, 2.0 * t], x, t_x, T)
    expected, expected_later = model.expected_purchases([t, 2.0 * t], x, t_x, T)

    assert 0.0 <= p_alive <= 1.0
    assert 0.0 <= p_none_later <= p_none <= 1.0
    assert 0.0 <= expected <= expected_later * (1 + 1e-9) and np.isfinite(expected_later)
    # Markov's inequality: P(at least one purchase) <= E[purchases]. The slack covers rounding
    # when both are tiny (short horizons for very frequent buyers).
    assert 1.0 - p_none <= expected * (1 + 1e-6) + 1e-9


def test_nothing_is_expected_over_a_zero_horizon() -> None:
    model = model_with(*CDNOW_PARAMS)

    assert model.expected_purchases(0.0, [0, 4], [0.0, 10.0], [20.0, 20.0]) == pytest.approx(0)
    assert model.prob_no_purchase(0.0, [0, 4], [0.0, 10.0], [20.0, 20.0]) == pytest.approx(1)


# ---------------------------------------------------------------------------------------------
# Interface and input errors
# ---------------------------------------------------------------------------------------------


def test_follows_the_scikit_learn_estimator_contract() -> None:
    model = BetaGeoModel(penalizer=0.1)

    assert model.get_params() == {"penalizer": 0.1}
    assert clone(model).penalizer == 0.1
    with pytest.raises(NotFittedError):
        model.prob_alive([1], [1.0], [2.0])


def test_penalizer_pulls_the_parameters_towards_zero(
    cdnow_sample: pd.DataFrame, sample_model: BetaGeoModel
) -> None:
    plain = sample_model
    penalised = fit_bgnbd(cdnow_sample, penalizer=0.01)

    def size(model: BetaGeoModel) -> float:
        return float(np.sum(np.square(list(fitted_params(model).values()))))

    assert size(penalised) < size(plain)
    assert penalised.log_likelihood_ < plain.log_likelihood_


def test_accepts_lists_arrays_and_series_alike(
    cdnow_sample: pd.DataFrame, sample_model: BetaGeoModel
) -> None:
    head = cdnow_sample.head(50)
    model = sample_model

    from_series = model.expected_purchases(10.0, head["frequency"], head["recency"], head["T"])
    from_lists = model.expected_purchases(
        10.0, head["frequency"].tolist(), head["recency"].tolist(), head["T"].tolist()
    )

    assert isinstance(from_series, np.ndarray) and from_series.shape == (50,)
    assert from_series == pytest.approx(from_lists)


@pytest.mark.parametrize(
    ("frequency", "recency", "T", "message"),
    [
        ([1, -1], [1.0, 0.0], [2.0, 2.0], r"frequency: 1 value\(s\) are negative \(positions 1"),
        ([1, 1], [1.0, -0.5], [2.0, 2.0], r"recency: 1 value\(s\) are negative"),
        ([1, 0], [1.0, 0.0], [2.0, -3.0], r"T: 1 value\(s\) are negative"),
        ([1, 2], [3.0, 5.0], [2.0, 9.0], r"recency: 1 value\(s\) are larger than T.*recency <= T"),
        ([0, 0], [0.0, 1.5], [2.0, 2.0], r"not 0 although frequency is 0"),
        ([1, 2], [1.0], [2.0, 2.0], r"lengths frequency=2, recency=1, T=2"),
        ([1.5], [1.0], [2.0], r"frequency: 1 value\(s\) are not whole numbers"),
        ([1], [np.nan], [2.0], r"recency: 1 value\(s\) are missing or not finite"),
        ([], [], [], r"at least one customer"),
    ],
    ids=["negative-frequency", "negative-recency", "negative-T", "recency-after-T",
         "recency-without-repeat", "lengths-differ", "fractional-frequency", "nan", "empty"],
)
def test_fit_rejects_impossible_summaries_naming_the_problem(
    frequency: list[float], recency: list[float], T: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        BetaGeoModel().fit(frequency, recency, T)


def test_predictions_reject_the_same_impossible_summaries() -> None:
    model = model_with(*CDNOW_PARAMS)

    with pytest.raises(ValueError, match="larger than T"):
        model.prob_no_purchase(10.0, [3], [12.0], [10.0])
    with pytest.raises(ValueError, match=r"t \(prediction horizon"):
        model.expected_purchases(-1.0, [3], [5.0], [10.0])


def test_fit_warns_when_the_data_cannot_pin_the_parameters_down() -> None:
    # Everyone bought steadily right up to the end of the window: no sign of anyone leaving,
    # so the dropout distribution runs off to a -> 0, b -> infinity.
    rng = np.random.default_rng(0)
    frequency = rng.poisson(10, 2000)
    T = np.full(2000, 52.0)
    recency = np.where(frequency > 0, T - rng.uniform(0.0, 0.5, 2000), 0.0)

    with pytest.warns(ConvergenceWarning, match="extreme values mean the data cannot pin"):
        BetaGeoModel().fit(frequency, recency, T)


def test_negative_penalizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="penalizer must be a finite number >= 0"):
        BetaGeoModel(penalizer=-1.0).fit([1], [1.0], [2.0])


_CDNOW_SAMPLE_ID_GAPS = """
    4 14 3 29 10 11 15 25 1 1 1 17 2 18 15 1 14 17 10 13 5 2 6 9 13 5 20 16 15 2 19 8 9 3 14 21
    20 17 4 11 1 32 14 2 13 14 14 12 16 4 2 17 3 28 7 2 15 9 11 19 12 16 16 17 19 1 4 13 2 5 9 6
    21 18 2 21 1 17 6 18 14 5 18 11 11 16 15 23 2 20 1 15 12 18 19 2 7 7 2 14 19 8 9 7 14 21 14
    17 1 10 1 13 15 3 8 4 7 15 5 11 10 7 15 12 3 13 2 7 15 3 5 8 13 17 17 3 16 5 14 10 12 4 16 1
    7 15 2 11 9 13 5 4 4 9 7 8 6 2 1 4 1 17 10 9 7 15 6 6 11 3 5 2 3 20 9 17 16 3 11 6 13 19 13
    3 1 14 11 9 16 12 15 14 6 14 25 16 3 4 18 1 15 5 7 3 2 5 18 15 19 19 1 13 4 1 3 11 4 7 11 19
    18 2 15 5 25 12 5 1 24 2 16 10 1 8 21 8 15 3 10 2 14 7 14 16 1 12 16 4 9 6 7 5 6 4 13 6 13
    15 20 20 16 16 12 16 20 8 8 4 21 4 2 11 10 7 1 18 6 10 8 8 17 15 1 16 12 7 5 14 3 4 18 18 4
    3 3 5 5 7 2 11 6 13 16 11 2 10 3 4 6 22 4 19 1 5 8 11 1 14 2 20 19 4 20 6 19 11 1 12 1 6 4
    11 8 12 21 2 12 12 3 12 10 13 4 2 7 16 2 18 9 1 4 9 8 7 20 11 2 9 4 9 4 3 14 11 2 15 18 9 4
    9 5 16 14 22 17 12 19 1 19 11 4 10 1 4 14 15 21 2 15 11 9 1 14 18 11 10 5 5 18 4 8 14 18 16
    13 4 17 3 6 5 4 8 11 17 19 5 2 12 19 5 11 17 22 16 16 2 1 21 7 6 8 19 16 9 5 4 9 15 1 16 3
    19 15 4 9 12 18 9 12 19 20 17 8 4 8 15 14 5 9 5 4 16 18 14 16 1 14 17 13 6 23 3 3 8 2 12 3
    14 6 12 14 2 3 2 5 10 2 2 13 4 19 17 4 12 2 7 7 3 5 13 6 2 2 12 9 7 9 1 18 1 5 17 16 3 22 5
    2 14 5 20 16 2 12 9 6 17 2 2 17 6 16 4 12 5 7 3 4 14 6 14 3 16 21 15 8 5 2 13 6 5 7 10 6 14
    21 17 6 8 21 4 17 4 16 2 18 16 2 12 1 5 13 10 3 6 11 23 2 3 24 3 21 9 9 14 15 15 5 2 5 3 4 1
    3 15 3 2 14 14 19 14 3 1 7 10 15 18 12 9 14 19 10 8 10 3 9 3 7 8 1 16 12 11 20 16 18 15 17
    14 3 17 16 15 3 8 1 8 18 4 18 25 3 11 4 16 15 7 10 5 12 7 7 4 2 16 7 14 10 9 14 8 15 5 22 5
    9 16 14 17 11 9 4 16 15 12 4 27 21 16 2 20 2 6 11 10 6 15 23 6 14 6 13 3 21 12 16 10 6 2 16
    4 3 13 3 10 21 22 9 2 8 8 2 8 6 12 4 6 4 18 6 7 5 6 12 15 13 16 13 3 12 4 2 11 8 10 7 3 28 6
    8 9 2 15 4 4 7 6 1 12 7 7 11 2 5 17 16 12 1 4 3 16 4 21 11 7 8 14 5 12 18 11 14 13 1 16 3 16
    16 9 10 19 8 8 15 5 11 19 8 9 7 2 11 14 6 2 9 3 15 21 11 12 7 7 8 19 7 13 1 17 21 16 5 11 19
    24 8 14 16 21 14 12 1 1 6 7 14 19 22 8 9 19 17 21 13 14 14 3 11 10 14 1 6 13 16 2 15 4 2 14
    11 11 4 18 12 1 19 9 7 5 15 28 10 12 8 7 6 1 18 2 16 6 15 12 7 15 20 4 1 23 14 15 11 2 2 14
    6 12 7 7 15 13 7 12 9 5 15 3 11 5 17 5 18 16 13 11 5 11 6 16 18 15 22 5 2 7 21 15 4 7 9 7 4
    10 15 2 2 15 11 15 4 13 24 5 13 13 22 1 11 14 11 6 4 5 10 17 4 14 15 1 13 4 2 19 18 11 4 24
    1 20 16 17 15 3 12 22 3 11 16 7 17 15 1 4 12 6 1 9 15 5 9 8 8 8 5 3 7 1 11 5 15 7 6 14 2 15
    18 21 7 9 4 3 17 4 11 6 10 10 4 11 8 6 11 1 15 11 4 3 12 8 4 7 8 10 3 12 19 3 14 3 4 3 13 5
    13 14 1 3 18 13 17 18 17 2 7 6 23 2 8 6 5 9 9 6 12 9 17 6 11 17 7 9 1 17 7 8 17 17 13 18 15
    12 19 13 17 13 18 4 12 14 17 2 12 4 1 16 11 5 13 12 20 4 13 3 16 18 3 4 3 11 12 2 3 15 3 17
    16 22 25 18 14 6 13 5 4 13 1 18 19 12 13 5 3 16 7 5 7 6 7 2 6 6 15 11 7 11 6 2 18 14 8 3 6 8
    16 18 16 2 7 18 14 3 1 17 4 15 9 2 6 3 13 6 14 6 10 11 6 1 2 5 1 5 16 19 14 7 10 3 1 5 9 12
    4 14 28 20 11 5 17 13 23 22 3 14 8 9 16 22 6 13 24 17 5 6 6 13 4 11 1 1 18 18 1 17 12 4 17
    21 15 4 18 2 11 20 2 5 1 11 2 1 2 18 4 5 3 9 14 13 17 15 7 7 3 13 8 13 9 14 21 13 12 2 18 17
    13 14 13 16 12 8 15 14 6 7 2 11 20 6 13 17 15 14 6 11 18 12 4 4 8 7 14 2 16 24 5 5 6 12 1 4
    5 11 8 8 15 19 5 13 11 16 15 2 8 5 5 5 14 1 5 13 1 8 8 10 9 5 6 14 18 4 10 8 1 14 23 4 20 10
    8 8 9 4 7 7 15 3 11 5 12 5 5 4 8 2 8 9 10 4 18 4 8 1 15 4 18 9 12 12 8 4 9 18 16 2 1 12 19
    15 16 19 3 8 1 9 7 10 3 12 13 7 15 8 8 9 2 16 15 13 12 14 15 3 1 15 7 14 1 2 13 5 11 8 17 11
    7 8 8 16 5 6 10 3 19 4 1 18 1 19 17 14 6 19 19 2 3 11 1 20 16 10 8 17 19 1 1 16 11 11 13 13
    3 8 11 16 1 20 1 2 15 18 15 12 1 1 16 1 19 9 6 14 1 7 17 21 18 15 13 13 1 14 1 5 4 8 3 19 14
    1 7 7 7 5 1 4 3 8 7 4 5 9 18 8 2 6 1 11 1 5 15 3 11 17 10 11 17 17 13 12 15 22 17 3 1 11 3 1
    17 15 3 9 7 19 11 5 18 24 2 13 18 17 11 6 16 1 13 5 15 16 21 7 11 12 14 7 11 17 1 8 11 15 2
    1 14 3 22 12 7 2 15 25 2 10 11 3 13 23 9 17 16 10 7 15 15 1 2 11 3 11 4 7 10 5 15 13 20 10 4
    11 1 17 5 6 11 2 3 19 12 13 2 1 3 15 5 6 4 16 18 14 13 17 1 16 15 2 12 4 17 4 19 15 8 10 14
    11 19 9 9 17 18 12 12 7 1 14 2 10 5 3 2 19 11 3 3 21 16 15 15 1 12 2 4 14 1 4 17 4 16 7 7 4
    18 14 14 9 8 5 14 6 1 4 14 14 14 2 15 16 20 14 18 16 18 11 9 11 4 1 15 15 17 9 11 7 9 12 11
    9 12 6 9 18 17 14 1 13 9 6 7 12 14 4 2 5 14 16 6 16 14 6 4 8 4 3 2 12 5 13 15 15 13 12 21 1
    18 14 16 17 7 7 6 13 25 15 19 10 14 1 13 8 10 5 20 12 1 4 16 16 4 5 10 13 16 11 5 19 11 16 5
    17 16 3 7 8 18 19 13 10 3 12 11 11 5 7 9 11 1 5 19 15 2 10 7 22 8 7 3 27 15 6 4 15 1 5 2 3 5
    3 2 7 2 9 3 14 4 9 20 19 3 12 15 1 17 4 11 15 2 11 6 3 14 12 7 4 17 21 16 3 12 15 3 1 12 16
    14 16 6 10 18 17 6 9 18 14 19 17 12 12 4 6 3 7 15 6 12 5 6 12 20 15 9 9 6 12 10 19 4 8 6 1 7
    7 17 4 13 8 14 15 1 18 16 7 15 1 5 14 2 13 2 14 13 8 17 21 15 4 18 7 1 11 5 13 4 4 5 18 3 22
    18 4 8 15 9 13 17 3 15 4 11 16 9 8 12 5 12 7 8 13 14 1 15 2 18 12 4 4 13 4 11 9 8 3 18 9 10
    15 12 17 3 17 5 9 18 4 13 3 16 23 15 2 13 14 16 21 4 2 18 3 14 13 12 13 11 18 14 5 2 5 1 2 4
    2 8 12 10 14 16 16 18 16 11 13 9 18 17 24 8 7 5 1 13 3 3 4 10 5 13 13 11 13 14 4 16 16 16 14
    14 16 15 15 5 4 10 16 10 6 15 1 2 17 14 14 3 11 18 21 13 7 13 2 18 17 10 9 16 9 11 12 17 12
    5 1 9 2 9 2 17 7 13 4 19 2 19 12 14 7 8 12 1 21 11 3 12 12 13 18 16 14 6 3 10 12 2 7 1 2 4
    14 13 7 12 12 5 15 2 15 3 12 10 3 6 7 6 11 3 7 6 4 11 6 2 9 14 1 18 2 18 13 13 6 2 11 13 14
    17 10 16 4 6 18 4 10 17 20 23 11 3 18 15 1 13 3 14 2 13 2 13 7 8 2 13 13 14 2 6 3 6 2 20 4
    11 1 16 14 19 18 16 2 7 11 23 3 22 3 9 2 7 8 4 16 13 9 8 10 4 5 12 2 7 7 20 16 13 8 4 7 6 15
    12 18 2 12 10 1 13 10 1 2 17 2 15 18 14 14 8 9 11 17 15 5 1 11 14 3 14 21 1 1 13 12 20 14 18
    15 16 6 14 1 7 10 8 9 15 13 1 1 16 13 14 15 15 13 12 8 3 14 17 25 13 10 6 10 7 14 9 7 16 12
    16 18 14 8 19 17 11 4 11 19 11 5 3 8 3 9 16 13 3 22 13 16 9 5 14 5 3 9 13 4 7 13 3 1 4 7 2 4
    21 2 1 10 8 8 12 2 16 16 14 12 13 12 2 13 12 18 5 1 6 13 10 6 4 14 5 2 9 15 2 1 16 3 13 2 6
    1 2 14 14 14 3 2 13
"""


def test_expectations_stay_right_where_the_fit_runs_off_along_the_a_b_ridge() -> None:
    # A young shop's fit can end at a ~ 1e12, b ~ 1e13 (one dropout rate for everyone): scipy's
    # hyp2f1 and the quadrature both failed there and every customer was predicted 0 purchases.
    from features.bgnbd import _expected_purchases_if_alive

    t, x, t_obs = np.array([52.0, 52.0, 26.0]), np.array([0.0, 3.0, 10.0]), np.array([30.0, 40.0, 50.0])
    ridge = _expected_purchases_if_alive((0.8, 7.9, 8e11, 8e11 * 13.3), t, x, t_obs)
    near = [_expected_purchases_if_alive((0.8, 7.9, 0.07 * ab, 0.93 * ab), t, x, t_obs) for ab in (500, 5_000, 9_000)]
    assert np.all(ridge > 0.5)
    # The exact formula converges to the limit as a + b grows, from either side of the switch.
    gaps = [np.max(np.abs(n / ridge - 1)) for n in near]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3
