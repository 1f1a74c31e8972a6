"""Behavioural clusters: k-means on scaled behaviour, each cluster described in plain words.

`fit_clusters` learns the clusters of a shop's buyers at `as_of` from the project's own feature SQL
(`features.behaviour`, never a second definition of a feature) on a fixed hash sample of customers
(`report.cluster_sample`), with the number of clusters k the best silhouette in `report.clusters_k`.
`ClusterModel.assign` then labels any buyers' features: `lifetag report` counts every buyer,
`lifetag score --clusters` (and a Spark task, and the service) adds the `cluster` and
`cluster_description` columns to the tags.

The clusters are learned once, at training time on the history before the model's `as_of`, and
stored with the model (`ClusterModel.to_dict`), like every other shop-wide statistic: a scoring run
or a request never re-learns them, so a customer's cluster number means the same thing every night
until the next training.

Scaling: counts, money and days are taken as log(1 + x), shares as they are; then every feature is
standardised with the sample's mean and spread. A cluster's description names the (at most three)
features whose cluster mean is furthest from the whole (|z| >= 0.5), with the cluster's median.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from configs.errors import LifetagError
from configs.schema import Config
from features.behaviour import as_timestamp, build_relation

__all__ = ["CLUSTER_DOCS", "CLUSTER_FEATURES", "ClusterError", "ClusterModel", "cluster_candidates", "cluster_sample",
           "fit_clusters", "pick_cluster_sample"]

# Behavioural features the clusters are learned from (features.behaviour names), and whether each is
# taken on a log scale (counts, money, days) or as it is (shares 0-1).
CLUSTER_FEATURES: dict[str, bool] = {
    "recency_days": True,
    "frequency": True,
    "monetary_mean": True,
    "gap_median_days": True,
    "weekend_share": False,
    "discount_share": False,
    "distinct_categories": True,
    "return_rate": False,
    "novdec_share": False,
}
# The two columns `lifetag score --clusters` adds (docs/tags.md lists them; a test checks they agree).
CLUSTER_DOCS = {
    "cluster": ("behavioural cluster, 1 the largest: k-means on scaled behaviour, k by silhouette within "
                "`report.clusters_k`, learned at training time from a fixed sample of the shop's buyers and stored with "
                "the model; empty for registered customers without an order", "label"),
    "cluster_description": ("how the cluster differs from all buyers, in words (\"buy every 3 weeks, small baskets "
                            "(mean order 12), mostly weekends (90% of orders)\")", "text"),
}
SILHOUETTE_ROWS = 10_000
MIN_CUSTOMERS = 50
Z_NOTABLE = 0.5  # a feature enters a description when its cluster mean is this many spreads from the whole
MAX_PHRASES = 3
# A feature missing for more than this share of the sample is left out of the clusters (e.g. no discounts
# in the source); otherwise its missing values (one-order customers have no gap) take the sample median.
MAX_MISSING_SHARE = 0.5


def _cadence(days: float, zh: bool) -> str:
    if days < 14:
        return f"每 {days:.0f} 天购买一次" if zh else f"buy every {days:.0f} days"
    if days < 60:
        return f"每 {days / 7:.0f} 周购买一次" if zh else f"buy every {days / 7:.0f} weeks"
    return f"每 {days / 30.4:.0f} 个月购买一次" if zh else f"buy every {days / 30.4:.0f} months"


# feature -> (phrase when above the whole, phrase when below), each f(median, zh) -> text.
Phrase = Callable[[float, bool], str]
_PHRASES: dict[str, tuple[Phrase, Phrase]] = {
    "recency_days": (lambda v, zh: f"很久未购买（中位 {v:,.0f} 天）" if zh else f"last order long ago (median {v:,.0f} days)",
                     lambda v, zh: f"近期购买（中位 {v:,.0f} 天前）" if zh else f"bought recently (median {v:,.0f} days ago)"),
    "frequency": (lambda v, zh: f"订单多（中位 {v:,.0f} 单）" if zh else f"many orders (median {v:,.0f})",
                  lambda v, zh: f"订单少（中位 {v:,.0f} 单）" if zh else f"few orders (median {v:,.0f})"),
    "monetary_mean": (lambda v, zh: f"客单价高（平均每单 {v:,.0f}）" if zh else f"large baskets (mean order {v:,.0f})",
                      lambda v, zh: f"客单价低（平均每单 {v:,.0f}）" if zh else f"small baskets (mean order {v:,.0f})"),
    "gap_median_days": (_cadence, _cadence),
    "weekend_share": (lambda v, zh: f"多在周末购买（{v:.0%} 的订单）" if zh else f"mostly weekends ({v:.0%} of orders)",
                      lambda v, zh: f"多在工作日购买（周末 {v:.0%}）" if zh else f"mostly weekdays ({v:.0%} at weekends)"),
    "discount_share": (lambda v, zh: f"常用优惠（{v:.0%} 的订单）" if zh else f"often with a discount ({v:.0%} of orders)",
                       lambda v, zh: f"很少用优惠（{v:.0%}）" if zh else f"rarely with a discount ({v:.0%} of orders)"),
    "distinct_categories": (lambda v, zh: f"跨品类购买（中位 {v:,.0f} 个品类）" if zh else f"many categories (median {v:,.0f})",
                            lambda v, zh: f"品类集中（中位 {v:,.0f} 个品类）" if zh else f"few categories (median {v:,.0f})"),
    "return_rate": (lambda v, zh: f"退货多（占消费 {v:.0%}）" if zh else f"return a lot ({v:.0%} of spend)",
                    lambda v, zh: "几乎不退货" if zh else "hardly any returns"),
    "novdec_share": (lambda v, zh: f"集中在 11–12 月购买（{v:.0%}）" if zh else f"mostly in November-December ({v:.0%} of orders)",
                     lambda v, zh: f"很少在 11–12 月购买（{v:.0%}）" if zh else f"seldom in November-December ({v:.0%} of orders)"),
}
_AVERAGE = ("close to the average customer", "接近整体平均")


class ClusterError(LifetagError, ValueError):
    """The customers cannot be clustered: too few of them, or all alike."""


@dataclass
class ClusterModel:
    """Fitted clusters: the features used, their scaling, the centres and each cluster's profile.

    Clusters are numbered 1..k from the largest in the fitting sample. `profile` holds, per cluster,
    the sample's share, the z-score of its mean against the whole sample per feature, and its medians
    (repeat buyers' median for the gap between orders).
    """

    features: list[str]
    log_scale: list[bool]
    fill: np.ndarray  # value taken for a missing feature (sample median, before scaling)
    mean: np.ndarray
    scale: np.ndarray
    centres: np.ndarray  # k x features, in the standardised space, cluster 1 first
    silhouettes: dict[int, float]  # silhouette per k tried
    sample_size: int
    profile: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def k(self) -> int:
        """The number of clusters."""
        return len(self.centres)

    def standardised(self, frame: pd.DataFrame) -> np.ndarray:
        """The features of `frame` (one row per buyer) on the clusters' scale."""
        values = np.column_stack([pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
                                  for c in self.features])
        values = np.where(np.isfinite(values), values, self.fill)
        logged = np.asarray(self.log_scale)
        values[:, logged] = np.log1p(np.clip(values[:, logged], 0, None))
        return (values - self.mean) / self.scale

    def assign(self, frame: pd.DataFrame) -> np.ndarray:
        """The cluster number (1..k) of each row of `frame`: its nearest centre."""
        if not len(frame):
            return np.zeros(0, dtype=np.int64)
        z = self.standardised(frame)
        # |z - c|^2 without a rows x clusters x features array: |c|^2 - 2 z.c (|z|^2 is the same for every c).
        distances = (self.centres ** 2).sum(axis=1)[None, :] - 2 * z @ self.centres.T
        return distances.argmin(axis=1).astype(np.int64) + 1

    def describe(self, cluster: int, lang: str = "en") -> str:
        """How cluster `cluster` differs from the whole, in words ("buy every 3 weeks, small baskets, ...")."""
        zh = lang == "zh"
        row = self.profile.loc[cluster]
        z = pd.Series({c: row[f"z_{c}"] for c in self.features})
        notable = z[z.abs() >= Z_NOTABLE].abs().sort_values(ascending=False, kind="stable").index[:MAX_PHRASES]
        phrases = []
        for feature in notable:
            median = row[f"median_{feature}"]
            if not np.isfinite(median):
                continue
            above, below = _PHRASES[feature]
            phrases.append((above if z[feature] > 0 else below)(float(median), zh))
        return ("，" if zh else ", ").join(phrases) if phrases else _AVERAGE[zh]

    def descriptions(self, lang: str = "en") -> dict[int, str]:
        """Cluster number -> description."""
        return {int(c): self.describe(int(c), lang) for c in self.profile.index}

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form, stored with the model."""
        return {"features": self.features, "log_scale": self.log_scale, "fill": self.fill.tolist(),
                "mean": self.mean.tolist(), "scale": [None if not np.isfinite(v) else float(v) for v in self.scale],
                "centres": self.centres.tolist(), "silhouettes": {str(k): v for k, v in self.silhouettes.items()},
                "sample_size": self.sample_size,
                "profile": {str(c): {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                                     for k, v in row.items()} for c, row in self.profile.to_dict("index").items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "ClusterModel":
        """The model `to_dict` wrote."""
        profile = pd.DataFrame.from_dict({int(c): {k: (np.nan if v is None else v) for k, v in row.items()}
                                          for c, row in data["profile"].items()}, orient="index")
        return cls(list(data["features"]), list(data["log_scale"]), np.asarray(data["fill"], dtype=float),
                   np.asarray(data["mean"], dtype=float),
                   np.asarray([np.inf if v is None else v for v in data["scale"]], dtype=float),
                   np.asarray(data["centres"], dtype=float).reshape(-1, len(data["features"])),
                   {int(k): float(v) for k, v in data["silhouettes"].items()}, int(data["sample_size"]),
                   profile.sort_index())

    def columns(self, features: pd.DataFrame) -> pd.DataFrame:
        """The tags' `cluster` and `cluster_description` (English) columns for buyers' features."""
        numbers = self.assign(features)
        words = self.descriptions("en")
        return pd.DataFrame({"cluster": numbers, "cluster_description": [words[int(n)] for n in numbers]},
                            index=features.index)


def cluster_sample(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config) -> pd.DataFrame:
    """Behavioural features at `as_of` of a fixed sample of the buyers of `source` (a canonical orders view):
    the first `report.cluster_sample` customers by a seeded hash of their id, so the same orders give the
    same sample whatever their order in the file. Features come from the feature SQL itself."""
    con.register("_lifetag_cluster_candidates", cluster_candidates(con, source, as_of, config))
    return pick_cluster_sample(con, "_lifetag_cluster_candidates", config)


def cluster_candidates(con: duckdb.DuckDBPyConnection, source: str, as_of, config: Config) -> pa.Table:
    """`cluster_sample`'s rows for the customers of `source` alone: the first of them in the sample's order,
    with their features. The sample of a whole history is `pick_cluster_sample` of the candidates of parts
    holding disjoint customers (Spark's partitions), as each customer's features depend on their own orders."""
    cut = as_timestamp(as_of)
    con.execute(f"""
CREATE OR REPLACE TEMP VIEW _lifetag_cluster_orders AS
SELECT * FROM {source} WHERE customer_id IN (
    SELECT customer_id FROM (SELECT DISTINCT customer_id FROM {source} WHERE order_ts < TIMESTAMP '{cut}')
    ORDER BY {_sample_order(config)} LIMIT {int(config.report.cluster_sample)})
""")
    columns = ["customer_id", "monetary_total", *CLUSTER_FEATURES]
    return build_relation(con, "_lifetag_cluster_orders", cut, config, shop=source).select(
        ", ".join(columns)).to_arrow_table()


def pick_cluster_sample(con: duckdb.DuckDBPyConnection, candidates: str, config: Config) -> pd.DataFrame:
    """The sample from the relation `candidates` (`cluster_candidates` of the whole history or of its parts)."""
    return con.sql(f"SELECT * FROM {candidates} ORDER BY {_sample_order(config)} "
                   f"LIMIT {int(config.report.cluster_sample)}").df()


def _sample_order(config: Config) -> str:
    """The sample's order: a seeded hash of the customer id (the id itself breaks ties)."""
    return f"hash(customer_id, {int(config.report.seed)}), customer_id"


def fit_clusters(sample: pd.DataFrame, config: Config) -> ClusterModel:
    """k-means on the standardised behaviour of `sample` (`cluster_sample`), k by the best silhouette in
    `report.clusters_k` (silhouettes on at most 10,000 rows); clusters renumbered from the largest."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    seed = int(config.report.seed)
    low, high = config.report.clusters_k
    if len(sample) < max(MIN_CUSTOMERS, 5 * high):
        raise ClusterError(f"{len(sample):,} buyers are too few for {low}-{high} behavioural clusters "
                           f"(report.clusters_k); at least {max(MIN_CUSTOMERS, 5 * high):,} are needed")
    sample = sample.sort_values("customer_id", kind="stable").reset_index(drop=True)
    used = [c for c in CLUSTER_FEATURES
            if c in sample and pd.to_numeric(sample[c], errors="coerce").isna().mean() <= MAX_MISSING_SHARE]
    raw = np.column_stack([pd.to_numeric(sample[c], errors="coerce").to_numpy(dtype=float) for c in used])
    fill = np.array([np.nanmedian(raw[:, j]) if np.isfinite(raw[:, j]).any() else 0.0 for j in range(len(used))])
    model = ClusterModel(used, [CLUSTER_FEATURES[c] for c in used], fill, np.zeros(len(used)), np.ones(len(used)),
                         np.zeros((0, len(used))), {}, len(sample))
    logged = model.standardised(sample)  # mean 0, scale 1: the transformed values
    model.mean = logged.mean(axis=0)
    spread = logged.std(axis=0)
    # A feature every customer shares (up to rounding) has no spread to scale by: it then adds nothing.
    model.scale = np.where(spread > 1e-9 * (1 + np.abs(model.mean)), spread, np.inf)
    z = (logged - model.mean) / model.scale
    fitted = {}
    for k in range(low, high + 1):
        kmeans = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(z)
        if len(np.unique(kmeans.labels_)) < 2:
            continue
        model.silhouettes[k] = float(silhouette_score(z, kmeans.labels_, sample_size=min(SILHOUETTE_ROWS, len(z)),
                                                      random_state=seed))
        fitted[k] = kmeans
    if not fitted:
        raise ClusterError("the buyers' behaviour does not split into clusters: they all look the same")
    best = max(model.silhouettes, key=lambda k: (model.silhouettes[k], -k))
    kmeans = fitted[best]
    sizes = np.bincount(kmeans.labels_, minlength=best)
    order = np.lexsort((np.arange(best), -sizes))  # largest first; ties by k-means' own number
    model.centres = kmeans.cluster_centers_[order]
    labels = np.argsort(order)[kmeans.labels_] + 1
    model.profile = _profile(sample, z, labels, model)
    return model


def _profile(sample: pd.DataFrame, z: np.ndarray, labels: np.ndarray, model: ClusterModel) -> pd.DataFrame:
    """Per cluster: share of the sample, z-score of its mean per feature, and medians in the features' units."""
    rows = {}
    repeat = pd.to_numeric(sample["frequency"], errors="coerce").to_numpy(dtype=float) >= 2
    for cluster in range(1, model.k + 1):
        members = labels == cluster
        row: dict[str, float] = {"share": float(members.mean())}
        for j, feature in enumerate(model.features):
            row[f"z_{feature}"] = float(z[members, j].mean())
            values = pd.to_numeric(sample.loc[members, feature], errors="coerce")
            if feature == "gap_median_days":
                # A cadence only means something for repeat buyers: say it when most of the cluster are.
                values = values[repeat[members]] if repeat[members].mean() >= 0.5 else values.iloc[:0]
            row[f"median_{feature}"] = float(values.median()) if values.notna().any() else float("nan")
        rows[cluster] = row
    return pd.DataFrame.from_dict(rows, orient="index")
