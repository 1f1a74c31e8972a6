"""Gamma-Gamma spend model: expected value of a customer's future purchases, by maximum likelihood.

Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves for customer base analysis",
Journal of Marketing Research 42(4), 415-430; notation of Fader & Hardie (2013), "The
Gamma-Gamma model of monetary value".

Story of the model, per customer:

- each purchase's value is Gamma(shape=p, rate=nu) distributed, so the customer's true mean
  spend per purchase is ``p / nu``;
- across customers ``nu ~ Gamma(shape=q, rate=v)`` (``v`` is the paper's gamma);
- spend is independent of how often a customer buys, so the model pairs with any purchase-count
  model (``features.bgnbd.BetaGeoModel``) to give a lifetime value.

Every customer is summarised by two numbers:

- ``frequency`` (x): the number of repeat purchases (purchases after the first one), as in the
  BG/NBD summary;
- ``monetary_value`` (m_x): the mean value of those repeat purchases, in a currency unit of your
  choice (the model's answers come back in that unit). The first purchase is left out because it
  tends to differ systematically from later ones. Meaningless, and ignored, when ``x`` is 0.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import digamma, gammaln
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

__all__ = ["GammaGammaModel"]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


class GammaGammaModel(BaseEstimator):
    """Gamma-Gamma model of the mean value of a customer's repeat purchases.

    Parameters
    ----------
    penalizer:
        Strength of an L2 penalty ``penalizer * (p^2 + q^2 + v^2)`` added to the *mean*
        negative log-likelihood per customer. 0 (the default) gives the plain maximum
        likelihood estimate.

    Attributes
    ----------
    p_:
        Shape of the Gamma distribution of a single purchase's value.
    q_, v_:
        Shape and rate of the Gamma distribution of ``nu`` across customers. The population
        mean spend per purchase is ``p_ * v_ / (q_ - 1)`` (finite only when ``q_ > 1``).
    log_likelihood_:
        Total (summed over repeat customers, unpenalised) log-likelihood at the fit.
    n_customers_:
        Number of customers with at least one repeat purchase, i.e. those the fit used.
    """

    def __init__(self, penalizer: float = 0.0) -> None:
        self.penalizer = penalizer

    def fit(self, frequency: ArrayLike, monetary_value: ArrayLike) -> GammaGammaModel:
        """Estimate ``p_, q_, v_`` from one (frequency, monetary_value) row per customer.

        Only customers with ``frequency > 0`` carry information about spend; the others are
        skipped, whatever their ``monetary_value``. Returns ``self``.
        """
        if not np.isfinite(self.penalizer) or self.penalizer < 0:
            raise ValueError(
                f"penalizer must be a finite number >= 0, got {self.penalizer!r}."
            )
        x, m = _validate_spend(frequency, monetary_value)
        repeat = x > 0
        if not np.any(repeat):
            raise ValueError(
                "fit needs customers with at least one repeat purchase (frequency > 0); "
                f"all {x.size} customers have frequency 0."
            )
        spend = _RepeatSpend.from_summary(x[repeat], m[repeat])
        log_params = _maximise_likelihood(spend, self.penalizer)
        params = np.exp(log_params)
        self.p_, self.q_, self.v_ = (float(v) for v in params)
        ll, _ = _log_likelihood_and_gradient(params, spend)
        self.log_likelihood_ = float(ll.sum())
        self.n_customers_ = int(spend.x.size)
        return self

    def conditional_expected_average_value(
        self, frequency: ArrayLike, monetary_value: ArrayLike
    ) -> FloatArray:
        """Expected value of each customer's future purchases, given their spend history.

        ``E[M | x, m_x] = (p * (v + x * m_x)) / (p * x + q - 1)``: a weighted average of the
        population mean ``p v / (q - 1)`` and the customer's own mean ``m_x``, with more weight
        on ``m_x`` the more repeat purchases back it. Customers with ``frequency`` 0 get the
        population mean. The answer is ``inf`` where the posterior mean does not exist: for
        everyone without repeat purchases if the fit found ``q_ <= 1``, and for customers with
        ``p_ * x + q_ <= 1``. Same currency unit as ``monetary_value``.
        """
        check_is_fitted(self, ["p_", "q_", "v_"])
        x, m = _validate_spend(frequency, monetary_value)
        p, q, v = self.p_, self.q_, self.v_
        population_mean = p * v / (q - 1.0) if q > 1.0 else np.inf
        # x == 0 rows may carry NaN or 0 spend; keep them out of the arithmetic.
        safe_m = np.where(x > 0, m, 0.0)
        shape = p * x + q
        # E[1/nu] under the Gamma(px+q, v+x m) posterior of nu exists only when px + q > 1.
        individual = np.divide(
            p * (v + x * safe_m), shape - 1.0, out=np.full_like(x, np.inf), where=shape > 1.0
        )
        return np.where(x > 0, individual, population_mean)


class _RepeatSpend(NamedTuple):
    """Repeat customers' (x, m_x) with the parameter-free logarithms computed once.

    The log-gamma and digamma terms depend on ``x`` alone, so they are evaluated once per
    distinct frequency in ``x_levels`` and looked up through ``x_index``.
    """

    x: FloatArray
    m: FloatArray
    log_m: FloatArray
    log_x: FloatArray
    x_levels: FloatArray
    x_index: npt.NDArray[np.intp]

    @classmethod
    def from_summary(cls, x: FloatArray, m: FloatArray) -> _RepeatSpend:
        x_levels, x_index = np.unique(x, return_inverse=True)
        return cls(x, m, np.log(m), np.log(x), x_levels, x_index)


def _log_likelihood_and_gradient(
    params: FloatArray, s: _RepeatSpend
) -> tuple[FloatArray, FloatArray]:
    """Per-customer log-likelihood of (x, m_x) and its gradient in the log-parameters.

    ``x * m_x`` given ``nu`` is Gamma(p x, nu); integrating ``nu ~ Gamma(q, v)`` out gives
    ``log L = lnG(px+q) - lnG(px) - lnG(q) + q ln v + (px-1) ln m + px ln x - (px+q) ln(v + x m)``.
    Returns ``(ll, grad)`` with shapes ``(n,)`` and ``(n, 3)``; gradient columns are
    derivatives with respect to ``log p``, ``log q`` and ``log v``.
    """
    p, q, v = params
    px_levels = p * s.x_levels
    log_gamma_ratio = (gammaln(px_levels + q) - gammaln(px_levels) - gammaln(q))[s.x_index]
    dig_sum = digamma(px_levels + q)[s.x_index]
    dig_px = digamma(px_levels)[s.x_index]

    px = p * s.x
    log_total = np.log(v + s.x * s.m)
    ll = (
        log_gamma_ratio + q * np.log(v) + (px - 1.0) * s.log_m + px * s.log_x
        - (px + q) * log_total
    )
    d_p = s.x * (dig_sum - dig_px + s.log_m + s.log_x - log_total)
    d_q = dig_sum - digamma(q) + np.log(v) - log_total
    d_v = q / v - (px + q) / (v + s.x * s.m)
    return ll, np.column_stack([d_p * p, d_q * q, d_v * v])


# Largest gradient component (mean log-likelihood per customer, in log-parameters) that still
# counts as converged.
_GRADIENT_TOLERANCE = 1e-5


def _maximise_likelihood(spend: _RepeatSpend, penalizer: float) -> FloatArray:
    """Return the log-parameters that maximise the (penalised) mean log-likelihood.

    L-BFGS-B runs from a few starts and the best optimum is kept. ``v`` has the currency unit
    of spend, so the starts are scaled by the median spend: the same code then converges
    whether spend is in cents or in thousands.
    """
    scale = float(np.median(spend.m))
    starts = (
        np.log([1.0, 1.0, scale]),
        np.log([5.0, 3.0, 2.0 * scale]),
        np.log([20.0, 10.0, 0.5 * scale]),
    )

    def objective(log_params: FloatArray) -> tuple[float, FloatArray]:
        params = np.exp(log_params)
        ll, grad_log = _log_likelihood_and_gradient(params, spend)
        value = -ll.mean() + penalizer * np.sum(params**2)
        # The penalty's gradient in log-parameters: d/d(log t) of t^2 is 2 t^2.
        grad = -grad_log.mean(axis=0) + penalizer * 2.0 * params**2
        return float(value), grad

    results = [
        minimize(
            objective, start, jac=True, method="L-BFGS-B",
            options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
        )
        for start in starts
    ]
    best = min(results, key=lambda result: result.fun if np.isfinite(result.fun) else np.inf)
    if not np.isfinite(best.fun):
        raise RuntimeError(
            "Gamma-Gamma fit failed: the log-likelihood was not finite at any starting point. "
            "Check monetary_value for extreme values."
        )
    # L-BFGS-B often ends with an "abnormal" line search right at the optimum, when the
    # objective can no longer be resolved in floating point; only a sizeable gradient means
    # it stopped short.
    if not best.success and np.max(np.abs(best.jac)) > _GRADIENT_TOLERANCE:
        p, q, v = np.exp(best.x)
        warnings.warn(
            f"Gamma-Gamma fit did not converge ({best.message}); p={p:.4g}, q={q:.4g}, "
            f"v={v:.4g} may be unreliable.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return best.x


def _validate_spend(
    frequency: ArrayLike, monetary_value: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Check a (frequency, monetary_value) summary and return it as two float arrays."""
    x = np.atleast_1d(np.asarray(frequency, dtype=float))
    m = np.atleast_1d(np.asarray(monetary_value, dtype=float))
    if x.ndim > 1 or m.ndim > 1:
        raise ValueError(
            "frequency and monetary_value must be 1-D (one value per customer); got shapes "
            f"{x.shape} and {m.shape}."
        )
    if x.size != m.size:
        raise ValueError(
            "frequency and monetary_value must have one value per customer each; got lengths "
            f"frequency={x.size}, monetary_value={m.size}."
        )
    bad_x = ~np.isfinite(x) | (x < 0) | (x != np.round(x))
    if np.any(bad_x):
        raise ValueError(
            f"frequency: {_describe(bad_x, x)} are not whole numbers >= 0. frequency counts "
            "repeat purchases (purchases after the first one)."
        )
    repeat = x > 0
    bad_m = repeat & ~(np.isfinite(m) & (m > 0))
    if np.any(bad_m):
        raise ValueError(
            f"monetary_value: {_describe(bad_m, m)} of customers with repeat purchases are not "
            "positive finite amounts. The Gamma-Gamma model needs a mean repeat spend > 0; "
            "exclude those customers (e.g. only free or fully refunded orders) or fix their "
            "amounts before fitting."
        )
    return x, m


def _describe(bad: npt.NDArray[np.bool_], values: FloatArray) -> str:
    """``'3 value(s) (positions 4, 17, 90: 0.0, -2.5, nan)'`` for the flagged entries."""
    positions = np.flatnonzero(bad)
    shown = ", ".join(str(int(i)) for i in positions[:3])
    examples = ", ".join(repr(float(values[i])) for i in positions[:3])
    more = ", ..." if positions.size > 3 else ""
    return f"{positions.size} value(s) (positions {shown}{more}: {examples}{more})"
