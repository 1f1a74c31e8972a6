"""Seed bagging: a target's final model as the average of boosters fitted with different seeds, stored as one booster.

LightGBM's row and feature subsampling (`bagging_fraction`, `feature_fraction`) makes a booster depend
on its seed; the average of a few such boosters ranks more steadily than any one of them. The
members are averaged on the link scale (log-odds for a probability, the log for spend), which is the
same as one booster holding every member's trees with their leaf values divided by the member count:
`average_boosters` writes exactly that booster, so the bundle stores and serving predicts a bagged
model like any other (`serving.bundle.TargetModel` needs no change).
"""
from __future__ import annotations

import re

import numpy as np

__all__ = ["average_boosters", "member_seeds"]

_TREE = re.compile(r"^Tree=\d+$", re.MULTILINE)
_END = "end of trees"
_SCALED = ("leaf_value=", "internal_value=")
# Header lines that differ between members of one bag: tree sizes, and the ranges of binned samples.
_VARYING = re.compile(r"^(tree_sizes|feature_infos)=.*\n", re.MULTILINE)


def member_seeds(seed: int, members: int) -> list[int]:
    """The training seed first (one member is the unbagged model), then seeds derived from it."""
    if members < 1:
        raise ValueError(f"a bag needs at least one member, got {members}")
    derived = [int(np.random.SeedSequence([seed, i]).generate_state(1)[0] % (2**31 - 1)) for i in range(1, members)]
    return [seed, *derived]


def _split(model_text: str) -> tuple[str, list[str], str]:
    """A LightGBM model text as (header, one text per tree, everything from 'end of trees')."""
    end = model_text.index(_END)
    starts = [m.start() for m in _TREE.finditer(model_text, 0, end)]
    if not starts:
        raise ValueError("the model text has no trees")
    trees = [model_text[a:b] for a, b in zip(starts, [*starts[1:], end])]
    return model_text[:starts[0]], trees, model_text[end:]


def _scaled_tree(tree: str, number: int, factor: float) -> str:
    """One tree renumbered, its leaf (and internal node) values multiplied by `factor`."""
    lines = tree.rstrip("\n").split("\n")
    lines[0] = f"Tree={number}"
    for i, line in enumerate(lines):
        for key in _SCALED:
            if line.startswith(key):
                values = line[len(key):].split()
                lines[i] = key + " ".join(repr(float(v) * factor) for v in values)
    return "\n".join(lines) + "\n\n\n"


def average_boosters(model_texts: list[str]) -> str:
    """One LightGBM model text whose raw score is the mean of the given boosters' raw scores.

    The boosters must share objective and features (members of one bag: the same data and
    parameters, different seeds). The header and parameters are the first member's; LightGBM
    recomputes tree sizes and feature importances when it loads and saves the result.
    """
    import lightgbm as lgb

    if len(model_texts) == 1:
        return model_texts[0]
    parts = [_split(text) for text in model_texts]
    headers = {_VARYING.sub("", p[0]) for p in parts}
    if len(headers) > 1:
        raise ValueError("boosters of one bag must share objective and features (their model headers differ)")
    factor = 1.0 / len(parts)
    trees = [tree for _, member_trees, _ in parts for tree in member_trees]
    body = "".join(_scaled_tree(tree, n, factor) for n, tree in enumerate(trees))
    header = _VARYING.sub("", parts[0][0]).rstrip("\n") + "\n" + _feature_infos([p[0] for p in parts]) + "\n\n"
    return lgb.Booster(model_str=header + body + parts[0][2]).model_to_string()


def _feature_infos(headers: list[str]) -> str:
    """The members' `feature_infos` line as one: each numeric feature's widest [min:max], each categorical
    feature's categories of every member. They differ where LightGBM bins a sample of the rows (more than
    `bin_construct_sample_cnt`), drawn with the member's seed; the trees' thresholds are values, not bins,
    so predictions do not depend on them."""
    members = [re.search(r"^feature_infos=(.*)$", h, re.MULTILINE).group(1).split(" ") for h in headers]
    merged = []
    for infos in zip(*members):
        known = [i for i in infos if i != "none"]
        if not known:
            merged.append("none")
        elif known[0].startswith("["):
            ranges = [tuple(float(x) for x in i[1:-1].split(":")) for i in known]
            merged.append(f"[{min(r[0] for r in ranges)!r}:{max(r[1] for r in ranges)!r}]")
        else:
            merged.append(":".join(dict.fromkeys(c for i in known for c in i.split(":"))))
    return "feature_infos=" + " ".join(merged)
