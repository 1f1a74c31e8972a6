"""Synthetic shop: realistic, reproducible order lines for demos, model validation and benchmarks.

The shop is simulated customer by customer but vectorised over all customers of a chunk. The
default shop (``shape="default"``) is described first; other shapes follow below.

- customers are acquired throughout the period, more of them later (a growing shop); their
  first order is the acquisition;
- ordinary customers buy as a Poisson process with a gamma-distributed personal rate, and after
  every order stop for good with a personal beta-distributed dropout probability (BG/NBD-like);
- about 15% are replenishers who reorder one consumable category on a personal 20-45 day cycle;
- November-December are busier, weekends a little; promotion days (June 18, November 11 and the
  last Friday of November) bring extra orders and discounts;
- about 20% are coupon users who get a discount on most orders;
- returns are separate rows with ``status="returned"`` and order id ``<original>-R``.

Shapes (``SHAPES``; each is a frozen ``ShopShape`` of knobs, whose defaults are the default shop).
Q4/summer is the measured ratio of monthly orders in October-December to June-August:

============  ===========================================================================
default       the shop above: Nov-Dec x1.5-1.7, Jan-Feb dip; 1-4 lines per order; 15%
              replenishers; ~4% of lines returned; Q4/summer ~1.6
gift          an online gift retailer's invoice lines (UCI Online Retail style): Oct-Dec
              x2.4-3.4, summer x0.75, quiet weekends (Q4/summer ~4.4); cheap products (prices
              x0.07, 1,000 per category, home decor leads) in dozens (1-24 units); invoices of
              a median 13 lines (mean ~21, 1% over 120); 0.8% wholesale buyers ordering 4x as
              often, ~45 lines of 12-200 units (the top 1% of buyers hold ~45% of the revenue);
              no returns, but 2.5% of invoices cancelled in part or whole by a
              ``C<order id>`` invoice, 1.5 days later on average; chunks of 10,000 customers
flat          no season (Q4/summer ~1.3, from the shop's growth), small promotion days,
              85% single-line orders
wholesale     5% business accounts reordering every 14-42 days (lines of 12-200 units,
              median 12 lines), 20% replenishers, weekday orders, a mild season; half the
              returns; 1% of orders cancelled
fast_fashion  twice the order rate, 62% fashion, big sale days, 1-6 lines per order, return
              rates x2.2 (~18% of lines returned)
============  ===========================================================================

A shape draws random numbers only for the knobs it uses (wholesale buyers; cancellations on a
stream of their own), so the default shape draws what the shop drew before shapes existed: the
same seed gives the same files, byte for byte.

Output columns (one row per order line), in the project's canonical names:

============  ===============  =========================================================
customer_id   str              zero-padded, e.g. ``"0000042"``; ids rise with acquisition
order_id      str              ``"O000000001"``; return rows ``"O000000001-R"``,
                               cancellation rows ``"CO000000001"``
order_ts      datetime64[us]   naive, meaning UTC; whole seconds
amount        float            money paid for the line after discount (refund for returns;
                               negative, the money back, for cancellations)
quantity      int              units on the line (negative for cancellations)
category      str              product category
product_id    str              e.g. ``"P00042"``; a product has one unit price
discount      float            money off on the line, 0 when none (0 on return and
                               cancellation rows)
channel       str              ``web`` / ``app`` / ``store``
status        str              ``completed``, ``returned`` or ``cancelled``
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
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.errors import LifetagError

__all__ = [
    "CUSTOMER_COLUMNS", "ORDER_COLUMNS", "SHAPES", "Counts", "ShopShape", "UnknownShapeError",
    "generate_orders", "shop_shape", "simulate_shop", "write_shop",
]

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
CANCELLATION_STREAM = 4  # its own, so turning cancellations on or off leaves the orders as they are

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
PRODUCT_PRICE_SIGMA = 0.55  # lognormal spread of unit prices around the category median

CHANNELS = ("web", "app", "store")
CHANNEL_SHARES = (0.5, 0.3, 0.2)
STATUSES = ("completed", "returned", "cancelled")
COMPLETED, RETURNED, CANCELLED = range(len(STATUSES))  # status codes of the lines
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

# Demand calendar: the month, weekend and promotion multipliers are knobs of the shop's shape.
FIXED_PROMOTIONS = ((6, 18), (11, 11))  # (month, day), every year
SHOP_GROWTH = 0.8  # acquisition density at the end is e**0.8 ~ 2.2 times that at the start

# Ordinary customers (rates are per day of average demand; the mean is a knob of the shape).
ORDER_RATE_SHAPE = 1.3
MAX_ORDER_RATE_PER_DAY = 0.5
DROPOUT_BETA = (0.55, 2.5)  # mean ~0.18 per order; U-shaped: many leave early, some stay

REPLENISH_JITTER = 0.12  # sd of a gap, as a share of the cycle
REPLENISHER_DROPOUT_BETA = (1.0, 20.0)  # loyal: mean ~0.05 per order
REPLENISHER_MAIN_CATEGORY_PROB = 0.85
FAVOURITE_PRODUCT_PROB = 0.6

COUPON_USER_SHARE = 0.2
COUPON_ORDER_PROB = 0.6
COUPON_RATES = (0.10, 0.15, 0.20)
PROMOTION_DISCOUNT_PROB = 0.8
PROMOTION_RATES = (0.20, 0.25, 0.30)

CATEGORY_CONCENTRATION = 1.5  # Dirichlet total; small = customers stick to few categories
RETURNER_SHAPE = 0.6  # gamma shape of a personal return propensity (mean 1): a few serial returners
RETURN_DELAY_DAYS = (2, 20)

# Cancellations (shapes with cancel_share > 0). A partial cancellation takes back the order's first
# line and each other line with this probability, part of a line's units or all of them.
CANCEL_OTHER_LINE_PROB = 0.4
CANCEL_MIN_DELAY_MINUTES = 5.0

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
class Counts:
    """A distribution of whole counts (lines per order, units per line), drawn by inverse CDF.

    Either ``probs`` of the counts 1, 2, ... (of ``values`` when given), or, with ``median`` > 0, a
    lognormal with that median and log-sd ``sigma`` rounded to a count 1..``most``: a long tail.
    """

    probs: tuple[float, ...] = ()
    values: tuple[int, ...] = ()
    median: float = 0.0
    sigma: float = 0.0
    most: int = 0

    def __post_init__(self) -> None:
        lognormal = self.median > 0
        if lognormal and (self.sigma <= 0 or self.most < 1 or self.probs or self.values):
            raise ValueError(f"Counts: a lognormal needs sigma > 0, most >= 1, no probs ({self}).")
        if not lognormal and (not self.probs or min(self.probs) < 0 or sum(self.probs) <= 0):
            raise ValueError(f"Counts: give probs >= 0 that sum above 0, or a median ({self}).")
        if self.values and (len(self.values) != len(self.probs) or min(self.values) < 1):
            raise ValueError(f"Counts: values must be counts >= 1, one per probability ({self}).")

    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """The possible counts and their cumulative probabilities (the last is 1)."""
        if self.median > 0:
            counts = np.arange(1, self.most + 1)
            # Count k stands for the lognormal's mass between k - 0.5 and k + 0.5 (all below 1.5
            # for k = 1); the mass beyond `most` is spread over the rest by the normalisation.
            z = (np.log(counts + 0.5) - np.log(self.median)) / (self.sigma * np.sqrt(2))
            below = 0.5 * (1 + np.array([math.erf(x) for x in z]))
            probs = np.diff(below, prepend=0.0)
        else:
            counts = np.asarray(self.values or range(1, len(self.probs) + 1), dtype=np.int64)
            probs = np.asarray(self.probs, dtype=float)
        return counts, np.cumsum(probs) / np.sum(probs)

    def as_dict(self) -> dict:
        """The fields in use, for shop.json."""
        if self.median > 0:
            return {"median": self.median, "sigma": self.sigma, "most": self.most}
        return {"probs": list(self.probs), **({"values": list(self.values)} if self.values else {})}


@dataclass(frozen=True)
class ShopShape:
    """What kind of shop to simulate: season, baskets, wholesale buyers, returns, cancellations.

    The defaults are the original shop (``SHAPES["default"]``); the other presets in ``SHAPES``
    change some knobs each (the module docstring has the table). Demand multipliers are relative to
    an ordinary month (March-May, September) and normalised over the period: only ratios matter.
    Build a variant with ``dataclasses.replace(SHAPES["gift"], q4_demand=(2.0, 2.5, 2.0))``.
    """

    name: str = "custom"
    # Calendar: month multipliers set how strong the season is.
    q4_demand: tuple[float, float, float] = (1.0, 1.5, 1.7)  # October, November, December
    summer_demand: float = 1.0  # June to August; below 1 is a summer dip
    new_year_demand: tuple[float, float] = (0.85, 0.9)  # January, February
    weekend_demand: float = 1.2
    promotion_demand: float = 3.0  # June 18 and November 11
    black_friday_demand: float = 3.5
    # Customers.
    mean_order_rate_per_day: float = 1 / 60  # of ordinary customers, per day of average demand
    replenisher_share: float = 0.15  # reorder one consumable category on a personal cycle
    replenish_cycle_days: tuple[float, float] = (20, 45)
    category_shares: tuple[float, ...] | None = None  # one per CATEGORIES; None: their own shares
    # Products and baskets.
    products_per_category: int = 250
    product_popularity_exponent: float = 1.05  # Zipf: a few best-sellers, a long tail
    price_scale: float = 1.0  # multiplies every category's median unit price
    lines_per_order: Counts = Counts((0.55, 0.25, 0.13, 0.07))
    replenisher_lines_per_order: Counts = Counts((0.7, 0.2, 0.08, 0.02))
    quantities: Counts = Counts((0.82, 0.11, 0.04, 0.02, 0.01))
    consumable_quantities: Counts = Counts((0.62, 0.2, 0.09, 0.05, 0.04))
    # Wholesale buyers (businesses): many lines of many units, more orders, loyal.
    wholesale_share: float = 0.0  # of buyers
    wholesale_rate_factor: float = 1.0  # their order rate, times an ordinary customer's
    wholesale_cycle_days: tuple[float, float] | None = None  # set: they reorder on a personal cycle
    wholesale_lines_per_order: Counts = Counts(median=40.0, sigma=0.7, most=400)
    wholesale_quantities: Counts = Counts(
        (0.25, 0.22, 0.1, 0.15, 0.08, 0.1, 0.06, 0.04), values=(12, 24, 36, 48, 72, 96, 144, 200)
    )
    # Money back.
    return_scale: float = 1.0  # times every line's return probability; 0: no returns
    cancel_share: float = 0.0  # of orders, cancelled in part or whole by a `C<order id>` order
    cancel_whole_prob: float = 0.5  # a cancellation takes back the whole order
    cancel_delay_days: float = 1.0  # mean delay after the order; exponential
    # Customers simulated at a time; None: CHUNK_CUSTOMERS. Shapes with many rows per customer
    # use smaller chunks, so that a chunk needs about as much memory as in the default shop.
    customers_per_chunk: int | None = None

    def __post_init__(self) -> None:
        shares = {
            "replenisher_share": self.replenisher_share, "wholesale_share": self.wholesale_share,
            "cancel_share": self.cancel_share, "cancel_whole_prob": self.cancel_whole_prob,
        }
        for knob, value in shares.items():
            if not 0 <= value <= 1:
                raise ValueError(f"ShopShape {self.name!r}: {knob} must be in [0, 1], not {value}.")
        positive = {
            "weekend_demand": self.weekend_demand, "summer_demand": self.summer_demand,
            "promotion_demand": self.promotion_demand, "price_scale": self.price_scale,
            "black_friday_demand": self.black_friday_demand,
            "mean_order_rate_per_day": self.mean_order_rate_per_day,
            "wholesale_rate_factor": self.wholesale_rate_factor,
            "cancel_delay_days": self.cancel_delay_days,
            "q4_demand": min(self.q4_demand), "new_year_demand": min(self.new_year_demand),
        }
        for knob, value in positive.items():
            if not value > 0:
                raise ValueError(f"ShopShape {self.name!r}: {knob} must be above 0, got {value}.")
        if not 1 <= self.products_per_category <= 10_000:
            raise ValueError(f"ShopShape {self.name!r}: products_per_category must be 1 to 10,000.")
        if self.customers_per_chunk is not None and self.customers_per_chunk < 1:
            raise ValueError(f"ShopShape {self.name!r}: customers_per_chunk must be at least 1.")
        if self.return_scale < 0:
            raise ValueError(f"ShopShape {self.name!r}: return_scale must be >= 0.")
        if self.category_shares is not None and len(self.category_shares) != len(CATEGORIES):
            raise ValueError(
                f"ShopShape {self.name!r}: category_shares needs one share per category "
                f"({', '.join(c.name for c in CATEGORIES)})."
            )

    def month_demand(self) -> np.ndarray:
        """Multiplier per month, January first."""
        summer = (self.summer_demand,) * 3
        return np.array([*self.new_year_demand, 1, 1, 1, *summer, 1, *self.q4_demand])

    def as_dict(self) -> dict:
        """Every knob, JSON-ready (for shop.json)."""
        knobs = {}
        for field in fields(self):
            value = getattr(self, field.name)
            knobs[field.name] = (
                value.as_dict() if isinstance(value, Counts)
                else list(value) if isinstance(value, tuple) else value
            )
        return knobs


GIFT_CATEGORY_SHARES = (0.06, 0.14, 0.08, 0.02, 0.12, 0.14, 0.04, 0.36, 0.04)  # home decor leads
GIFT_QUANTITIES = Counts(
    (0.3, 0.15, 0.08, 0.1, 0.12, 0.05, 0.15, 0.05), values=(1, 2, 3, 4, 6, 8, 12, 24)
)
FASHION_CATEGORY_SHARES = (0.01, 0.03, 0.14, 0.01, 0.02, 0.62, 0.08, 0.06, 0.03)

SHAPES: dict[str, ShopShape] = {
    "default": ShopShape(name="default"),
    # Invoice lines of an online gift retailer (UCI Online Retail style): cheap items bought by the
    # dozen, a Christmas peak, a few wholesale accounts, cancellations instead of returns.
    "gift": ShopShape(
        name="gift",
        q4_demand=(2.4, 3.4, 2.6), summer_demand=0.75, new_year_demand=(0.8, 0.85),
        weekend_demand=0.7, promotion_demand=1.3, black_friday_demand=2.0,
        mean_order_rate_per_day=1 / 75, replenisher_share=0.03, replenish_cycle_days=(30, 60),
        category_shares=GIFT_CATEGORY_SHARES, price_scale=0.07,
        # A broad range: big invoices seldom list one product twice.
        products_per_category=1_000, product_popularity_exponent=0.7,
        lines_per_order=Counts(median=13.0, sigma=0.95, most=400),
        replenisher_lines_per_order=Counts(median=6.0, sigma=0.7, most=100),
        quantities=GIFT_QUANTITIES, consumable_quantities=GIFT_QUANTITIES,
        wholesale_share=0.008, wholesale_rate_factor=4.0,
        wholesale_lines_per_order=Counts(median=45.0, sigma=0.7, most=400),
        return_scale=0.0, cancel_share=0.025, cancel_whole_prob=0.4, cancel_delay_days=1.5,
        customers_per_chunk=10_000,  # ~90 rows per customer, ~10 times the default's
    ),
    # A shop without a season: steady demand, small promotions, mostly one line per order.
    "flat": ShopShape(
        name="flat",
        q4_demand=(1.0, 1.05, 1.1), summer_demand=0.97, new_year_demand=(0.95, 0.97),
        weekend_demand=1.1, promotion_demand=1.2, black_friday_demand=1.3,
        lines_per_order=Counts((0.85, 0.1, 0.04, 0.01)),
        replenisher_lines_per_order=Counts((0.9, 0.08, 0.02)),
    ),
    # B2B-heavy: 5% business accounts reordering on 2-6 week cycles, weekday orders, a mild season.
    "wholesale": ShopShape(
        name="wholesale",
        q4_demand=(1.1, 1.3, 1.2), summer_demand=0.9,
        weekend_demand=0.6, promotion_demand=1.5, black_friday_demand=1.5,
        replenisher_share=0.2,
        wholesale_share=0.05, wholesale_cycle_days=(14, 42),
        wholesale_lines_per_order=Counts(median=12.0, sigma=0.7, most=200),
        return_scale=0.5, cancel_share=0.01, cancel_whole_prob=0.3,
    ),
    # Fast fashion: twice the order rate, big sale days, several items per order, ~18% returned.
    "fast_fashion": ShopShape(
        name="fast_fashion",
        q4_demand=(1.0, 1.4, 1.5), summer_demand=1.1, new_year_demand=(1.1, 0.85),
        promotion_demand=4.0, black_friday_demand=4.5,
        mean_order_rate_per_day=1 / 30, replenisher_share=0.03,
        category_shares=FASHION_CATEGORY_SHARES,
        lines_per_order=Counts((0.35, 0.28, 0.17, 0.1, 0.06, 0.04)),
        return_scale=2.2,
    ),
}
DEFAULT_SHAPE = SHAPES["default"]


class UnknownShapeError(LifetagError, ValueError):
    """A shape name that is not in ``SHAPES``."""


def shop_shape(shape: str | ShopShape) -> ShopShape:
    """The preset named ``shape`` (a key of ``SHAPES``), or ``shape`` itself if a ShopShape."""
    if isinstance(shape, ShopShape):
        return shape
    if shape not in SHAPES:
        raise UnknownShapeError(
            f"unknown shop shape {shape!r}: pick one of {', '.join(SHAPES)}."
        )
    return SHAPES[shape]


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


def build_calendar(start: str, end: str, shape: ShopShape = DEFAULT_SHAPE) -> Calendar:
    """Demand calendar from ``start`` to ``end`` inclusive, with the shape's season."""
    days = pd.date_range(start, end, freq="D")
    demand = shape.month_demand()[np.asarray(days.month) - 1]
    demand[days.day_of_week >= 5] *= shape.weekend_demand
    promotion = np.zeros(len(days), dtype=bool)
    for month, day in FIXED_PROMOTIONS:
        promotion |= (days.month == month) & (days.day == day)
    black_friday = _is_last_friday_of_november(days)
    demand[promotion] *= shape.promotion_demand
    demand[black_friday] *= shape.black_friday_demand
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


def build_catalogue(rng: np.random.Generator, shape: ShopShape = DEFAULT_SHAPE) -> Catalogue:
    """Products of every category with lognormal unit prices around the (scaled) category median."""
    medians = np.array([c.median_unit_price for c in CATEGORIES]) * shape.price_scale
    per_category = shape.products_per_category
    category = np.repeat(np.arange(len(CATEGORIES)), per_category)
    unit_price = medians[category] * rng.lognormal(0.0, PRODUCT_PRICE_SIGMA, len(category))
    # Prices end in .99 or .49 like on a real shelf.
    unit_price = np.maximum(np.floor(unit_price) + rng.choice([0.49, 0.99], len(category)), 0.99)
    popularity = 1.0 / np.arange(1, per_category + 1) ** shape.product_popularity_exponent
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
    on_cycle: np.ndarray  # bool: reorders every cycle_days (replenishers, some wholesale buyers)
    wholesale: np.ndarray  # bool: a business buying many lines of many units
    preferred_channel: np.ndarray
    category_cdf: np.ndarray  # (customers, categories)
    main_category: np.ndarray
    favourite_product: np.ndarray
    return_propensity: np.ndarray

    def __len__(self) -> int:
        return len(self.acquired_day)


def draw_customers(
    rng: np.random.Generator, first_index: int, n: int, n_total: int,
    calendar: Calendar, catalogue: Catalogue, shape: ShopShape = DEFAULT_SHAPE,
) -> Customers:
    """Traits for customers ``first_index .. first_index + n - 1`` of ``n_total``."""
    replenisher = rng.random(n) < shape.replenisher_share
    mean_rate = shape.mean_order_rate_per_day
    rate = rng.gamma(ORDER_RATE_SHAPE, mean_rate / ORDER_RATE_SHAPE, n)
    dropout = np.where(
        replenisher, rng.beta(*REPLENISHER_DROPOUT_BETA, n), rng.beta(*DROPOUT_BETA, n)
    )
    shares = np.array(shape.category_shares or [c.share for c in CATEGORIES])
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
        cycle_days=rng.uniform(*shape.replenish_cycle_days, n),
        on_cycle=replenisher,
        wholesale=np.zeros(n, dtype=bool),
        preferred_channel=rng.choice(len(CHANNELS), n, p=CHANNEL_SHARES),
        category_cdf=np.cumsum(preference, axis=1),
        main_category=main_category,
        favourite_product=_popular_products(rng, main_category, catalogue),
        return_propensity=rng.gamma(RETURNER_SHAPE, 1 / RETURNER_SHAPE, n),
    )


def draw_wholesale(
    rng: np.random.Generator, customers: Customers, shape: ShopShape
) -> Customers:
    """Make ``shape.wholesale_share`` of the customers wholesale buyers.

    A business orders ``wholesale_rate_factor`` times as often (or on a personal cycle), stays
    like a replenisher does, and is not a replenisher itself: its baskets follow its taste.
    """
    n = len(customers)
    wholesale = rng.random(n) < shape.wholesale_share
    rate = np.minimum(
        customers.order_rate * np.where(wholesale, shape.wholesale_rate_factor, 1.0),
        MAX_ORDER_RATE_PER_DAY,
    )
    dropout = np.where(wholesale, rng.beta(*REPLENISHER_DROPOUT_BETA, n), customers.dropout_prob)
    replenisher = customers.replenisher & ~wholesale
    on_cycle, cycle_days = replenisher, customers.cycle_days
    if shape.wholesale_cycle_days is not None:
        on_cycle = replenisher | wholesale
        cycle_days = np.where(wholesale, rng.uniform(*shape.wholesale_cycle_days, n), cycle_days)
    return replace(
        customers, replenisher=replenisher, order_rate=rate, dropout_prob=dropout,
        cycle_days=cycle_days, on_cycle=on_cycle, wholesale=wholesale,
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
    per_category = len(catalogue.popularity_cdf)
    rank = np.minimum(rank, per_category - 1)
    return category * per_category + rank


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
        day = np.where(customers.on_cycle[active], day + replenish_gap, calendar.unwarp(warped))
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
    status: np.ndarray  # index into STATUSES: a purchase, a return or a cancellation


def build_lines(
    rng: np.random.Generator, customers: Customers, purchases: Purchases,
    calendar: Calendar, catalogue: Catalogue, shape: ShopShape = DEFAULT_SHAPE,
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
        _draw_counts(rng, shape.replenisher_lines_per_order, n_orders),
        _draw_counts(rng, shape.lines_per_order, n_orders),
    )
    # Only shapes with wholesale buyers draw for them, so the other shapes' draws stay as they were.
    if shape.wholesale_share > 0:
        bulk = customers.wholesale[who]
        lines_per_order[bulk] = _draw_counts(rng, shape.wholesale_lines_per_order, bulk.sum())
    order = np.repeat(np.arange(n_orders), lines_per_order)
    customer = who[order]
    product = _line_products(rng, customers, customer, catalogue)
    consumable = np.array([c.consumable for c in CATEGORIES])[catalogue.category[product]]
    quantity = np.where(
        consumable,
        _draw_counts(rng, shape.consumable_quantities, len(order)),
        _draw_counts(rng, shape.quantities, len(order)),
    )
    if shape.wholesale_share > 0:
        bulk = customers.wholesale[customer]
        quantity[bulk] = _draw_counts(rng, shape.wholesale_quantities, bulk.sum())
    gross = np.round(catalogue.unit_price[product] * quantity, 2)
    discount = np.round(gross * discount_rate[order], 2)
    return Lines(
        order=order, customer=customer, ts_us=ts_us[order], product=product, quantity=quantity,
        amount=np.round(gross - discount, 2), discount=discount, channel=channel[order],
        status=np.full(len(order), COMPLETED, dtype=np.int8),
    )


def _draw_counts(rng: np.random.Generator, counts: Counts, n: int) -> np.ndarray:
    """``n`` counts drawn from ``counts``, one uniform number each."""
    values, cdf = counts.support()
    return values[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(values) - 1)]


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
    # Column by column, not as one (lines x categories) matrix: big baskets make many lines.
    category = np.zeros(len(customer), dtype=np.int64)
    for column in customers.category_cdf.T:
        category += u > column[customer]
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
    calendar: Calendar, catalogue: Catalogue, return_scale: float = 1.0,
) -> Lines:
    """Lines plus return rows: whole lines refunded 2-20 days later, if still in the period.

    Lines returned from one order go back together, so they share the return's timestamp. A line's
    chance of return is its category's rate times the customer's propensity times ``return_scale``.
    """
    category_rate = np.array([c.return_rate for c in CATEGORIES])
    line_rate = category_rate[catalogue.category[lines.product]]
    prob = np.minimum(line_rate * customers.return_propensity[lines.customer] * return_scale, 0.9)
    return_ts = _return_timestamps(rng, lines, calendar)[lines.order]
    end_us = _day_start_us(calendar, calendar.n_days)
    picked = np.flatnonzero((rng.random(len(prob)) < prob) & (return_ts < end_us))
    return _append_rows(
        lines, picked, RETURNED, return_ts[picked], lines.quantity[picked], lines.amount[picked]
    )


def add_cancellations(
    rng: np.random.Generator, lines: Lines, shape: ShopShape, calendar: Calendar
) -> Lines:
    """Lines plus cancellation rows: ``shape.cancel_share`` of the orders taken back, in the period.

    A cancellation is an order of its own (``C<order id>`` in the table) with negative units and
    money, an exponential ``cancel_delay_days`` on average after the order (at least a few
    minutes). A whole cancellation takes back every line; a partial one the order's first line and
    each other line with ``CANCEL_OTHER_LINE_PROB``, each from one unit to all of them. Orders with
    a return are never cancelled, so no unit is taken back twice.
    """
    n_orders = int(lines.order.max()) + 1
    cancelled = rng.random(n_orders) < shape.cancel_share
    cancelled[lines.order[lines.status == RETURNED]] = False
    whole = rng.random(n_orders) < shape.cancel_whole_prob
    delay_s = CANCEL_MIN_DELAY_MINUTES * 60 + rng.exponential(
        shape.cancel_delay_days * SECONDS_PER_DAY, n_orders
    )
    delay_us = np.floor(delay_s).astype(np.int64) * MICROS_PER_SECOND
    sold = np.flatnonzero(lines.status == COMPLETED)
    order = lines.order[sold]
    first = np.zeros(len(sold), dtype=bool)
    first[np.unique(order, return_index=True)[1]] = True
    other = rng.random(len(sold)) < CANCEL_OTHER_LINE_PROB
    ts_us = lines.ts_us[sold] + delay_us[order]
    end_us = _day_start_us(calendar, calendar.n_days)
    taken = cancelled[order] & (whole[order] | first | other) & (ts_us < end_us)
    source = sold[taken]
    bought = lines.quantity[source]
    units = np.where(whole[lines.order[source]], bought, rng.integers(1, bought + 1))
    # Money back in proportion to the units, never more than was paid for the line.
    amount = np.where(
        units == bought, lines.amount[source], np.round(lines.amount[source] / bought * units, 2)
    )
    return _append_rows(lines, source, CANCELLED, ts_us[taken], -units, -amount)


def _append_rows(
    lines: Lines, source: np.ndarray, status: int, ts_us: np.ndarray,
    quantity: np.ndarray, amount: np.ndarray,
) -> Lines:
    """Lines plus one new row per line in ``source``, with ``status``, time, units and money.

    New rows carry no discount. Rows stay grouped by customer and in time order; at the same
    second a purchase comes before a return, a return before a cancellation.
    """
    rows = np.concatenate([np.arange(len(lines.order)), source])
    status = np.concatenate([lines.status, np.full(len(source), status, dtype=np.int8)])
    ts_us = np.concatenate([lines.ts_us, ts_us])
    order = np.lexsort((status, ts_us, lines.customer[rows]))
    rows = rows[order]

    def appended(old: np.ndarray, new: np.ndarray) -> np.ndarray:
        # One column at a time, so big shops hold one extra copy of a column, not of all of them.
        return np.concatenate([old, new])[order]

    return Lines(
        order=lines.order[rows], customer=lines.customer[rows], ts_us=ts_us[order],
        product=lines.product[rows], quantity=appended(lines.quantity, quantity),
        amount=appended(lines.amount, amount),
        discount=appended(lines.discount, np.zeros(len(source))),
        channel=lines.channel[rows], status=status[order],
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
    cancelled = lines.status == CANCELLED
    if cancelled.any():
        cancel_id = pc.binary_join_element_wise("C", order_id, "")
        order_id = pc.if_else(pa.array(cancelled), cancel_id, order_id)
    order_id = pc.if_else(pa.array(lines.status == RETURNED), return_id, order_id)
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
        "status": pa.array(STATUSES).take(pa.array(lines.status)),
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
    calendar: Calendar, mean_order_rate_per_day: float = DEFAULT_SHAPE.mean_order_rate_per_day,
) -> Profiles:
    """Attributes of one chunk of buyers, derived from their hidden traits plus noise.

    Uses only ``rng``, never a generator the orders draw from, so the orders stay as they are.
    Order rates are scored against the shape's ``mean_order_rate_per_day``.
    """
    n = len(customers)
    rate_score = _order_rate_score(customers, mean_order_rate_per_day)
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


def _order_rate_score(customers: Customers, mean_order_rate_per_day: float) -> np.ndarray:
    """Standardised log of the rate a customer orders at; on a cycle, one order per cycle."""
    rate = np.where(customers.on_cycle, 1 / customers.cycle_days, customers.order_rate)
    mean, sd = LOG_RATE_MOMENTS
    return (np.log(rate / mean_order_rate_per_day) - mean) / sd


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
    cancellations: int = 0  # cancellation rows (negative lines)
    cancelled_orders: int = 0  # orders cancelled in part or whole
    churned_customers: int = 0
    replenishers: int = 0
    wholesale_customers: int = 0
    coupon_users: int = 0
    registered: int = 0  # rows of customers.parquet: buyers and never-buyers
    never_bought: int = 0
    first_order_ts: str | None = None
    last_order_ts: str | None = None

    def add(self, table: pa.Table, customers: Customers, purchases: Purchases) -> None:
        n_returns = int(pc.sum(pc.equal(table["status"], "returned")).as_py() or 0)
        cancelled = pc.equal(table["status"], "cancelled")
        n_cancellations = int(pc.sum(cancelled).as_py() or 0)
        self.customers += len(customers)
        self.orders += len(purchases.customer)
        self.lines += table.num_rows - n_returns - n_cancellations
        self.returns += n_returns
        self.cancellations += n_cancellations
        if n_cancellations:
            cancel_ids = pc.filter(table["order_id"], cancelled)
            self.cancelled_orders += pc.count_distinct(cancel_ids).as_py()
        self.churned_customers += int(purchases.churned.sum())
        self.replenishers += int(customers.replenisher.sum())
        self.wholesale_customers += int(customers.wholesale.sum())
        self.coupon_users += int(customers.coupon_user.sum())
        first, last = (ts.as_py().isoformat() for ts in pc.min_max(table["order_ts"]).values())
        self.first_order_ts = min(self.first_order_ts or first, first)
        self.last_order_ts = max(self.last_order_ts or last, last)

    def add_profiles(self, profiles: Profiles, bought: bool) -> None:
        """Count one chunk of the customers table."""
        self.registered += len(profiles)
        self.never_bought += 0 if bought else len(profiles)

    def counts(self) -> dict[str, int]:
        """The integer truths, plus ``rows`` = lines + returns + cancellations (the order file)."""
        counts = {k: v for k, v in vars(self).items() if isinstance(v, int)}
        return {**counts, "rows": self.lines + self.returns + self.cancellations}


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
    truth: ShopTruth | None = None, shape: str | ShopShape = "default",
) -> Iterator[ShopChunk]:
    """The shop's buyers, one chunk at a time (``customers_per_chunk`` or ``CHUNK_CUSTOMERS``)."""
    _validate(n_customers, seed, start, end)
    shape = shop_shape(shape)
    calendar = build_calendar(start, end, shape)
    catalogue = build_catalogue(_chunk_rng(seed, CATALOGUE_STREAM), shape)
    truth = truth if truth is not None else ShopTruth()
    next_order_number = 1
    per_chunk = shape.customers_per_chunk or CHUNK_CUSTOMERS
    for chunk, first in enumerate(range(0, n_customers, per_chunk)):
        rng = _chunk_rng(seed, ORDERS_STREAM, chunk)
        n = min(per_chunk, n_customers - first)
        customers = draw_customers(rng, first, n, n_customers, calendar, catalogue, shape)
        # Each step draws only what its knobs ask for, so the default shape is the original shop.
        if shape.wholesale_share > 0:
            customers = draw_wholesale(rng, customers, shape)
        purchases = simulate_purchases(rng, customers, calendar)
        lines = build_lines(rng, customers, purchases, calendar, catalogue, shape)
        if shape.return_scale > 0:
            lines = add_returns(rng, lines, customers, calendar, catalogue, shape.return_scale)
        if shape.cancel_share > 0:
            cancel_rng = _chunk_rng(seed, CANCELLATION_STREAM, chunk)
            lines = add_cancellations(cancel_rng, lines, shape, calendar)
        n_orders = len(purchases.customer)
        # Every customer orders at acquisition, and a customer's rows start with that order.
        first_order_us = lines.ts_us[np.searchsorted(lines.customer, np.arange(n))]
        table = lines_table(lines, customers, n_orders, next_order_number, catalogue)
        del lines  # not held while the caller writes the table
        truth.add(table, customers, purchases)
        next_order_number += n_orders
        yield ShopChunk(table, customers, first_order_us)


def iter_shop_chunks(
    n_customers: int, seed: int, start: str = "2022-01-01", end: str = "2024-12-31",
    truth: ShopTruth | None = None, shape: str | ShopShape = "default",
) -> Iterator[pa.Table]:
    """The shop's order table, one chunk of customers at a time (see ``simulate_shop``)."""
    for chunk in simulate_shop(n_customers, seed, start, end, truth, shape):
        yield chunk.orders


def generate_orders(
    n_customers: int, seed: int, start: str = "2022-01-01", end: str = "2024-12-31",
    shape: str | ShopShape = "default",
) -> pd.DataFrame:
    """Order lines (and return or cancellation rows) of a synthetic shop of ``n_customers`` buyers.

    Columns are ``ORDER_COLUMNS`` (see the module docstring); rows are grouped by customer and
    in time order. Identical to what ``write_shop`` writes for the same arguments.
    """
    tables = list(iter_shop_chunks(n_customers, seed, start, end, shape=shape))
    return pa.concat_tables(tables).to_pandas()


def write_shop(
    out_dir: str | Path, n_customers: int, seed: int,
    start: str = "2022-01-01", end: str = "2024-12-31", shape: str | ShopShape = "default",
) -> dict:
    """Write ``orders.parquet``, ``customers.parquet`` and ``shop.json`` to ``out_dir``.

    ``shape`` names a preset of ``SHAPES`` or is a ``ShopShape``. Returns the summary written to
    ``shop.json``, which records the shape and all its knobs. Customers are generated and written
    chunk by chunk, so memory does not grow with ``n_customers``. Every file appears atomically:
    a reader never sees a half-written file.
    """
    _validate(n_customers, seed, start, end)
    shape = shop_shape(shape)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = ShopTruth()
    with (
        _atomic_path(out_dir / "orders.parquet") as orders_path,
        _atomic_path(out_dir / "customers.parquet") as customers_path,
        pq.ParquetWriter(orders_path, ORDERS_SCHEMA) as orders_writer,
        pq.ParquetWriter(customers_path, CUSTOMERS_SCHEMA) as customers_writer,
    ):
        calendar = build_calendar(start, end, shape)
        chunks = simulate_shop(n_customers, seed, start, end, truth, shape)
        for chunk, shop in enumerate(chunks):
            orders_writer.write_table(shop.orders, row_group_size=1_000_000)
            rng = _chunk_rng(seed, BUYER_PROFILE_STREAM, chunk)
            profiles = draw_buyer_profiles(
                rng, shop.customers, shop.first_order_us, calendar, shape.mean_order_rate_per_day
            )
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
        "shape": shape.as_dict(),
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
