"""Synthetic shop: realistic, reproducible order lines for demos, model validation and benchmarks.

The shop is simulated customer by customer but vectorised over all customers of a chunk:

- customers are acquired throughout the period, more of them later (a growing shop); their
  first order is the acquisition;
- ordinary customers buy as a Poisson process with a gamma-distributed personal rate, and after
  every order stop for good with a personal beta-distributed dropout probability (BG/NBD-like);
- about 15% are replenishers who reorder one consumable category on a personal 20-45 day cycle;
- November-December are busier, weekends a little; promotion days (June 18, November 11 and the
  last Friday of November) bring extra orders and discounts;
- about 20% are coupon users who get a discount on most orders;
- returns are separate rows with ``status="returned"`` and order id ``<original>-R``.

Output columns (one row per order line), in the project's canonical names:

============  ===============  =========================================================
customer_id   str              zero-padded, e.g. ``"0000042"``; ids rise with acquisition
order_id      str              ``"O000000001"``; return rows ``"O000000001-R"``
order_ts      datetime64[us]   naive, meaning UTC; whole seconds
amount        float            money paid for the line after discount (refund for returns)
quantity      int              units on the line
category      str              product category
product_id    str              e.g. ``"P00042"``; a product has one unit price
discount      float            money off on the line, 0 when none (0 on return rows)
channel       str              ``web`` / ``app`` / ``store``
status        str              ``completed`` or ``returned``
============  ===============  =========================================================

Registered customers (``customers.parquet``, one row per customer, the "static tags" layer):
every buyer above plus ``NEVER_BUYER_SHARE`` (25%) as many sign-ups who never order, whose ids
continue after the buyers'. Never-buyers sign up throughout the period like acquisitions (more
later), so some are recent and still might buy.

===================  ===============  ====================================================
customer_id          str              the orders' ids; never-buyers ``n_customers`` and up
signup_ts            datetime64[us]   naive UTC, whole seconds; a buyer's is at or before the
                                      first order and never before ``start``: ~55% sign up at
                                      checkout (1-20 minutes before), the rest an exponential
                                      7-24 days earlier (by channel, mean ~16)
region               str              North / East / South / West / Central
gender               str              ``F`` / ``M`` / ``U``
age                  int64, nullable  years, 18-75; ~5% missing
acquisition_channel  str              search / social / referral / store / app
membership_level     str              basic / silver / gold (buyers ~60/27/13%)
===================  ===============  ====================================================

What the customer attributes carry, for measuring whether they improve a model:

- ``membership_level`` truly predicts retention. A buyer's level cuts a score made of the
  standardised log-odds of staying after an order (the hidden ``dropout_prob`` that drives the
  orders), 0.3 x their standardised log order rate and unit normal noise: gold buyers leave
  rarely (of buyers with six months of history, ~94% of gold and ~71% of basic ones order
  again). It is derived from traits, not from realised orders, so it does not leak the future.
  Never-buyers are mostly basic (82/14/4%), so the level also helps predict a first purchase.
- ``age`` carries a weak signal: 4 years older per standard deviation of log order rate
  (a replenisher's rate is one order per cycle), sd 12 years of noise. Never-buyers are
  younger on average (about 38 vs 41).
- ``acquisition_channel`` depends on the buyer's preferred order channel (store buyers came
  through ``store``, app buyers through ``app``) but has no effect on retention. It shapes the
  first purchase: ``store`` and ``referral`` sign-ups mostly buy at once, ``social`` ones wait
  longest, and never-buyers come through ``social`` twice as often as buyers. Together with
  sign-up recency (days since ``signup_ts``) it predicts whether a sign-up who has not bought
  yet buys within 30 days.
- ``region`` and ``gender`` are pure noise: same distribution for every customer, no effect.

The period runs from ``start`` 00:00 to the end of the day ``end``. The same seed gives the same
rows on every machine (for one numpy version): each chunk of customers draws from its own
generator derived from the seed and the chunk index. Customer attributes draw from separate
generators (their own spawn keys), so the orders are the same as without them.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["CUSTOMER_COLUMNS", "ORDER_COLUMNS", "generate_orders", "simulate_shop", "write_shop"]

ORDER_COLUMNS = (
    "customer_id", "order_id", "order_ts", "amount", "quantity",
    "category", "product_id", "discount", "channel", "status",
)
ORDERS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("order_id", pa.string()),
    ("order_ts", pa.timestamp("us")),
    ("amount", pa.float64()),
    ("quantity", pa.int64()),
    ("category", pa.string()),
    ("product_id", pa.string()),
    ("discount", pa.float64()),
    ("channel", pa.string()),
    ("status", pa.string()),
])

CUSTOMER_COLUMNS = (
    "customer_id", "signup_ts", "region", "gender", "age", "acquisition_channel",
    "membership_level",
)
CUSTOMERS_SCHEMA = pa.schema([
    ("customer_id", pa.string()),
    ("signup_ts", pa.timestamp("us")),
    ("region", pa.string()),
    ("gender", pa.string()),
    ("age", pa.int64()),
    ("acquisition_channel", pa.string()),
    ("membership_level", pa.string()),
])

# Part of the output's identity: changing it changes which generator draws which customer.
CHUNK_CUSTOMERS = 100_000
GENERATOR_VERSION = 2  # 2: adds customers.parquet; orders as in 1
# First spawn key of each random stream; chunk streams add the chunk index.
CATALOGUE_STREAM = 0
ORDERS_STREAM = 1
BUYER_PROFILE_STREAM = 2
NEVER_BUYER_STREAM = 3

CUSTOMER_ID_WIDTH = 7
ORDER_ID_WIDTH = 9
SECONDS_PER_DAY = 86_400
MICROS_PER_SECOND = 1_000_000


@dataclass(frozen=True)
class Category:
    """A product category: price level, whether it is bought again and again, how often returned."""

    name: str
    median_unit_price: float
    consumable: bool
    return_rate: float
    share: float  # of lines, before personal preferences


CATEGORIES = (
    Category("groceries", 6.0, True, 0.006, 0.17),
    Category("household", 9.0, True, 0.012, 0.10),
    Category("beauty", 16.0, True, 0.03, 0.12),
    Category("pet_supplies", 22.0, True, 0.012, 0.07),
    Category("books", 14.0, False, 0.025, 0.10),
    Category("fashion", 39.0, False, 0.13, 0.17),
    Category("sports", 45.0, False, 0.055, 0.08),
    Category("home", 55.0, False, 0.045, 0.10),
    Category("electronics", 140.0, False, 0.065, 0.09),
)
PRODUCTS_PER_CATEGORY = 250
PRODUCT_PRICE_SIGMA = 0.55  # lognormal spread of unit prices around the category median
PRODUCT_POPULARITY_EXPONENT = 1.05  # Zipf: a few best-sellers, a long tail

CHANNELS = ("web", "app", "store")
CHANNEL_SHARES = (0.5, 0.3, 0.2)
STATUSES = ("completed", "returned")
PREFERRED_CHANNEL_PROB = 0.8

# Relative order volume per hour of day, by channel: stores keep opening hours, apps peak at
# lunch and late evening, web in the evening.
HOURLY_PROFILE = {
    "web": (1, .6, .4, .3, .3, .4, .8, 1.5, 2.5, 3, 3.2, 3.5, 4, 3.8, 3.5, 3.5, 3.8, 4.2, 4.8, 5.5,
            6, 5.8, 4.5, 2.5),
    "app": (1.5, .8, .4, .3, .3, .4, 1, 2.5, 3, 2.8, 2.8, 3.5, 5, 4.5, 3.2, 3, 3.2, 3.8, 4.5, 5.5,
            6.5, 7, 6, 3.5),
    "store": (0, 0, 0, 0, 0, 0, 0, 0, 0, .8, 2.5, 3.5, 4.5, 4.2, 3.8, 3.8, 4.2, 5, 5.5, 4.5, 2.5,
              0, 0, 0),
}

# Demand calendar. Multipliers are relative; they are normalised to average 1 over the period.
MONTH_DEMAND = {1: 0.85, 2: 0.9, 11: 1.5, 12: 1.7}
WEEKEND_DEMAND = 1.2
FIXED_PROMOTIONS = ((6, 18), (11, 11))  # (month, day), every year
PROMOTION_DEMAND = 3.0
BLACK_FRIDAY_DEMAND = 3.5
SHOP_GROWTH = 0.8  # acquisition density at the end is e**0.8 ~ 2.2 times that at the start

# Ordinary customers (rates are per day of average demand).
MEAN_ORDER_RATE_PER_DAY = 1 / 60
ORDER_RATE_SHAPE = 1.3
MAX_ORDER_RATE_PER_DAY = 0.5
DROPOUT_BETA = (0.55, 2.5)  # mean ~0.18 per order; U-shaped: many leave early, some stay

REPLENISHER_SHARE = 0.15
REPLENISH_CYCLE_DAYS = (20, 45)
REPLENISH_JITTER = 0.12  # sd of a gap, as a share of the cycle
REPLENISHER_DROPOUT_BETA = (1.0, 20.0)  # loyal: mean ~0.05 per order
REPLENISHER_MAIN_CATEGORY_PROB = 0.85
FAVOURITE_PRODUCT_PROB = 0.6

COUPON_USER_SHARE = 0.2
COUPON_ORDER_PROB = 0.6
COUPON_RATES = (0.10, 0.15, 0.20)
PROMOTION_DISCOUNT_PROB = 0.8
PROMOTION_RATES = (0.20, 0.25, 0.30)

LINES_PER_ORDER_PROBS = (0.55, 0.25, 0.13, 0.07)  # 1, 2, 3, 4 lines
REPLENISHER_LINES_PER_ORDER_PROBS = (0.7, 0.2, 0.08, 0.02)
QUANTITY_PROBS = (0.82, 0.11, 0.04, 0.02, 0.01)  # 1..5 units
CONSUMABLE_QUANTITY_PROBS = (0.62, 0.2, 0.09, 0.05, 0.04)
CATEGORY_CONCENTRATION = 1.5  # Dirichlet total; small = customers stick to few categories
RETURNER_SHAPE = 0.6  # gamma shape of a personal return propensity (mean 1): a few serial returners
RETURN_DELAY_DAYS = (2, 20)

# Registered customers (customers.parquet). Attributes come from their own random streams, so
# adding or changing one never moves an order.
NEVER_BUYER_SHARE = 0.25  # sign-ups who never order, as a share of the buyers
REGIONS = ("North", "East", "South", "West", "Central")
REGION_SHARES = (0.22, 0.18, 0.24, 0.16, 0.20)
GENDERS = ("F", "M", "U")
GENDER_SHARES = (0.49, 0.45, 0.06)
AGE_YEARS = (18, 75)
AGE_MEAN_YEARS = 40.0
AGE_SD_YEARS = 12.0
AGE_YEARS_PER_RATE_SD = 4.0  # weak signal: frequent buyers are a little older
AGE_MISSING_SHARE = 0.05
NEVER_BUYER_RATE_SCORE = -0.6  # never-buyers' ages look like those of slow buyers (younger)

ACQUISITION_CHANNELS = ("search", "social", "referral", "store", "app")
# A buyer's acquisition channel given their preferred order channel (web, app, store).
BUYER_ACQUISITION_SHARES = (
    (0.45, 0.25, 0.15, 0.05, 0.10),
    (0.25, 0.22, 0.10, 0.03, 0.40),
    (0.12, 0.08, 0.15, 0.60, 0.05),
)
NEVER_BUYER_ACQUISITION_SHARES = (0.30, 0.40, 0.07, 0.05, 0.18)
SIGNUP_HOURS_LIKE = ("web", "web", "web", "store", "app")  # whose HOURLY_PROFILE sign-ups follow
# Per acquisition channel: the chance a buyer signs up at checkout (minutes before the first
# order), and otherwise the mean of the exponential delay between sign-up and first order.
CHECKOUT_SIGNUP_PROB = (0.50, 0.30, 0.70, 0.85, 0.55)
SIGNUP_DELAY_MEAN_DAYS = (14.0, 24.0, 10.0, 7.0, 12.0)
CHECKOUT_SIGNUP_MINUTES = (1.0, 20.0)

MEMBERSHIP_LEVELS = ("basic", "silver", "gold")
# A buyer's membership score is loyalty (low dropout) plus a little order rate plus unit noise;
# the thresholds cut it into ~60% basic, ~27% silver, ~13% gold.
MEMBERSHIP_LOYALTY_WEIGHT = 1.0
MEMBERSHIP_RATE_WEIGHT = 0.3
MEMBERSHIP_THRESHOLDS = (0.35, 1.65)
NEVER_BUYER_MEMBERSHIP_SHARES = (0.82, 0.14, 0.04)
# Standardising constants of the hidden traits (population moments, not per chunk, so that
# chunking cannot change anyone's attributes).
LOYALTY_LOG_ODDS_MOMENTS = (2.6, 2.1)  # of log((1 - dropout) / dropout) over all buyers
LOG_RATE_MOMENTS = (-0.432, 1.065)  # of log(rate / mean rate): digamma(1.3) - log(1.3), sd


@dataclass(frozen=True)
class Calendar:
    """Daily demand multipliers over the period, and the time warp they define."""

    start: np.datetime64  # first day, 'D'
    demand: np.ndarray  # multiplier per day, averages 1
    promotion: np.ndarray  # bool per day
    cumulative: np.ndarray  # demand integrated up to the start of each day; len = days + 1

    @property
    def n_days(self) -> int:
        return len(self.demand)

    def warp(self, day: np.ndarray) -> np.ndarray:
        """Demand-weighted time: a unit-rate process in warped time follows the calendar."""
        whole = np.minimum(day.astype(np.int64), self.n_days - 1)
        return self.cumulative[whole] + (day - whole) * self.demand[whole]

    def unwarp(self, warped: np.ndarray) -> np.ndarray:
        """Inverse of ``warp``; ``inf`` beyond the end of the period."""
        whole = np.searchsorted(self.cumulative, warped, side="right") - 1
        whole = np.minimum(whole, self.n_days - 1)
        day = whole + (warped - self.cumulative[whole]) / self.demand[whole]
        return np.where(warped < self.cumulative[-1], day, np.inf)


def build_calendar(start: str, end: str) -> Calendar:
    """Demand calendar from ``start`` to ``end`` inclusive."""
    days = pd.date_range(start, end, freq="D")
    demand = np.ones(len(days))
    for month, factor in MONTH_DEMAND.items():
        demand[days.month == month] *= factor
    demand[days.day_of_week >= 5] *= WEEKEND_DEMAND
    promotion = np.zeros(len(days), dtype=bool)
    for month, day in FIXED_PROMOTIONS:
        promotion |= (days.month == month) & (days.day == day)
    black_friday = _is_last_friday_of_november(days)
    demand[promotion] *= PROMOTION_DEMAND
    demand[black_friday] *= BLACK_FRIDAY_DEMAND
    promotion |= black_friday
    demand /= demand.mean()
    cumulative = np.concatenate([[0.0], np.cumsum(demand)])
    return Calendar(np.datetime64(days[0].date(), "D"), demand, promotion, cumulative)


def _is_last_friday_of_november(days: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray((days.month == 11) & (days.day_of_week == 4) & (days.day > 23))


@dataclass(frozen=True)
class Catalogue:
    """Products: category, unit price and popularity rank, shared by every chunk."""

    category: np.ndarray  # category index per product
    unit_price: np.ndarray
    product_ids: pa.Array
    popularity_cdf: np.ndarray  # over ranks within a category


def build_catalogue(rng: np.random.Generator) -> Catalogue:
    """Products of every category with lognormal unit prices around the category median."""
    medians = np.array([c.median_unit_price for c in CATEGORIES])
    category = np.repeat(np.arange(len(CATEGORIES)), PRODUCTS_PER_CATEGORY)
    unit_price = medians[category] * rng.lognormal(0.0, PRODUCT_PRICE_SIGMA, len(category))
    # Prices end in .99 or .49 like on a real shelf.
    unit_price = np.maximum(np.floor(unit_price) + rng.choice([0.49, 0.99], len(category)), 0.99)
    popularity = 1.0 / np.arange(1, PRODUCTS_PER_CATEGORY + 1) ** PRODUCT_POPULARITY_EXPONENT
    product_ids = _padded_ids("P", np.arange(1, len(category) + 1), 5)
    return Catalogue(category, unit_price, product_ids, np.cumsum(popularity) / popularity.sum())


@dataclass(frozen=True)
class Customers:
    """Hidden traits of one chunk of customers."""

    first_index: int  # global index of the chunk's first customer
    acquired_day: np.ndarray  # days since start, fractional
    replenisher: np.ndarray
    coupon_user: np.ndarray
    order_rate: np.ndarray  # per day of average demand
    dropout_prob: np.ndarray  # after each order
    cycle_days: np.ndarray
    preferred_channel: np.ndarray
    category_cdf: np.ndarray  # (customers, categories)
    main_category: np.ndarray
    favourite_product: np.ndarray
    return_propensity: np.ndarray

    def __len__(self) -> int:
        return len(self.acquired_day)


def draw_customers(
    rng: np.random.Generator, first_index: int, n: int, n_total: int,
    calendar: Calendar, catalogue: Catalogue,
) -> Customers:
    """Traits for customers ``first_index .. first_index + n - 1`` of ``n_total``."""
    replenisher = rng.random(n) < REPLENISHER_SHARE
    rate = rng.gamma(ORDER_RATE_SHAPE, MEAN_ORDER_RATE_PER_DAY / ORDER_RATE_SHAPE, n)
    dropout = np.where(
        replenisher, rng.beta(*REPLENISHER_DROPOUT_BETA, n), rng.beta(*DROPOUT_BETA, n)
    )
    shares = np.array([c.share for c in CATEGORIES])
    preference = rng.gamma(shares * CATEGORY_CONCENTRATION, size=(n, len(CATEGORIES)))
    preference /= preference.sum(axis=1, keepdims=True)
    consumables = np.flatnonzero([c.consumable for c in CATEGORIES])
    main_category = consumables[rng.integers(0, len(consumables), n)]
    return Customers(
        first_index=first_index,
        acquired_day=_acquisition_days(rng, first_index, n, n_total, calendar),
        replenisher=replenisher,
        coupon_user=rng.random(n) < COUPON_USER_SHARE,
        order_rate=np.minimum(rate, MAX_ORDER_RATE_PER_DAY),
        dropout_prob=dropout,
        cycle_days=rng.uniform(*REPLENISH_CYCLE_DAYS, n),
        preferred_channel=rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES),
        category_cdf=np.cumsum(preference, axis=1),
        main_category=main_category,
        favourite_product=_popular_products(rng, main_category, catalogue),
        return_propensity=rng.gamma(RETURNER_SHAPE, 1 / RETURNER_SHAPE, n),
    )


def _acquisition_days(
    rng: np.random.Generator, first_index: int, n: int, n_total: int, calendar: Calendar
) -> np.ndarray:
    """First-order days: growing with the shop and the calendar, rising with the customer index.

    Customer i gets quantile (i + u) / n_total, so ids follow acquisition order without any chunk
    having to know the others' draws.
    """
    day = np.arange(calendar.n_days)
    weight = np.exp(SHOP_GROWTH * day / calendar.n_days) * calendar.demand
    cdf = np.concatenate([[0.0], np.cumsum(weight)]) / weight.sum()
    quantile = (first_index + np.arange(n) + rng.random(n)) / n_total
    whole = np.minimum(np.searchsorted(cdf, quantile, side="right") - 1, calendar.n_days - 1)
    return whole + (quantile - cdf[whole]) / (cdf[whole + 1] - cdf[whole])


def _popular_products(
    rng: np.random.Generator, category: np.ndarray, catalogue: Catalogue
) -> np.ndarray:
    rank = np.searchsorted(catalogue.popularity_cdf, rng.random(len(category)), side="right")
    rank = np.minimum(rank, PRODUCTS_PER_CATEGORY - 1)
    return category * PRODUCTS_PER_CATEGORY + rank


@dataclass(frozen=True)
class Purchases:
    """Orders of one chunk, sorted by customer then time."""

    customer: np.ndarray  # index within the chunk
    day: np.ndarray  # fractional days since start
    churned: np.ndarray  # per customer: dropped out before the end


def simulate_purchases(
    rng: np.random.Generator, customers: Customers, calendar: Calendar
) -> Purchases:
    """Order times of every customer, simulated in rounds over the customers still active.

    Each round records one order per active customer, lets some drop out, then draws the next
    order time; customers whose next order falls after the end leave the loop alive.
    """
    active = np.arange(len(customers))
    day = customers.acquired_day.copy()
    warped = calendar.warp(day)
    churned = np.zeros(len(customers), dtype=bool)
    customer_parts, day_parts = [], []
    while active.size:
        customer_parts.append(active)
        day_parts.append(day)
        drops = rng.random(active.size) < customers.dropout_prob[active]
        churned[active[drops]] = True
        active, day, warped = active[~drops], day[~drops], warped[~drops]
        warped = warped + rng.exponential(size=active.size) / customers.order_rate[active]
        jitter = 1 + REPLENISH_JITTER * rng.standard_normal(active.size)
        replenish_gap = np.maximum(customers.cycle_days[active] * jitter, 1.0)
        day = np.where(
            customers.replenisher[active], day + replenish_gap, calendar.unwarp(warped)
        )
        inside = day < calendar.n_days
        active, day, warped = active[inside], day[inside], warped[inside]
    customer = np.concatenate(customer_parts)
    day = np.concatenate(day_parts)
    order = np.lexsort((day, customer))
    return Purchases(customer[order], day[order], churned)


@dataclass(frozen=True)
class Lines:
    """Order lines of one chunk as plain arrays (strings are added when the table is built)."""

    order: np.ndarray  # index into the chunk's orders
    customer: np.ndarray
    ts_us: np.ndarray  # microseconds since the epoch
    product: np.ndarray
    quantity: np.ndarray
    amount: np.ndarray
    discount: np.ndarray
    channel: np.ndarray
    returned: np.ndarray  # bool: this row is a return


def build_lines(
    rng: np.random.Generator, customers: Customers, purchases: Purchases,
    calendar: Calendar, catalogue: Catalogue,
) -> Lines:
    """Lines of every purchase: timestamp, channel, products, quantities, prices, discounts."""
    n_orders = len(purchases.customer)
    who = purchases.customer
    channel = _order_channels(rng, customers.preferred_channel[who])
    whole_day = purchases.day.astype(np.int64)
    ts_us = _order_timestamps(rng, whole_day, channel, calendar)
    discount_rate = _order_discount_rates(
        rng, customers.coupon_user[who], calendar.promotion[whole_day]
    )

    lines_per_order = np.where(
        customers.replenisher[who],
        _draw_counts(rng, REPLENISHER_LINES_PER_ORDER_PROBS, n_orders),
        _draw_counts(rng, LINES_PER_ORDER_PROBS, n_orders),
    )
    order = np.repeat(np.arange(n_orders), lines_per_order)
    customer = who[order]
    product = _line_products(rng, customers, customer, catalogue)
    consumable = np.array([c.consumable for c in CATEGORIES])[catalogue.category[product]]
    quantity = np.where(
        consumable,
        _draw_counts(rng, CONSUMABLE_QUANTITY_PROBS, len(order)),
        _draw_counts(rng, QUANTITY_PROBS, len(order)),
    )
    gross = np.round(catalogue.unit_price[product] * quantity, 2)
    discount = np.round(gross * discount_rate[order], 2)
    return Lines(
        order=order, customer=customer, ts_us=ts_us[order], product=product, quantity=quantity,
        amount=np.round(gross - discount, 2), discount=discount, channel=channel[order],
        returned=np.zeros(len(order), dtype=bool),
    )


def _draw_counts(rng: np.random.Generator, probs: tuple[float, ...], n: int) -> np.ndarray:
    """Counts 1..len(probs) with the given probabilities."""
    cdf = np.cumsum(probs) / np.sum(probs)
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(probs) - 1) + 1


def _order_channels(rng: np.random.Generator, preferred: np.ndarray) -> np.ndarray:
    other = (preferred + rng.integers(1, len(CHANNELS), len(preferred))) % len(CHANNELS)
    return np.where(rng.random(len(preferred)) < PREFERRED_CHANNEL_PROB, preferred, other)


def _order_timestamps(
    rng: np.random.Generator, whole_day: np.ndarray, channel: np.ndarray, calendar: Calendar
) -> np.ndarray:
    """Microseconds since the epoch: the simulated day plus a time of day typical of the channel."""
    hour = np.empty(len(whole_day), dtype=np.int64)
    for code, name in enumerate(CHANNELS):
        mask = channel == code
        profile = np.asarray(HOURLY_PROFILE[name], dtype=float)
        cdf = np.cumsum(profile) / profile.sum()
        hour[mask] = np.minimum(np.searchsorted(cdf, rng.random(mask.sum()), side="right"), 23)
    second_of_day = hour * 3600 + rng.integers(0, 3600, len(whole_day))
    start_s = calendar.start.astype("datetime64[s]").astype(np.int64)
    return (start_s + whole_day * SECONDS_PER_DAY + second_of_day) * MICROS_PER_SECOND


def _order_discount_rates(
    rng: np.random.Generator, coupon_user: np.ndarray, promotion_day: np.ndarray
) -> np.ndarray:
    """Share of the price taken off each order: coupons for coupon users, promotions for all."""
    n = len(coupon_user)
    coupon = np.where(
        coupon_user & (rng.random(n) < COUPON_ORDER_PROB), rng.choice(COUPON_RATES, n), 0.0
    )
    promoted = promotion_day & (rng.random(n) < PROMOTION_DISCOUNT_PROB)
    promotion = np.where(promoted, rng.choice(PROMOTION_RATES, n), 0.0)
    return np.maximum(coupon, promotion)


def _line_products(
    rng: np.random.Generator, customers: Customers, customer: np.ndarray, catalogue: Catalogue
) -> np.ndarray:
    """Product per line: replenishers mostly restock their consumable, others follow taste."""
    u = rng.random(len(customer))
    category = (u[:, None] > customers.category_cdf[customer]).sum(axis=1)
    category = np.minimum(category, len(CATEGORIES) - 1)
    restock = customers.replenisher[customer] & (
        rng.random(len(customer)) < REPLENISHER_MAIN_CATEGORY_PROB
    )
    category = np.where(restock, customers.main_category[customer], category)
    product = _popular_products(rng, category, catalogue)
    favourite = restock & (rng.random(len(customer)) < FAVOURITE_PRODUCT_PROB)
    return np.where(favourite, customers.favourite_product[customer], product)


def add_returns(
    rng: np.random.Generator, lines: Lines, customers: Customers,
    calendar: Calendar, catalogue: Catalogue,
) -> Lines:
    """Lines plus return rows: whole lines refunded 2-20 days later, if still in the period.

    Lines returned from one order go back together, so they share the return's timestamp.
    """
    category_rate = np.array([c.return_rate for c in CATEGORIES])
    line_rate = category_rate[catalogue.category[lines.product]]
    prob = np.minimum(line_rate * customers.return_propensity[lines.customer], 0.9)
    return_ts = _return_timestamps(rng, lines, calendar)[lines.order]
    end_us = _day_start_us(calendar, calendar.n_days)
    picked = np.flatnonzero((rng.random(len(prob)) < prob) & (return_ts < end_us))
    rows = np.concatenate([np.arange(len(prob)), picked])
    returned = np.concatenate([lines.returned, np.ones(len(picked), dtype=bool)])
    ts_us = np.concatenate([lines.ts_us, return_ts[picked]])
    # Rows stay grouped by customer and in time order, returns among the orders.
    order = np.lexsort((returned, ts_us, lines.customer[rows]))
    rows, returned, ts_us = rows[order], returned[order], ts_us[order]
    return Lines(
        order=lines.order[rows], customer=lines.customer[rows], ts_us=ts_us,
        product=lines.product[rows], quantity=lines.quantity[rows], amount=lines.amount[rows],
        discount=np.where(returned, 0.0, lines.discount[rows]), channel=lines.channel[rows],
        returned=returned,
    )


def _return_timestamps(rng: np.random.Generator, lines: Lines, calendar: Calendar) -> np.ndarray:
    """Per order: when its returns would arrive, at an hour typical of the order's channel."""
    first_line = np.searchsorted(lines.order, np.arange(lines.order[-1] + 1))
    order_us = lines.ts_us[first_line]
    order_day = (order_us - _day_start_us(calendar, 0)) // (SECONDS_PER_DAY * MICROS_PER_SECOND)
    # Whole-day offsets of 3..19 keep the delay within 2-20 days whatever the two times of day.
    low, high = RETURN_DELAY_DAYS
    return_day = order_day + rng.integers(low + 1, high, len(order_day))
    return _order_timestamps(rng, return_day, lines.channel[first_line], calendar)


def _day_start_us(calendar: Calendar, day: int) -> int:
    return int((calendar.start + day).astype("datetime64[us]").astype(np.int64))


def lines_table(
    lines: Lines, customers: Customers, n_orders: int, first_order_number: int,
    catalogue: Catalogue,
) -> pa.Table:
    """The canonical order table for one chunk's lines."""
    customer_numbers = customers.first_index + np.arange(len(customers))
    customer_ids = _padded_ids("", customer_numbers, CUSTOMER_ID_WIDTH)
    order_ids = _padded_ids("O", first_order_number + np.arange(n_orders), ORDER_ID_WIDTH)
    order_id = order_ids.take(pa.array(lines.order))
    return_id = pc.binary_join_element_wise(order_id, "-R", "")
    order_id = pc.if_else(pa.array(lines.returned), return_id, order_id)
    category_names = pa.array([c.name for c in CATEGORIES])
    columns = {
        "customer_id": customer_ids.take(pa.array(lines.customer)),
        "order_id": order_id,
        "order_ts": pa.array(lines.ts_us, pa.timestamp("us")),
        "amount": pa.array(lines.amount),
        "quantity": pa.array(lines.quantity.astype(np.int64)),
        "category": category_names.take(pa.array(catalogue.category[lines.product])),
        "product_id": catalogue.product_ids.take(pa.array(lines.product)),
        "discount": pa.array(lines.discount),
        "channel": pa.array(CHANNELS).take(pa.array(lines.channel)),
        "status": pa.array(STATUSES).take(pa.array(lines.returned.astype(np.int8))),
    }
    return pa.table(columns, schema=ORDERS_SCHEMA)


def _padded_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    text = pa.array(numbers, pa.int64()).cast(pa.string())
    digits = pc.utf8_lpad(text, width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "") if prefix else digits


@dataclass(frozen=True)
class Profiles:
    """Static attributes of consecutive registered customers, as codes (one customers chunk)."""

    first_number: int  # customer number of the first row, as in its id
    signup_us: np.ndarray  # microseconds since the epoch, whole seconds
    region: np.ndarray  # index into REGIONS
    gender: np.ndarray  # index into GENDERS
    age: np.ndarray  # years
    age_known: np.ndarray  # bool: False where the age is missing
    acquisition_channel: np.ndarray  # index into ACQUISITION_CHANNELS
    membership: np.ndarray  # index into MEMBERSHIP_LEVELS

    def __len__(self) -> int:
        return len(self.signup_us)


def draw_buyer_profiles(
    rng: np.random.Generator, customers: Customers, first_order_us: np.ndarray,
    calendar: Calendar,
) -> Profiles:
    """Attributes of one chunk of buyers, derived from their hidden traits plus noise.

    Uses only ``rng``, never a generator the orders draw from, so the orders stay as they are.
    """
    n = len(customers)
    rate_score = _order_rate_score(customers)
    channel = _draw_rows(rng, np.asarray(BUYER_ACQUISITION_SHARES)[customers.preferred_channel])
    loyalty = _loyalty_score(customers.dropout_prob)
    membership_score = (
        MEMBERSHIP_LOYALTY_WEIGHT * loyalty + MEMBERSHIP_RATE_WEIGHT * rate_score
        + rng.standard_normal(n)
    )
    age, age_known = _ages(rng, rate_score)
    return Profiles(
        first_number=customers.first_index,
        signup_us=_buyer_signups(rng, channel, first_order_us, calendar),
        region=rng.choice(len(REGIONS), n, p=REGION_SHARES),
        gender=rng.choice(len(GENDERS), n, p=GENDER_SHARES),
        age=age,
        age_known=age_known,
        acquisition_channel=channel,
        membership=np.searchsorted(MEMBERSHIP_THRESHOLDS, membership_score),
    )


def draw_never_buyer_profiles(
    rng: np.random.Generator, first_index: int, n: int, n_total: int, n_buyers: int,
    calendar: Calendar,
) -> Profiles:
    """Never-buyers ``first_index .. first_index + n - 1`` of ``n_total``; ids follow the buyers'.

    They sign up throughout the period like acquisitions (more later, busier in season), ids
    rising with sign-up, at an hour typical of the channel they came through.
    """
    channel = rng.choice(len(ACQUISITION_CHANNELS), n, p=NEVER_BUYER_ACQUISITION_SHARES)
    day = _acquisition_days(rng, first_index, n, n_total, calendar)
    hours_like = np.array([CHANNELS.index(name) for name in SIGNUP_HOURS_LIKE])[channel]
    signup_us = _order_timestamps(rng, day.astype(np.int64), hours_like, calendar)
    age, age_known = _ages(rng, NEVER_BUYER_RATE_SCORE + rng.standard_normal(n))
    return Profiles(
        first_number=n_buyers + first_index,
        signup_us=signup_us,
        region=rng.choice(len(REGIONS), n, p=REGION_SHARES),
        gender=rng.choice(len(GENDERS), n, p=GENDER_SHARES),
        age=age,
        age_known=age_known,
        acquisition_channel=channel,
        membership=rng.choice(len(MEMBERSHIP_LEVELS), n, p=NEVER_BUYER_MEMBERSHIP_SHARES),
    )


def _draw_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One category per row of a (rows, categories) probability matrix."""
    cdf = np.cumsum(probs, axis=1)
    picked = (rng.random(len(probs))[:, None] > cdf).sum(axis=1)
    return np.minimum(picked, probs.shape[1] - 1)


def _loyalty_score(dropout_prob: np.ndarray) -> np.ndarray:
    """Standardised log-odds of staying after an order: high for customers who rarely leave."""
    p = np.clip(dropout_prob, 1e-4, 1 - 1e-4)
    mean, sd = LOYALTY_LOG_ODDS_MOMENTS
    return (np.log((1 - p) / p) - mean) / sd


def _order_rate_score(customers: Customers) -> np.ndarray:
    """Standardised log of the rate a customer orders at; a replenisher's is one per cycle."""
    rate = np.where(customers.replenisher, 1 / customers.cycle_days, customers.order_rate)
    mean, sd = LOG_RATE_MOMENTS
    return (np.log(rate / MEAN_ORDER_RATE_PER_DAY) - mean) / sd


def _ages(rng: np.random.Generator, rate_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole years, a little higher for frequent buyers; some unknown."""
    n = len(rate_score)
    noise = AGE_SD_YEARS * rng.standard_normal(n)
    years = AGE_MEAN_YEARS + AGE_YEARS_PER_RATE_SD * rate_score + noise
    age = np.clip(np.round(years), *AGE_YEARS).astype(np.int64)
    return age, rng.random(n) >= AGE_MISSING_SHARE


def _buyer_signups(
    rng: np.random.Generator, channel: np.ndarray, first_order_us: np.ndarray,
    calendar: Calendar,
) -> np.ndarray:
    """Sign-up times at or before the first order, never before the shop's start.

    At checkout a few minutes before the first order, or an exponential number of days earlier;
    a delay that would reach before the start is redrawn uniformly within the time available.
    """
    n = len(channel)
    at_checkout = rng.random(n) < np.asarray(CHECKOUT_SIGNUP_PROB)[channel]
    minutes = rng.uniform(*CHECKOUT_SIGNUP_MINUTES, n)
    days = rng.exponential(np.asarray(SIGNUP_DELAY_MEAN_DAYS)[channel])
    delay_s = np.where(at_checkout, minutes * 60, days * SECONDS_PER_DAY)
    available_s = (first_order_us - _day_start_us(calendar, 0)) // MICROS_PER_SECOND
    delay_s = np.where(delay_s > available_s, available_s * rng.random(n), delay_s)
    return first_order_us - np.floor(delay_s).astype(np.int64) * MICROS_PER_SECOND


def profiles_table(profiles: Profiles) -> pa.Table:
    """The customers table (``CUSTOMER_COLUMNS``) for one chunk of profiles."""
    numbers = profiles.first_number + np.arange(len(profiles))
    columns = {
        "customer_id": _padded_ids("", numbers, CUSTOMER_ID_WIDTH),
        "signup_ts": pa.array(profiles.signup_us, pa.timestamp("us")),
        "region": pa.array(REGIONS).take(pa.array(profiles.region)),
        "gender": pa.array(GENDERS).take(pa.array(profiles.gender)),
        "age": pa.array(profiles.age, pa.int64(), mask=~profiles.age_known),
        "acquisition_channel": pa.array(ACQUISITION_CHANNELS).take(
            pa.array(profiles.acquisition_channel)
        ),
        "membership_level": pa.array(MEMBERSHIP_LEVELS).take(pa.array(profiles.membership)),
    }
    return pa.table(columns, schema=CUSTOMERS_SCHEMA)


def iter_never_buyer_chunks(
    n_customers: int, seed: int, calendar: Calendar
) -> Iterator[Profiles]:
    """The never-buyers of a shop with ``n_customers`` buyers, ``CHUNK_CUSTOMERS`` at a time."""
    n_never = round(NEVER_BUYER_SHARE * n_customers)
    for chunk, first in enumerate(range(0, n_never, CHUNK_CUSTOMERS)):
        n = min(CHUNK_CUSTOMERS, n_never - first)
        rng = _chunk_rng(seed, NEVER_BUYER_STREAM, chunk)
        yield draw_never_buyer_profiles(rng, first, n, n_never, n_customers, calendar)


@dataclass
class ShopTruth:
    """What the generator knows and a model has to infer; summed over chunks."""

    customers: int = 0
    orders: int = 0
    lines: int = 0
    returns: int = 0
    churned_customers: int = 0
    replenishers: int = 0
    coupon_users: int = 0
    registered: int = 0  # rows of customers.parquet: buyers and never-buyers
    never_bought: int = 0
    first_order_ts: str | None = None
    last_order_ts: str | None = None

    def add(self, table: pa.Table, customers: Customers, purchases: Purchases) -> None:
        n_returns = int(pc.sum(pc.equal(table["status"], "returned")).as_py() or 0)
        self.customers += len(customers)
        self.orders += len(purchases.customer)
        self.lines += table.num_rows - n_returns
        self.returns += n_returns
        self.churned_customers += int(purchases.churned.sum())
        self.replenishers += int(customers.replenisher.sum())
        self.coupon_users += int(customers.coupon_user.sum())
        first, last = (ts.as_py().isoformat() for ts in pc.min_max(table["order_ts"]).values())
        self.first_order_ts = min(self.first_order_ts or first, first)
        self.last_order_ts = max(self.last_order_ts or last, last)

    def add_profiles(self, profiles: Profiles, bought: bool) -> None:
        """Count one chunk of the customers table."""
        self.registered += len(profiles)
        self.never_bought += 0 if bought else len(profiles)

    def counts(self) -> dict[str, int]:
        """The integer truths, plus ``rows`` = lines + returns as in the order file."""
        counts = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        return {**counts, "rows": self.lines + self.returns}


def _chunk_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _validate(n_customers: int, seed: int, start: str, end: str) -> None:
    if not isinstance(n_customers, (int, np.integer)) or n_customers < 1:
        raise ValueError(f"n_customers must be a positive integer, got {n_customers!r}.")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    try:
        first, last = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as error:
        raise ValueError(f"start and end must be dates like '2022-01-01' ({error}).") from error
    if last <= first:
        raise ValueError(f"end ({end}) must be after start ({start}).")


@dataclass(frozen=True)
class ShopChunk:
    """One chunk of buyers: their order table, hidden traits and first-order times."""

    orders: pa.Table
    customers: Customers
    first_order_us: np.ndarray  # per customer of the chunk, microseconds since the epoch


def simulate_shop(
    n_customers: int, seed: int, start: str = "2022-01-01", end: str = "2024-12-31",
    truth: ShopTruth | None = None,
) -> Iterator[ShopChunk]:
    """The shop's buyers, one chunk of ``CHUNK_CUSTOMERS`` customers at a time."""
    _validate(n_customers, seed, start, end)
    calendar = build_calendar(start, end)
    catalogue = build_catalogue(_chunk_rng(seed, CATALOGUE_STREAM))
    truth = truth if truth is not None else ShopTruth()
    next_order_number = 1
    for chunk, first in enumerate(range(0, n_customers, CHUNK_CUSTOMERS)):
        rng = _chunk_rng(seed, ORDERS_STREAM, chunk)
        n = min(CHUNK_CUSTOMERS, n_customers - first)
        customers = draw_customers(rng, first, n, n_customers, calendar, catalogue)
        purchases = simulate_purchases(rng, customers, calendar)
        lines = build_lines(rng, customers, purchases, calendar, catalogue)
        lines = add_returns(rng, lines, customers, calendar, catalogue)
        n_orders = len(purchases.customer)
        table = lines_table(lines, customers, n_orders, next_order_number, catalogue)
        truth.add(table, customers, purchases)
        next_order_number += n_orders
        # Every customer orders at acquisition, and a customer's rows start with that order.
        first_row = np.searchsorted(lines.customer, np.arange(n))
        yield ShopChunk(table, customers, lines.ts_us[first_row])


def iter_shop_chunks(
    n_customers: int, seed: int, start: str = "2022-01-01", end: str = "2024-12-31",
    truth: ShopTruth | None = None,
) -> Iterator[pa.Table]:
    """The shop's order table, one chunk of ``CHUNK_CUSTOMERS`` customers at a time."""
    for chunk in simulate_shop(n_customers, seed, start, end, truth):
        yield chunk.orders


def generate_orders(
    n_customers: int, seed: int, start: str = "2022-01-01", end: str = "2024-12-31"
) -> pd.DataFrame:
    """Order lines (and return rows) of a synthetic shop with ``n_customers`` customers.

    Columns are ``ORDER_COLUMNS`` (see the module docstring); rows are grouped by customer and
    in time order. Identical to what ``write_shop`` writes for the same arguments.
    """
    tables = list(iter_shop_chunks(n_customers, seed, start, end))
    return pa.concat_tables(tables).to_pandas()


def write_shop(
    out_dir: str | Path, n_customers: int, seed: int,
    start: str = "2022-01-01", end: str = "2024-12-31",
) -> dict:
    """Write ``orders.parquet``, ``customers.parquet`` and ``shop.json`` to ``out_dir``.

    Returns the summary written to ``shop.json``. Customers are generated and written chunk by
    chunk, so memory does not grow with ``n_customers``. Every file appears atomically: a
    reader never sees a half-written file.
    """
    _validate(n_customers, seed, start, end)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = ShopTruth()
    with (
        _atomic_path(out_dir / "orders.parquet") as orders_path,
        _atomic_path(out_dir / "customers.parquet") as customers_path,
        pq.ParquetWriter(orders_path, ORDERS_SCHEMA) as orders_writer,
        pq.ParquetWriter(customers_path, CUSTOMERS_SCHEMA) as customers_writer,
    ):
        calendar = build_calendar(start, end)
        for chunk, shop in enumerate(simulate_shop(n_customers, seed, start, end, truth)):
            orders_writer.write_table(shop.orders, row_group_size=1_000_000)
            rng = _chunk_rng(seed, BUYER_PROFILE_STREAM, chunk)
            profiles = draw_buyer_profiles(rng, shop.customers, shop.first_order_us, calendar)
            customers_writer.write_table(profiles_table(profiles))
            truth.add_profiles(profiles, bought=True)
        for profiles in iter_never_buyer_chunks(n_customers, seed, calendar):
            customers_writer.write_table(profiles_table(profiles))
            truth.add_profiles(profiles, bought=False)
    summary = {
        "generator": f"{__name__} v{GENERATOR_VERSION}",
        "parameters": {
            "n_customers": int(n_customers), "seed": int(seed), "start": start, "end": end,
        },
        **truth.counts(),
        "date_range": {
            "first_order_ts": truth.first_order_ts, "last_order_ts": truth.last_order_ts,
        },
    }
    with _atomic_path(out_dir / "shop.json") as tmp_path:
        Path(tmp_path).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@contextmanager
def _atomic_path(target: Path) -> Iterator[str]:
    """A temp path next to ``target``, moved onto it if the block succeeds, removed if not."""
    fd, tmp_path = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        yield tmp_path
        # mkstemp makes the file private; the shop's files are ordinary readable data.
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        Path(tmp_path).unlink(missing_ok=True)
