"""`lifetag campaign`: treated against control customers over a window, on a generated shop.

A 3,000-customer shop (with its customers table, so registered customers who never bought are
assigned too) and a small model trained once before the window (trials=0, two cut-offs, one LTV
candidate: segments and tiers need a model, not a good one). Checked: a known injected effect is
covered by the 95% intervals, end to end through the command line and over 100 seeds; splits with
no effect claim one at the stated 5% rate; the split check flags a skewed split only; every refusal
is one paragraph with exit code 2 and nothing written; the report section's contract.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from scipy import stats
from typer.testing import CliRunner

from configs.schema import CampaignConfig, Config, load_config
from features.synthetic import ORDERS_SCHEMA
from serving.campaign import NO_ORDER, CampaignError, CampaignInputs, compare, evaluate, read_inputs
from serving.campaign_report import MARKER, add_to_report, campaign_section_html
from serving.cli import app
from training.pipeline import fit_bundle
from support import generated_shop, module_home

CUSTOMERS = 3_000
SEED = 23
START, DAYS = "2024-10-01", 30
# The injected effect: this share of the treated customers places one more order of this amount in the window.
INJECTED_SHARE, INJECTED_AMOUNT = 0.15, 40.0
SPLITS = 100
ALPHA = 0.05
# With SPLITS independent tests at level ALPHA, a correct test shows more than this many significant
# results with probability under 0.1% (Binomial(100, 0.05): P(X > 13) = 0.0005); likewise an interval
# of 95% coverage misses more than SPLITS - 87 times with probability under 0.1%.
MOST_FALSE_CLAIMS = int(stats.binom.ppf(0.999, SPLITS, ALPHA))
LEAST_COVERED = int(stats.binom.ppf(0.001, SPLITS, 1 - ALPHA))
# The A/A and coverage loops call the comparison 100 times each: without the bootstrap (the verdicts use
# Welch's and Newcombe's intervals, which the bootstrap does not change) they take 3 s instead of 13 s.
FAST = CampaignConfig(bootstrap_resamples=0)


def _campaign(*args: str | Path) -> Result:
    return CliRunner().invoke(app, ["campaign", *map(str, args)])


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED, start="2023-01-01", end="2024-12-31")


@pytest.fixture(scope="module")
def bundle_dir(shop: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model trained on the history before the window, saved as a folder for --model."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch = module_home(home)
    try:
        quick = load_config(overrides={"training": {"cutoffs": 2, "ltv_models": ["tweedie"], "bgnbd_offset": False}})
        trained = fit_bundle(shop / "orders.parquet", quick, as_of=START, trials=0)
    finally:
        monkeypatch.undo()
    return trained.bundle.save(home / "bundle")


@pytest.fixture(scope="module")
def ids(shop: Path) -> np.ndarray:
    """Every customer of the customers table: buyers and registered customers who never bought."""
    return pd.read_parquet(shop / "customers.parquet", columns=["customer_id"])["customer_id"].to_numpy()


def _split(ids: np.ndarray, seed: int, treated_share: float = 0.5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"customer_id": ids,
                         "group": np.where(rng.random(len(ids)) < treated_share, "treatment", "control")})


def _csv(frame: pd.DataFrame, folder: Path, name: str = "assignments.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def fair_split(ids: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _csv(_split(ids, seed=1), tmp_path_factory.mktemp("fair"))


@pytest.fixture(scope="module")
def inputs(shop: Path, bundle_dir: Path, fair_split: Path, config: Config) -> CampaignInputs:
    """The window's outcomes and the strata at the start of every customer, read and tagged once."""
    return read_inputs(fair_split, shop / "orders.parquet", START, DAYS, config, FAST, model_uri=str(bundle_dir),
                       customers=shop / "customers.parquet")


def _regrouped(inputs: CampaignInputs, seed: int, treated_share: float = 0.5) -> CampaignInputs:
    """The same customers and outcomes, split again at random (an A/A test: no effect by construction)."""
    rng = np.random.default_rng(seed)
    frame = inputs.customers.assign(group=np.where(rng.random(len(inputs.customers)) < treated_share,
                                                   "treatment", "control"))
    return dataclasses.replace(inputs, customers=frame)


def _injected(inputs: CampaignInputs, seed: int) -> CampaignInputs:
    """A fresh split where INJECTED_SHARE of the treated customers add one order of INJECTED_AMOUNT."""
    regrouped = _regrouped(inputs, seed)
    frame = regrouped.customers.copy()
    rng = np.random.default_rng(10_000 + seed)
    lifted = (frame["group"] == "treatment").to_numpy() & (rng.random(len(frame)) < INJECTED_SHARE)
    frame.loc[lifted, "orders"] += 1
    frame.loc[lifted, "spend"] += INJECTED_AMOUNT
    frame.loc[lifted, "converted"] = True
    return dataclasses.replace(regrouped, customers=frame)


def _true_effects(inputs: CampaignInputs) -> dict[str, float]:
    """What the injection adds on average, treated minus control: the intervals' target."""
    baseline = inputs.customers["converted"].mean()  # who would have converted anyway gains nothing
    return {"conversion": INJECTED_SHARE * (1 - baseline), "orders": INJECTED_SHARE,
            "spend": INJECTED_SHARE * INJECTED_AMOUNT}


def _overall(result, measure: str):  # noqa: ANN001, ANN202 - a CampaignResult in, a Measure out
    return next(m for m in result.overall if m.name == measure)


# --- a known effect ------------------------------------------------------------------------------


def _write_injected_orders(shop: Path, split: pd.DataFrame, folder: Path, seed: int) -> Path:
    """The shop's orders plus one extra order of INJECTED_AMOUNT in the window for INJECTED_SHARE of the
    treated customers, as a folder of two Parquet files (the intake reads a folder as one source)."""
    rng = np.random.default_rng(seed)
    treated = split.loc[split["group"] == "treatment", "customer_id"].to_numpy()
    lifted = treated[rng.random(len(treated)) < INJECTED_SHARE]
    days = rng.integers(0, DAYS, len(lifted))
    orders = folder / "orders"
    orders.mkdir()
    shutil.copy(shop / "orders.parquet", orders / "shop.parquet")
    n = len(lifted)
    extra = pa.table({
        "customer_id": lifted, "order_id": [f"CAMPAIGN-{i}" for i in range(n)],
        "order_ts": pd.Timestamp(START) + pd.to_timedelta(days, unit="D") + pd.Timedelta(hours=12),
        "amount": np.full(n, INJECTED_AMOUNT), "quantity": np.ones(n, dtype=np.int64), "category": [None] * n,
        "product_id": [None] * n, "discount": np.zeros(n), "channel": ["email"] * n, "status": ["completed"] * n,
    }, schema=ORDERS_SCHEMA)
    pq.write_table(extra, orders / "campaign.parquet")
    return orders


def test_the_95_percent_intervals_cover_an_injected_effect_end_to_end(
        shop: Path, ids: np.ndarray, bundle_dir: Path, inputs: CampaignInputs, tmp_path: Path) -> None:
    split = _split(ids, seed=2)
    orders = _write_injected_orders(shop, split, tmp_path, seed=3)
    done = _campaign("--assignments", _csv(split, tmp_path), "--orders", orders, "--customers",
                     shop / "customers.parquet", "--start", START, "--days", DAYS, "--model", bundle_dir,
                     "--out", tmp_path / "result.json")
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    result = json.loads((tmp_path / "result.json").read_text())["campaigns"][0]
    truth = _true_effects(inputs)
    for m in result["overall"]:
        assert m["ci_low"] <= truth[m["measure"]] <= m["ci_high"], m
        assert m["verdict"] == "higher", m  # 15% of 1,900 treated customers: far beyond chance
    spend = next(m for m in result["overall"] if m["measure"] == "spend")
    assert spend["bootstrap_ci_low"] <= truth["spend"] <= spend["bootstrap_ci_high"]
    assert result["verdict"].startswith("Treated customers converted more: ")
    assert "Treated customers converted more" in done.stdout and "bootstrap" in done.stdout


def test_over_100_seeds_the_intervals_cover_the_injected_effect_at_their_stated_rate(inputs: CampaignInputs) -> None:
    truth = _true_effects(inputs)
    covered = {measure: 0 for measure in truth}
    for seed in range(SPLITS):
        result = compare(_injected(inputs, seed), "assignments", FAST)
        for measure, effect in truth.items():
            d = _overall(result, measure).difference
            covered[measure] += d.ci_low <= effect <= d.ci_high
    assert all(count >= LEAST_COVERED for count in covered.values()), covered


def test_with_no_effect_splits_claim_one_at_no_more_than_the_stated_rate(inputs: CampaignInputs) -> None:
    claims = {"conversion": 0, "orders": 0, "spend": 0}
    segment_tests = segment_claims = 0  # RFM segments: disjoint, so each split adds separate tests
    for seed in range(SPLITS):
        result = compare(_regrouped(inputs, 1_000 + seed), "assignments", FAST)
        for measure in claims:
            claims[measure] += _overall(result, measure).verdict != "no clear difference"
        for stratum in (s for s in result.strata if s.by == "rfm_segment" and not s.note):
            segment_tests += 1
            segment_claims += stratum.measures[0].verdict != "no clear difference"
    assert all(count <= MOST_FALSE_CLAIMS for count in claims.values()), claims
    # Small segments with rare conversions are where a normal approximation would claim too much.
    assert segment_claims <= stats.binom.ppf(0.999, segment_tests, ALPHA), (segment_claims, segment_tests)


# --- strata and the split -------------------------------------------------------------------------


def test_strata_are_the_segments_and_tiers_at_the_start_with_customers_without_orders_apart(
        inputs: CampaignInputs) -> None:
    result = compare(inputs, "assignments", FAST)
    by = {(s.by, s.key): s for s in result.strata}
    assert {"high", "low", NO_ORDER} <= {key for b, key in by if b == "churn_tier"}
    assert {"important_value", NO_ORDER} <= {key for b, key in by if b == "rfm_segment"}
    for b in ("rfm_segment", "churn_tier"):
        strata = [s for s in result.strata if s.by == b]
        assert sum(s.treatment for s in strata) == result.split.treatment
        assert sum(s.control for s in strata) == result.split.control
    # Registered customers who never bought, and buyers whose first order is in the window, are one stratum.
    no_order = by[("churn_tier", NO_ORDER)]
    assert no_order.treatment + no_order.control == (inputs.customers["churn_tier"] == NO_ORDER).sum() > 500
    small = [s for s in result.strata if min(s.treatment, s.control) < FAST.min_stratum_customers]
    for s in small:
        assert s.note.startswith("fewer than 30 customers") and {m.verdict for m in s.measures} == {"too few customers"}


def test_a_fair_split_is_not_flagged_and_a_skewed_one_is(inputs: CampaignInputs) -> None:
    fair = compare(_regrouped(inputs, 5), "assignments", FAST)
    assert not fair.split.mismatch and fair.split.p_value > 0.01
    assert not any("sample-ratio" in n for n in fair.notes)
    skewed = compare(_regrouped(inputs, 5, treated_share=0.55), "assignments", FAST)
    assert skewed.split.mismatch and skewed.split.p_value < 0.001
    assert skewed.verdict.startswith("Sample-ratio mismatch") and "sample-ratio mismatch" in skewed.notes[0]
    assert skewed.to_dict()["split"]["mismatch"] is True
    # The same split is what was intended when 55% treated was the plan.
    planned = compare(_regrouped(inputs, 5, treated_share=0.55), "assignments",
                      FAST.model_copy(update={"treatment_share": 0.55}))
    assert not planned.split.mismatch


def test_a_skewed_split_is_flagged_on_the_command_line(shop: Path, ids: np.ndarray, bundle_dir: Path,
                                                       tmp_path: Path) -> None:
    done = _campaign("--assignments", _csv(_split(ids, 6, treated_share=0.6), tmp_path), "--orders",
                     shop / "orders.parquet", "--customers", shop / "customers.parquet", "--start", START,
                     "--days", DAYS, "--model", bundle_dir)
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    assert "warning: sample-ratio mismatch" in done.stdout and "50.0% was intended" in done.stdout


def test_several_campaigns_in_one_file_are_compared_apart(shop: Path, ids: np.ndarray, bundle_dir: Path,
                                                          tmp_path: Path, config: Config) -> None:
    spring, autumn = _split(ids[:2_000], 7).assign(campaign="spring"), _split(ids[1_000:], 8).assign(campaign="autumn")
    path = tmp_path / "assignments.parquet"
    pd.concat([spring, autumn]).rename(columns={"group": "Group"}).to_parquet(path)  # columns in any case
    run = evaluate(path, shop / "orders.parquet", START, DAYS, config, FAST, model_uri=str(bundle_dir),
                   customers=shop / "customers.parquet")
    assert [r.campaign for r in run.results] == ["autumn", "spring"]
    autumn, spring_result = run.results
    assert spring_result.split.treatment + spring_result.split.control == 2_000
    assert autumn.split.treatment + autumn.split.control == len(ids) - 1_000
    assert [c["campaign"] for c in run.to_dict()["campaigns"]] == ["autumn", "spring"]


def test_unknown_ids_below_the_limit_are_counted_and_reported(shop: Path, ids: np.ndarray, bundle_dir: Path,
                                                               tmp_path: Path) -> None:
    split = pd.concat([_split(ids, 9), pd.DataFrame({"customer_id": ["nobody-1", "nobody-2"],
                                                     "group": ["treatment", "control"]})])
    done = _campaign("--assignments", _csv(split, tmp_path), "--orders", shop / "orders.parquet", "--customers",
                     shop / "customers.parquet", "--start", START, "--days", DAYS, "--model", bundle_dir,
                     "--out", tmp_path / "result.json")
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    counts = json.loads((tmp_path / "result.json").read_text())["campaigns"][0]["counts"]
    assert counts["unknown_treatment"] == 1 and counts["unknown_control"] == 1
    assert "2 assigned ids" in done.stdout and "neither the orders nor the customers table" in done.stdout


# --- refusals: one paragraph, exit code 2, nothing written ----------------------------------------


def _refused(done: Result, *words: str) -> str:
    assert done.exit_code == 2, f"{done.output}\n{done.exception!r}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


REFUSED_FILES = {
    "no control group": (lambda ids: pd.DataFrame({"customer_id": ids[:50], "group": "treatment"}),
                         ["campaign 'assignments' has no control group (50 treatment rows, 0 control)"]),
    "no treatment group": (lambda ids: pd.DataFrame({"customer_id": ids[:50], "group": "Control"}),
                           ["has no treatment group"]),
    "other group names": (lambda ids: pd.DataFrame({"customer_id": ids[:4], "group": ["A", "B", "A", "control"]}),
                          ["column 'group' has 3 rows that are neither treatment nor control "
                           "(rows 1, 2, 3: 'A', 'B', 'A')"]),
    "missing columns": (lambda ids: pd.DataFrame({"id": ids[:4], "arm": "control"}),
                        ["required column 'customer_id' and 'group' are missing", "The file has columns: id, arm"]),
    "a customer twice": (lambda ids: pd.DataFrame({"customer_id": [ids[0], ids[1], ids[0]],
                                                   "group": ["treatment", "control", "control"]}),
                         ["e.g. '{id0}' in campaign 'assignments' (rows 1, 3: treatment, control)"]),
    "an empty id": (lambda ids: pd.DataFrame({"customer_id": [ids[0], " "], "group": ["treatment", "control"]}),
                    ["column 'customer_id' has 1 row with an empty customer id (row 2: '')"]),
    "a campaign without a name": (lambda ids: pd.DataFrame({"customer_id": ids[:3], "group": "control",
                                                            "campaign": ["spring", "", "spring"]}),
                                  ["column 'campaign' has 1 empty value (row 2: '')"]),
    "unknown ids beyond the share": (
        lambda ids: pd.concat([_split(ids, 4), pd.DataFrame({"customer_id": [f"X{i}" for i in range(200)],
                                                             "group": "treatment"})]),
        ["200 of the 3,950 customer ids of campaign 'assignments' (5.1%) are in neither --orders",
         "'X0', 'X1', 'X2'", "more than --max-unknown-share 1.0% allows"]),
}


@pytest.mark.parametrize("case", list(REFUSED_FILES))
def test_assignments_that_cannot_be_compared_are_refused(case: str, shop: Path, ids: np.ndarray, bundle_dir: Path,
                                                         tmp_path: Path) -> None:
    make, words = REFUSED_FILES[case]
    assignments = _csv(make(ids), tmp_path)
    done = _campaign("--assignments", assignments, "--orders", shop / "orders.parquet", "--customers",
                     shop / "customers.parquet", "--start", START, "--days", DAYS, "--model", bundle_dir,
                     "--out", tmp_path / "result.json")
    _refused(done, str(assignments), *(w.replace("{id0}", str(ids[0])) for w in words))
    assert not (tmp_path / "result.json").exists()


@pytest.mark.parametrize(("options", "words"), [
    (["--start", "2024-12-15"], ["the window --start 2024-12-15 --days 30 runs to 2025-01-13, but the last order in "
                                 "the file is on 2024-12-3", "fewer --days (at most 17 from 2024-12-15)"]),
    (["--start", "2022-06-01"], ["no orders before --start 2022-06-01: the first order is on 2023-01-"]),
    (["--treatment-share", "1.5"], ["--treatment-share 1.5: Input should be less than 1"]),
    (["--out", "{tmp}/result.csv"], ["a campaign result is a JSON document"]),
    (["--out", "{orders}"], ["--out", "is the same file as --orders", "would destroy the input"]),
    (["--report", "{assignments}"], ["--report", "is the same file as --assignments"]),
    (["--report", "{tmp}/missing.html"], ["missing.html: no such file", "`lifetag report` first"]),
    (["--report", "{tmp}/plain.html"], ["plain.html: the file has no `<!-- lifetag:campaign-sections -->` marker",
                                        "The file was not changed."]),
    (["--model", "{tmp}/nomodel"], ["--model", "not a usable lifetag bundle folder"]),
])
def test_windows_options_and_outputs_that_cannot_work_are_refused(
        options: list[str], words: list[str], shop: Path, ids: np.ndarray, bundle_dir: Path, tmp_path: Path) -> None:
    assignments = _csv(_split(ids, 10), tmp_path)
    (tmp_path / "nomodel").mkdir()
    plain = tmp_path / "plain.html"
    plain.write_text("<html><main><p>someone else's page</p></main></html>")
    places = {"tmp": tmp_path, "orders": shop / "orders.parquet", "assignments": assignments}
    given = dict(zip(options[::2], [o.format(**places) for o in options[1::2]]))
    args = {"--assignments": assignments, "--orders": shop / "orders.parquet", "--start": START, "--days": DAYS,
            "--model": bundle_dir, **given}
    if "--out" not in given:
        args["--out"] = tmp_path / "result.json"
    done = _campaign(*[str(part) for pair in args.items() for part in pair])
    _refused(done, *words)
    assert not (tmp_path / "result.json").exists()
    assert plain.read_text() == "<html><main><p>someone else's page</p></main></html>"


def test_orders_go_through_the_intake_with_its_messages_and_quarantine(
        shop: Path, ids: np.ndarray, bundle_dir: Path, tmp_path: Path) -> None:
    orders = tmp_path / "orders"
    orders.mkdir()
    shutil.copy(shop / "orders.parquet", orders / "shop.parquet")
    bad = pa.table({"customer_id": [str(ids[0])], "order_id": ["R-1"], "order_ts": [pd.Timestamp("2024-10-02")],
                    "amount": [12.0], "quantity": [1], "category": [None], "product_id": [None], "discount": [0.0],
                    "channel": [None], "status": ["refunded"]}, schema=ORDERS_SCHEMA)
    pq.write_table(bad, orders / "late.parquet")
    args = ["--assignments", _csv(_split(ids, 13), tmp_path), "--orders", orders, "--customers",
            shop / "customers.parquet", "--start", START, "--days", DAYS, "--model", bundle_dir]
    _refused(_campaign(*args), f"{orders}: rows that cannot be used: column 'status' has 1 row with a status in "
                               "neither orders.purchase_statuses nor orders.return_statuses", "--quarantine")
    done = _campaign(*args, "--quarantine", tmp_path / "bad.csv")
    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    assert "quarantined 1 (-> " in done.stdout
    assert pd.read_csv(tmp_path / "bad.csv")["status"].tolist() == ["refunded"]


def test_unreadable_assignments_are_refused_in_one_paragraph(tmp_path: Path) -> None:
    from serving.campaign import read_assignments

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("customer_id,group\n")
    (tmp_path / "table.xlsx").write_text("x")
    for name, words in (("empty.csv", "the file is empty (0 bytes)"), ("header.csv", "the file has no rows"),
                        ("table.xlsx", "unknown assignments format '.xlsx'"), ("nowhere.csv", "no such file")):
        with pytest.raises(CampaignError, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
            read_assignments(tmp_path / name)
        assert str(tmp_path / name) in str(caught.value) and "\n" not in str(caught.value)


# --- the report section ---------------------------------------------------------------------------


REPORT = f"""<!doctype html><html><head><meta charset="utf-8"><title>lifetag report</title></head>
<body><main><h1>Tags</h1><p>before</p>
{MARKER}
</main><footer>after</footer></body></html>
"""


def test_the_section_is_added_before_the_marker_and_replaced_on_a_rerun(
        shop: Path, ids: np.ndarray, bundle_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(REPORT)
    args = ["--orders", shop / "orders.parquet", "--customers", shop / "customers.parquet", "--start", START,
            "--days", DAYS, "--model", bundle_dir, "--report", report]
    first = _campaign("--assignments", _csv(_split(ids, 11), tmp_path), *args)
    assert first.exit_code == 0, f"{first.output}\n{first.exception!r}"
    assert "section added" in first.stdout
    text = report.read_text()
    assert text.count('<section class="campaign" data-campaign="assignments">') == 1
    assert text.index("<p>before</p>") < text.index('<section class="campaign"') < text.index(MARKER)
    assert text.index(MARKER) < text.index("</main>") and text.endswith("<footer>after</footer></body></html>\n")
    again = _campaign("--assignments", _csv(_split(ids, 12), tmp_path), *args)
    assert again.exit_code == 0 and "section replaced" in again.stdout
    rerun = report.read_text()
    assert rerun.count('<section class="campaign"') == 1 and rerun != text
    assert rerun.replace(_section(rerun), "") == text.replace(_section(text), "")


def _section(text: str) -> str:
    start = text.index('<section class="campaign"')
    return text[start:text.index("</section>", start) + len("</section>")]


def test_another_campaign_gets_a_section_of_its_own(inputs: CampaignInputs, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(REPORT)
    result = compare(inputs, "assignments", FAST)
    assert add_to_report(report, result) == "added"
    other = dataclasses.replace(result, campaign="winter")
    assert add_to_report(report, other.to_dict()) == "added"  # the JSON's form works as well
    assert add_to_report(report, result) == "replaced"
    text = report.read_text()
    assert text.count('<section class="campaign"') == 2 and 'data-campaign="winter"' in text


def test_a_section_is_self_contained_and_escapes_what_it_shows(inputs: CampaignInputs) -> None:
    result = dataclasses.replace(compare(inputs, "assignments", FAST), campaign='<b>"Spring" & co</b>')
    section = campaign_section_html(result)
    assert section.startswith('<section class="campaign" data-campaign="&lt;b&gt;&quot;Spring&quot; &amp; co&lt;/b&gt;">')
    assert section.endswith("</section>") and section.count("<section") == 1
    for outside in ("<script", "<link", "src=", "href=", "url(", "@import"):
        assert outside not in section
    assert "<svg" in section and "Important value" in section and "95% CI" in section
    chinese = campaign_section_html(result, lang="zh")
    assert "转化率" in chinese and "重要价值客户" in chinese
    with pytest.raises(CampaignError, match="'fr'"):
        campaign_section_html(result, lang="fr")
