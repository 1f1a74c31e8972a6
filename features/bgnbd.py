"""BG/NBD repeat-purchase model: who is still a customer and how often they will buy again.

The beta-geometric / negative-binomial distribution model of Fader, Hardie & Lee (2005),
"Counting your customers the easy way: an alternative to the Pareto/NBD model", Marketing
Science 24(2), 275-284, fitted by maximum likelihood.

Story of the model, per customer:

- while alive, purchases arrive as a Poisson process with rate ``lambda`` (purchases per time
  unit); across customers ``lambda ~ Gamma(shape=r, rate=alpha)``;
- immediately after each *repeat* purchase the customer drops out for good with probability
  ``p``; across customers ``p ~ Beta(a, b)``. Nobody drops out at the first purchase, nor
  between purchases.

Every customer is summarised by three numbers, all measured in one time unit of your choice
(the paper and the tests use weeks), counted from the customer's *first* purchase:

- ``frequency`` (x): the number of repeat purchases, i.e. distinct purchase periods after the
  first one (several orders on one day are usually one purchase);
- ``recency`` (t_x): time from the first purchase to the last one; 0 when ``frequency`` is 0;
- ``T``: time from the first purchase to the end of the observation (calibration) window.

Predictions look ``t`` time units past the end of that window.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.integrate import quad
from scipy.optimize import OptimizeResult, minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

__all__ = ["BetaGeoModel"]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


class BetaGeoModel(BaseEstimator):
    """BG/NBD model of repeat purchasing, fitted by maximum likelihood.

    Parameters
    ----------
    penalizer:
        Strength of an L2 penalty ``penalizer * (r^2 + alpha^2 + a^2 + b^2)`` added to the
        *mean* negative log-likelihood per customer. 0 (the default) gives the plain maximum
        likelihood estimate; a small value (0.001-0.1) shrinks the parameters towards 0, which
        steadies fits on small data sets.

    Attributes
    ----------
    r_, alpha_:
        Shape and rate of the Gamma distribution of purchase rates across customers;
        ``r_ / alpha_`` is the mean purchase rate in purchases per time unit.
    a_, b_:
        Parameters of the Beta distribution of the dropout probability after a purchase;
        ``a_ / (a_ + b_)`` is its mean.
    log_likelihood_:
        Total (summed over customers, unpenalised) log-likelihood at the fitted parameters.
    n_customers_:
        Number of customers the model was fitted on.
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> BetaGeoModel:
        """Estimate ``r_, alpha_, a_, b_`` from one calibration summary row per customer.

        ``frequency``, ``recency`` and ``T`` are equally long 1-D arrays (or pandas Series) as
        defined in the module docstring, all in the same time unit. Returns ``self``.
        """
        if not np.isfinite(self.penalizer) or self.penalizer < 0:
            raise ValueError(
                f"penalizer must be a finite number >= 0, got {self.penalizer!r}."
            )
        x, t_x, t_obs = _validate_summary(frequency, recency, T)
        if x.size == 0:
            raise ValueError("fit needs at least one customer; got empty arrays.")
        histories = _Histories.from_summary(x, t_x, t_obs)
        log_params = _maximise_likelihood(histories, self.penalizer)
        params = np.exp(log_params)
        self.r_, self.alpha_, self.a_, self.b_ = (float(v) for v in params)
        ll, _ = _log_likelihood_and_gradient(params, histories)
        self.log_likelihood_ = float(histories.counts @ ll)
        self.n_customers_ = int(x.size)
        return self

    def prob_alive(self, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike) -> FloatArray:
        """Probability that each customer is still alive at the end of their window ``T``.

        Customers without a repeat purchase cannot have dropped out, so they get exactly 1.
        """
        x, t_x, t_obs = _validate_summary(frequency, recency, T)
        return expit(-self._log_dropout_odds(x, t_x, t_obs))

    def expected_purchases(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Expected number of purchases in the next ``t`` time units, given each history.

        Equation 10 of the paper. ``t`` is a scalar or an array that broadcasts against the
        customers. Evaluated through an Euler transformation of the hypergeometric function
        (see the module-level ``_expected_purchases_if_alive``) so that it stays finite for
        customers with thousands of purchases or very long windows.
        """
        t_ahead = self._validate_horizon(t)
        x, t_x, t_obs = _validate_summary(frequency, recency, T)
        if_alive = self._expected_purchases_if_alive(t_ahead, x, t_obs)
        return if_alive * expit(-self._log_dropout_odds(x, t_x, t_obs))

    def prob_no_purchase(
        self, t: ArrayLike, frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """Probability that each customer makes no purchase in the next ``t`` time units.

        ``P(none in (T, T+t]) = P(dead at T) + P(alive at T) * ((alpha+T)/(alpha+T+t))^(r+x)``.

        This is exact, not an approximation: given alive at ``T`` and the history, ``lambda``
        is Gamma(r+x, alpha+T) (the history's likelihood in ``lambda`` is
        ``lambda^x exp(-lambda T)``) and independent of ``p``; so the chance that the Poisson
        clock does not tick in ``t`` is ``E[exp(-lambda t)]``, the Gamma Laplace transform
        above. Dropout can only happen right after a purchase, so it cannot change the
        outcome of a window without purchases.
        """
        t_ahead = self._validate_horizon(t)
        x, t_x, t_obs = _validate_summary(frequency, recency, T)
        alive = expit(-self._log_dropout_odds(x, t_x, t_obs))
        log_no_tick = -(self.r_ + x) * np.log1p(t_ahead / (self.alpha_ + t_obs))
        return (1.0 - alive) + alive * np.exp(log_no_tick)

    def expected_purchases_new_customer(self, t: ArrayLike) -> FloatArray:
        """Expected repeat purchases ``E[X(t)]`` in the first ``t`` time units after a first purchase.

        Unconditional (population) expectation, equation 9 of the paper; it equals
        ``expected_purchases(t, 0, 0, 0)``.
        """
        t_ahead = self._validate_horizon(t)
        zero = np.zeros_like(t_ahead)
        return self._expected_purchases_if_alive(t_ahead, zero, zero)

    def _expected_purchases_if_alive(
        self, t: FloatArray, x: FloatArray, t_obs: FloatArray
    ) -> FloatArray:
        """Eq. 10 without its P(alive) factor, at the fitted parameters."""
        self._check_fitted()
        params = (self.r_, self.alpha_, self.a_, self.b_)
        return _expected_purchases_if_alive(params, t, x, t_obs)

    def _log_dropout_odds(self, x: FloatArray, t_x: FloatArray, t_obs: FloatArray) -> FloatArray:
        """``log(P(dead at T) / P(alive at T))``; ``-inf`` for customers without repeat purchases.

        The odds are ``a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)``, which overflows for long
        silent spells after many purchases, so they are kept as a logarithm.
        """
        self._check_fitted()
        r, alpha, a, b = self.r_, self.alpha_, self.a_, self.b_
        repeat = x > 0
        # b + x - 1 is only used where x >= 1, where it is >= b > 0.
        safe_b_term = np.where(repeat, b + x - 1.0, 1.0)
        log_odds = (
            np.log(a)
            - np.log(safe_b_term)
            + (r + x) * (np.log(alpha + t_obs) - np.log(alpha + t_x))
        )
        return np.where(repeat, log_odds, -np.inf)

    def _validate_horizon(self, t: ArrayLike) -> FloatArray:
        self._check_fitted()
        t_ahead = np.asarray(t, dtype=float)
        if not np.all(np.isfinite(t_ahead)) or np.any(t_ahead < 0):
            raise ValueError(
                f"t (prediction horizon, in the time unit of the fit) must be finite and >= 0; "
                f"got {t!r}."
            )
        return t_ahead

    def _check_fitted(self) -> None:
        check_is_fitted(self, ["r_", "alpha_", "a_", "b_"])


# Half-width of the two-sided evaluation at the removable singularities of eq. 10; the
# midpoint's error is of order _STEP**2 = 1e-8 relative.
_STEP = 1e-4


def _expected_purchases_if_alive(
    params: tuple[float, float, float, float], t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """Eq. 10 without its P(alive) factor: ``(a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z)]``.

    With ``z = t/(alpha+T+t)``, Euler's transformation
    ``2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)`` turns the bracket into
    ``1 - (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)``. The first two hypergeometric parameters
    no longer grow with ``x``, so the huge factor ``2F1(r+x, ...)`` and the tiny factor
    ``(1-z)^(r+x)`` that used to cancel are never formed.

    The formula is 0/0 at ``a = 1`` (and at ``a + b = 1`` for ``x = 0``), although the
    expectation itself is smooth in the parameters there; at those points it is taken as the
    mean of the values just either side.
    """
    r, alpha, a, b = params
    if a + b > _POINT_MASS_AB:
        return _expected_purchases_if_alive_fixed_dropout(params, t, x, t_obs)
    if abs(a - 1.0) < 1e-7:
        below = _expected_purchases_if_alive((r, alpha, 1.0 - _STEP, b), t, x, t_obs)
        above = _expected_purchases_if_alive((r, alpha, 1.0 + _STEP, b), t, x, t_obs)
        return 0.5 * (below + above)
    if abs(a + b - 1.0) < 1e-7:
        below = _expected_purchases_if_alive((r, alpha, a, b * (1.0 - _STEP)), t, x, t_obs)
        above = _expected_purchases_if_alive((r, alpha, a, b * (1.0 + _STEP)), t, x, t_obs)
        return 0.5 * (below + above)
    z = t / (alpha + t_obs + t)
    log_one_minus_z = -np.log1p(t / (alpha + t_obs))
    bracket = 1.0 - np.exp((a - 1.0) * log_one_minus_z) * hyp2f1(
        a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z
    )
    value = np.asarray((a + b + x - 1.0) / (a - 1.0) * bracket)
    broken = ~np.isfinite(value)
    if np.any(broken):
        # scipy's hyp2f1 (1.17) returns inf or nan for z near 1 when one of its first two
        # parameters is a positive integer, or for far-out parameters such as a > 20; those
        # few entries are integrated numerically instead.
        t_b, x_b, t_obs_b = (np.broadcast_to(v, value.shape)[broken] for v in (t, x, t_obs))
        value = value.copy()
        value[broken] = _expected_purchases_if_alive_by_quadrature(params, t_b, x_b, t_obs_b)
    return value


# Beyond this a + b the Beta(a, b) of the dropout probability is a point mass for every practical
# purpose (sd below 0.5% of p for p <= 0.5), and the fit can run off along the ridge where a and b
# grow together (a shop whose customers all leave at about the same rate per order). scipy's
# hyp2f1 and the quadrature both fail there (the quadrature's bump is too narrow to find), so the
# exact limit is used.
_POINT_MASS_AB = 1e4


def _expected_purchases_if_alive_fixed_dropout(
    params: tuple[float, float, float, float], t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """The limit of Eq. 10's alive part when the dropout probability is one number, its posterior mean.

    Given alive at ``T``, ``lambda ~ Gamma(r+x, alpha+T)`` and ``p`` fixed at ``a/(a+b+x)``, so
    ``E = (1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p``.
    """
    r, alpha, a, b = params
    p = a / (a + b + x)
    log_ratio = -np.log1p(p * t / (alpha + t_obs))
    return np.asarray(-np.expm1((r + x) * log_ratio) / p, dtype=float)


def _expected_purchases_if_alive_by_quadrature(
    params: tuple[float, float, float, float], t: FloatArray, x: FloatArray, t_obs: FloatArray
) -> FloatArray:
    """The same expectation as a one-dimensional integral over the dropout probability ``p``.

    Given alive at ``T``, ``lambda ~ Gamma(r+x, alpha+T)`` and ``p ~ Beta(a, b+x)``
    independently, and ``E[purchases in t | lambda, p] = (1 - exp(-lambda p t)) / p``;
    integrating ``lambda`` out leaves
    ``E = integral over (0, 1) of Beta(p; a, b+x) * (1 - (1 + p t/(alpha+T))^-(r+x)) / p dp``.
    It is integrated over ``y = -log p``, where the ``1/p`` cancels against ``dp = -p dy``, the
    density's pole at ``p = 0`` becomes a decaying tail, and the posterior of ``p``, which
    piles up near ``1/(b+x)`` for frequent buyers, becomes a bump near ``y = log(b+x)``.
    Robust but about a millisecond per customer, hence only the fallback.
    """
    r, alpha, a, b = params

    def one(t_one: float, x_one: float, t_obs_one: float) -> float:
        log_beta = betaln(a, b + x_one)
        scale = t_one / (alpha + t_obs_one)

        def integrand(y: float) -> float:
            p = np.exp(-y)
            log_density = -(a - 1.0) * y + (b + x_one - 1.0) * np.log1p(-p) - log_beta
            buys = -np.expm1(-(r + x_one) * np.log1p(p * scale))
            with np.errstate(divide="ignore"):  # buys underflows to 0 far in the tail
                return float(np.exp(log_density + np.log(buys)))

        bump = np.log1p(b + x_one)
        head, _ = quad(integrand, 0.0, bump, limit=200)
        tail, _ = quad(integrand, bump, np.inf, limit=200)
        return head + tail

    return np.vectorize(one, otypes=[float])(t, x, t_obs)


class _Histories(NamedTuple):
    """Distinct (x, t_x, T) rows with how many customers share each one.

    Customers with identical histories contribute identical likelihood terms, so the fit works
    on distinct rows weighted by ``counts``; with summaries in days or weeks this shrinks a
    million customers to tens of thousands of rows. The terms that depend on ``x`` alone
    (log-gamma and digamma functions, the expensive part) are evaluated once per distinct
    frequency in ``x_levels`` and looked up through ``x_index``.
    """

    x: FloatArray
    t_x: FloatArray
    t_obs: FloatArray
    counts: FloatArray
    x_levels: FloatArray
    x_index: npt.NDArray[np.intp]

    @classmethod
    def from_summary(cls, x: FloatArray, t_x: FloatArray, t_obs: FloatArray) -> _Histories:
        order = np.lexsort((t_obs, t_x, x))
        rows = np.column_stack([x, t_x, t_obs])[order]
        is_new = np.ones(len(rows), dtype=bool)
        is_new[1:] = np.any(rows[1:] != rows[:-1], axis=1)
        firsts = np.flatnonzero(is_new)
        counts = np.diff(np.append(firsts, len(rows))).astype(float)
        return cls._build(rows[firsts], counts)

    def resample(self, size: int, rng: np.random.Generator) -> _Histories:
        """A smaller set of histories drawn in proportion to ``counts``, for cheap exploration."""
        picks = rng.choice(len(self.x), size=size, p=self.counts / self.counts.sum())
        rows, counts = np.unique(picks, return_counts=True)
        stacked = np.column_stack([self.x, self.t_x, self.t_obs])[rows]
        return self._build(stacked, counts.astype(float))

    @classmethod
    def _build(cls, rows: FloatArray, counts: FloatArray) -> _Histories:
        x_levels, x_index = np.unique(rows[:, 0], return_inverse=True)
        return cls(rows[:, 0], rows[:, 1], rows[:, 2], counts, x_levels, x_index)


def _log_likelihood_and_gradient(
    params: FloatArray, h: _Histories
) -> tuple[FloatArray, FloatArray]:
    """Per-history BG/NBD log-likelihood (paper eq. 6) and its gradient in the log-parameters.

    ``log L = A1 + A2 + log(exp(A3) + [x > 0] exp(A4))`` with
    ``A1 = lnG(r+x) - lnG(r) + r ln(alpha)``, ``A2 = ln B(a, b+x) - ln B(a, b)``,
    ``A3 = -(r+x) ln(alpha+T)`` and ``A4 = ln(a) - ln(b+x-1) - (r+x) ln(alpha+t_x)``.
    Returns ``(ll, grad)`` with shapes ``(n,)`` and ``(n, 4)``; gradient columns are
    derivatives with respect to ``log r``, ``log alpha``, ``log a`` and ``log b`` (the
    optimiser works on logarithms so that all four stay positive without bounds).
    """
    r, alpha, a, b = params
    x, lv = h.x, h.x_levels
    # Terms in x only, per distinct frequency, then spread to the rows.
    a12 = (gammaln(r + lv) - gammaln(r) + betaln(a, b + lv) - betaln(a, b))[h.x_index]
    dig_r = (digamma(r + lv) - digamma(r))[h.x_index]
    dig_a = (digamma(a + b) - digamma(a + b + lv))[h.x_index]
    dig_b = (digamma(b + lv) - digamma(b))[h.x_index] + dig_a

    # b + x - 1 only matters for x >= 1, where it is >= b > 0.
    b_term = np.where(lv > 0, b + lv - 1.0, 1.0)
    log_b_term = np.log(b_term)[h.x_index]
    inv_b_term = np.where(lv > 0, 1.0 / b_term, 0.0)[h.x_index]
    repeat = x > 0
    log_alpha_t = np.log(alpha + h.t_obs)
    log_alpha_tx = np.log(alpha + h.t_x)
    a3 = -(r + x) * log_alpha_t
    a4 = np.where(repeat, np.log(a) - log_b_term - (r + x) * log_alpha_tx, -np.inf)
    log_mix = np.logaddexp(a3, a4)
    ll = a12 + r * np.log(alpha) + log_mix
    # Posterior weights of the two branches: alive at T / dropped out after the last purchase.
    w_alive = np.exp(a3 - log_mix)
    w_dead = 1.0 - w_alive

    d_r = dig_r + np.log(alpha) - w_alive * log_alpha_t - w_dead * log_alpha_tx
    d_alpha = (
        r / alpha - w_alive * (r + x) / (alpha + h.t_obs) - w_dead * (r + x) / (alpha + h.t_x)
    )
    d_a = dig_a + w_dead / a
    d_b = dig_b - w_dead * inv_b_term
    grad = np.column_stack([d_r * r, d_alpha * alpha, d_a * a, d_b * b])
    return ll, grad


# Spread starting points on the log scale; CDNOW-like data sit near the first one.
_STARTS = (np.zeros(4), np.log([0.5, 5.0, 0.5, 2.0]), np.log([2.0, 20.0, 2.0, 10.0]))
# Above this many distinct histories the starting points are compared on a weighted resample.
_EXPLORE_ROWS = 20_000
# Largest gradient component (mean log-likelihood per customer, in log-parameters) that still
# counts as converged.
_GRADIENT_TOLERANCE = 1e-5


def _maximise_likelihood(histories: _Histories, penalizer: float) -> FloatArray:
    """Return the log-parameters that maximise the (penalised) mean log-likelihood.

    From a single start L-BFGS-B can stop early on a flat ridge (large ``a`` and ``b`` with a
    fixed ratio), so several starts are tried and the best kept. On large data the starts are
    compared on a resample of ``_EXPLORE_ROWS`` histories and only the winner is refined on
    all of them, which keeps a million distinct customers to a few seconds.
    """
    explore = histories
    if len(histories.x) > _EXPLORE_ROWS:
        explore = histories.resample(_EXPLORE_ROWS, np.random.default_rng(0))
    best = min(
        (_run_lbfgs(explore, penalizer, start) for start in _STARTS),
        key=lambda result: result.fun if np.isfinite(result.fun) else np.inf,
    )
    if explore is not histories:
        best = _run_lbfgs(histories, penalizer, best.x)
    if not np.isfinite(best.fun):
        raise RuntimeError(
            "BG/NBD fit failed: the log-likelihood was not finite at any starting point. "
            "Check the summary for extreme values (e.g. T in seconds rather than weeks)."
        )
    # L-BFGS-B often ends with an "abnormal" line search right at the optimum, when the
    # objective can no longer be resolved in floating point; only a sizeable gradient means
    # it stopped short. Parameters beyond 1e6 mean the likelihood keeps rising along a ridge
    # (typically a and b together, when the data show no sign of customers leaving).
    stopped_short = not best.success and np.max(np.abs(best.jac)) > _GRADIENT_TOLERANCE
    if stopped_short or np.any(np.abs(best.x) > np.log(1e6)):
        r, alpha, a, b = np.exp(best.x)
        warnings.warn(
            f"BG/NBD fit did not settle ({best.message}); r={r:.4g}, alpha={alpha:.4g}, "
            f"a={a:.4g}, b={b:.4g} may be unreliable. Parameters running off to extreme values "
            "mean the data cannot pin them down, e.g. when they show no sign of customers "
            "leaving; check the summary (units, calibration window) before using predictions.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return best.x


def _run_lbfgs(histories: _Histories, penalizer: float, start: FloatArray) -> OptimizeResult:
    """One L-BFGS-B run on the penalised mean negative log-likelihood, from ``start``."""
    weights = histories.counts / histories.counts.sum()

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        ll, grad_log = _log_likelihood_and_gradient(params, histories)
        value = -(weights @ ll) + penalizer * np.sum(params**2)
        # The penalty's gradient in log-parameters: d/d(log t) of t^2 is 2 t^2.
        grad = -(weights @ grad_log) + penalizer * 2.0 * params**2
        return float(value), grad

    return minimize(
        objective, start, jac=True, method="L-BFGS-B",
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )


def _validate_summary(
    frequency: ArrayLike, recency: ArrayLike, T: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Check a (frequency, recency, T) summary and return it as three float arrays."""
    arrays = {}
    for name, values in (("frequency", frequency), ("recency", recency), ("T", T)):
        array = np.asarray(values, dtype=float)
        if array.ndim > 1:
            raise ValueError(f"{name} must be 1-D (one value per customer); got shape {array.shape}.")
        arrays[name] = np.atleast_1d(array)
    lengths = {name: array.size for name, array in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "frequency, recency and T must have one value per customer each; got lengths "
            + ", ".join(f"{name}={n}" for name, n in lengths.items()) + "."
        )
    x, t_x, t_obs = arrays["frequency"], arrays["recency"], arrays["T"]
    for name, array in arrays.items():
        _reject(name, ~np.isfinite(array), array, "are missing or not finite", "Drop or fix them.")
        _reject(name, array < 0, array, "are negative", "Times and counts cannot be negative.")
    _reject(
        "frequency", x != np.round(x), x, "are not whole numbers",
        "frequency counts repeat purchases (distinct purchase periods after the first).",
    )
    _reject(
        "recency", t_x > t_obs, t_x, "are larger than T",
        "The last purchase must fall inside the observation window: recency <= T.",
    )
    _reject(
        "recency", (x == 0) & (t_x != 0), t_x, "are not 0 although frequency is 0",
        "recency is the time from the first to the last purchase, so it is 0 "
        "for customers without a repeat purchase.",
    )
    return x, t_x, t_obs


def _reject(name: str, bad: FloatArray, values: FloatArray, what: str, fix: str) -> None:
    """Raise a ValueError naming how many values of ``name`` are bad, where, and how to fix it."""
    if not np.any(bad):
        return
    positions = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in positions[:3])
    examples = ", ".join(repr(float(values[i])) for i in positions[:3])
    more = ", ..." if positions.size > 3 else ""
    raise ValueError(
        f"{name}: {positions.size} value(s) {what} (positions {shown}{more}: "
        f"{examples}{more}). {fix}"
    )
