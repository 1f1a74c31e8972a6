"""Scoring with a customers table end to end: registered customers, first_purchase_prob, attributes, CLI.

Real DuckDB, LightGBM and files; nothing is mocked. A 3,000-customer shop over 18 months is
trained once per module (trials=0) with its customers table, then scored at an as_of a month
before its end, so the table holds sign-ups after as_of that must not be tagged. The scored table
adds a few hand-made registered customers whose ids and text must come through exactly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from configs.schema import Config
from serving.cli import app
from serving.scoring import ScoreResult, ScoringError, score
from training.pipeline import TrainResult, fit_bundle
from support import generated_shop, module_home, parquet_file

CUSTOMERS = 3_000
SEED = 21
START, END = "2023-01-01", "2024-06-30"
AS_OF = pd.Timestamp("2024-06-01")
ATTRIBUTES = ["region", "gender", "age", "acquisition_channel", "membership_level"]
TEXT_ATTRIBUTES = ["region", "gender", "acquisition_channel", "membership_level"]
ORDER_BASED = ["recency_days", "churn_risk", "repurchase_prob", "ltv", "expected_next_order", "value_at_risk",
               "churn_tier", "value_tier", "high_value_potential", "rfm_r", "rfm_f", "rfm_m", "rfm_segment",
               "rfm_segment_label", "rfm_segment_label_zh", "rfm_action", "reasons"]
# Registered customers whose tags are known by construction (none of them ever orders).
HAND_MADE = [
    # Signed up 2 days before as_of, text the model never saw: pending, and read exactly.
    {"customer_id": "00042", "signup_ts": AS_OF - pd.Timedelta(days=2), "region": "Île-de-France", "gender": "F",
     "age": 26, "acquisition_channel": "social", "membership_level": "basic"},
    # Signed up 10 days before: registered but no longer pending.
    {"customer_id": "12345678901234567890", "signup_ts": AS_OF - pd.Timedelta(days=10), "region": "  Grand Est ",
     "gender": "M", "age": None, "acquisition_channel": "référence – ami", "membership_level": "金卡"},
    # No sign-up date: registered, never pending.
    {"customer_id": "zz-no-signup", "signup_ts": None, "region": "North", "gender": "U", "age": 33,
     "acquisition_channel": "search", "membership_level": "silver"},
    # Signed up at as_of and after it: not customers yet.
    {"customer_id": "zz-at-as-of", "signup_ts": AS_OF, "region": "North", "gender": "F", "age": 40,
     "acquisition_channel": "search", "membership_level": "basic"},
    {"customer_id": "zz-later", "signup_ts": AS_OF + pd.Timedelta(days=3), "region": "South", "gender": "M", "age": 50,
     "acquisition_channel": "app", "membership_level": "gold"},
]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generated_shop(tmp_path_factory, CUSTOMERS, SEED, start=START, end=END)


@pytest.fixture(scope="module")
def orders(shop: Path) -> pd.DataFrame:
    return pd.read_parquet(shop / "orders.parquet")


@pytest.fixture(scope="module")
def customers(shop: Path) -> pd.DataFrame:
    """The generated customers table plus the hand-made registered customers."""
    generated = pd.read_parquet(shop / "customers.parquet")
    hand_made = pd.DataFrame(HAND_MADE).astype({"signup_ts": "datetime64[us]", "age": "float64"})
    return pd.concat([generated, hand_made.astype({c: generated[c].dtype for c in generated.columns})],
                     ignore_index=True)


@pytest.fixture(scope="module")
def customers_path(customers: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parquet_file(customers, tmp_path_factory.mktemp("scored_customers"), "customers.parquet")


@pytest.fixture(scope="module")
def trained(shop: Path, config: Config, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    monkeypatch = module_home(tmp_path_factory.mktemp("home"))
    try:
        return fit_bundle(shop / "orders.parquet", config, as_of=AS_OF, trials=0, customers=shop / "customers.parquet")
    finally:
        monkeypatch.undo()


def _score(shop: Path, customers_path: Path | None, trained: TrainResult, config: Config, out: Path,
           **kwargs) -> tuple[ScoreResult, pd.DataFrame]:
    monkeypatch = module_home(out.parent / "home")
    try:
        result = score(shop / "orders.parquet", AS_OF, out, config, bundle=trained.bundle, model_version="test",
                       customers=customers_path, **kwargs)
    finally:
        monkeypatch.undo()
    return result, pd.read_parquet(out)


@pytest.fixture(scope="module")
def scored(shop: Path, customers_path: Path, trained: TrainResult, config: Config,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoreResult, pd.DataFrame]:
    return _score(shop, customers_path, trained, config, tmp_path_factory.mktemp("tags") / "tags.parquet")


@pytest.fixture(scope="module")
def tags(scored: tuple[ScoreResult, pd.DataFrame]) -> pd.DataFrame:
    return scored[1]


def _buyers(orders: pd.DataFrame) -> set[str]:
    """Customers with a purchase (not a return) before as_of."""
    returned = orders["status"].isin(["returned", "cancelled"]) | (orders["amount"] < 0)
    return set(orders.loc[(orders["order_ts"] < AS_OF) & ~returned, "customer_id"])


def _expected_registered(orders: pd.DataFrame, customers: pd.DataFrame) -> set[str]:
    signed_up = customers["signup_ts"].isna() | (customers["signup_ts"] < AS_OF)
    return set(customers.loc[signed_up, "customer_id"]) - _buyers(orders)


# --- who is tagged ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_buyers_and_registered_customers_each_have_exactly_one_row(
    tags: pd.DataFrame, scored: tuple[ScoreResult, pd.DataFrame], orders: pd.DataFrame, customers: pd.DataFrame
) -> None:
    result = scored[0]
    registered = _expected_registered(orders, customers)

    assert tags["customer_id"].is_unique
    assert set(tags["customer_id"]) == _buyers(orders) | registered
    assert set(tags.loc[tags["lifecycle_stage"] == "registered", "customer_id"]) == registered
    assert {"00042", "12345678901234567890", "zz-no-signup"} <= registered
    assert (result.customers, result.registered, result.unmatched_customers) == (len(tags), len(registered), 0)
    assert result.customers_intake is not None and result.customers_intake.rows_read == len(customers)


@pytest.mark.slow
def test_sign_ups_on_or_after_as_of_are_not_in_the_output(tags: pd.DataFrame, orders: pd.DataFrame,
                                                          customers: pd.DataFrame) -> None:
    later = set(customers.loc[customers["signup_ts"] >= AS_OF, "customer_id"]) - _buyers(orders)

    assert {"zz-at-as-of", "zz-later"} <= later and len(later) > 50, "the shop has sign-ups after as_of"
    assert not later & set(tags["customer_id"])


# --- registered customers' tags ------------------------------------------------------------------------


@pytest.mark.slow
def test_registered_customers_get_a_first_purchase_probability_and_buyers_none(
    tags: pd.DataFrame, scored: tuple[ScoreResult, pd.DataFrame], trained: TrainResult
) -> None:
    registered = tags["lifecycle_stage"] == "registered"
    prob = tags.loc[registered, "first_purchase_prob"]
    note = trained.bundle.metadata["first_purchase_note"]

    assert tags.loc[~registered, "first_purchase_prob"].isna().all()
    assert any(note in line for line in scored[0].notes)
    if trained.bundle.first_purchase is None:
        assert prob.isna().all() and note == trained.first_purchase.note and note
    else:
        assert prob.notna().all() and prob.between(0, 1).all()
        assert prob.std() > 0.01, "first_purchase_prob barely varies"
        assert trained.first_purchase.metrics["model"]["roc_auc"] > 0.6


@pytest.mark.slow
def test_the_shop_has_enough_sign_up_cohorts_to_learn_first_purchase(trained: TrainResult) -> None:
    # The synthetic shop is made to carry a first-purchase signal; if this changes, the test above
    # only checks the empty branch.
    assert trained.bundle.first_purchase is not None, trained.first_purchase.note
    assert trained.first_purchase.note.startswith("learned from")


@pytest.mark.slow
def test_order_based_columns_are_empty_for_registered_customers(tags: pd.DataFrame) -> None:
    registered = tags[tags["lifecycle_stage"] == "registered"]
    buyers = tags[tags["lifecycle_stage"] != "registered"]

    assert registered[ORDER_BASED].isna().all().all()
    assert (registered["frequency"] == 0).all() and (registered["monetary_total"] == 0).all()
    assert buyers[["churn_risk", "repurchase_prob", "ltv", "rfm_segment", "recency_days"]].notna().all().all()
    assert (buyers["frequency"] > 0).all()
    assert (registered["as_of"] == AS_OF.date()).all() and (registered["model_version"] == "test").all()


@pytest.mark.slow
def test_first_purchase_pending_marks_exactly_the_registered_who_signed_up_in_the_last_week(
    tags: pd.DataFrame, customers: pd.DataFrame
) -> None:
    signup = customers.set_index("customer_id")["signup_ts"]
    expected_days = (AS_OF - tags["customer_id"].map(signup)) / pd.Timedelta(days=1)
    pending = (tags["lifecycle_stage"] == "registered") & (tags["signup_days"] < 7)

    np.testing.assert_allclose(tags["signup_days"], expected_days.to_numpy(dtype=float), rtol=0, atol=1e-6)
    assert (tags["first_purchase_pending"] == pending).all()
    assert 0 < pending.sum() < (tags["lifecycle_stage"] == "registered").sum()
    flags = tags.set_index("customer_id")["first_purchase_pending"]
    assert flags[["00042", "12345678901234567890", "zz-no-signup"]].tolist() == [True, False, False]


@pytest.mark.slow
def test_every_customers_attributes_are_the_customers_tables_exactly(tags: pd.DataFrame,
                                                                     customers: pd.DataFrame) -> None:
    table = customers.set_index("customer_id").loc[tags["customer_id"], ATTRIBUTES]
    output = tags.set_index("customer_id")[ATTRIBUTES]

    for column in TEXT_ATTRIBUTES:
        assert output[column].tolist() == table[column].tolist(), column
    np.testing.assert_array_equal(output["age"].to_numpy(dtype=float), table["age"].to_numpy(dtype=float))
    assert output.loc["12345678901234567890", ["region", "acquisition_channel", "membership_level"]].tolist() == \
        ["  Grand Est ", "référence – ami", "金卡"]
    assert output.loc["00042", "region"] == "Île-de-France"


@pytest.mark.slow
def test_output_is_identical_with_one_or_three_partitions(
    shop: Path, customers_path: Path, trained: TrainResult, config: Config, tmp_path: Path
) -> None:
    _, one = _score(shop, customers_path, trained, config, tmp_path / "p1.parquet", partitions=1)
    result, three = _score(shop, customers_path, trained, config, tmp_path / "p3.parquet", partitions=3)

    pd.testing.assert_frame_equal(three, one, check_exact=True)
    assert (one["lifecycle_stage"] == "registered").sum() == result.registered


@pytest.mark.slow
def test_a_model_trained_with_attributes_needs_the_customers_table_to_score(
    shop: Path, trained: TrainResult, config: Config, tmp_path: Path
) -> None:
    out = tmp_path / "tags.parquet"
    with pytest.raises(ScoringError) as caught:
        _score(shop, None, trained, config, out)
    message = str(caught.value)

    assert "--customers" in message and "\n" not in message
    assert "region" in message or "membership_level" in message
    assert not out.exists()


# --- the command line ----------------------------------------------------------------------------------


def test_features_with_customers_writes_buyers_and_registered_and_says_so(shop: Path, customers_path: Path,
                                                                         customers: pd.DataFrame,
                                                                         tmp_path: Path) -> None:
    out = tmp_path / "features.parquet"
    done = CliRunner().invoke(app, ["features", "--orders", str(shop / "orders.parquet"), "--as-of",
                                    str(AS_OF.date()), "--customers", str(customers_path), "--out", str(out)])

    assert done.exit_code == 0, f"{done.output}\n{done.exception!r}"
    stdout = " ".join(done.stdout.split())  # however the console wrapped it
    rows = len(customers)
    assert f"Customers: read {rows:,} = used {rows:,} + quarantined 0" in stdout
    frame = pd.read_parquet(out)
    orders = pd.read_parquet(shop / "orders.parquet")
    registered = _expected_registered(orders, customers)
    assert set(frame["customer_id"]) == _buyers(orders) | registered
    waiting = frame[frame["customer_id"].isin(registered)]
    assert (waiting["frequency"] == 0).all()
    assert waiting[["recency_days", "monetary_total", "orders_30d"]].isna().all().all()
    assert frame.set_index("customer_id").loc["00042", "region"] == "Île-de-France"
    assert f"{len(registered):,} registered without an order" in stdout


def test_features_with_a_bad_customers_file_exits_2_with_one_paragraph(shop: Path, tmp_path: Path) -> None:
    bad = tmp_path / "customers.csv"
    bad.write_text("customer_id,signup_ts,age\n0000001,2023-01-01,abc\n0000002,2023-01-02,30\n")
    out = tmp_path / "features.parquet"
    done = CliRunner().invoke(app, ["features", "--orders", str(shop / "orders.parquet"), "--as-of",
                                    str(AS_OF.date()), "--customers", str(bad), "--out", str(out)])

    assert done.exit_code == 2, f"{done.output}\n{done.exception!r}"
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert str(bad) in lines[0] and "column 'age' has 1 row that are not numbers (row 1: 'abc')" in lines[0]
    assert "Traceback" not in done.output and not out.exists()


# --- reasons: true of the customer, in words ---------------------------------------------------------


def _phrases_of(tags: pd.DataFrame) -> pd.DataFrame:
    """One row per (customer, reason phrase) of the customers who were given reasons."""
    given = tags[tags["reasons"].notna() & (tags["reasons"] != "")]
    return given.assign(phrase=given["reasons"].str.split("; ")).explode("phrase")


@pytest.mark.slow
def test_reasons_about_an_attribute_name_the_customers_own_value(tags: pd.DataFrame) -> None:
    phrases = _phrases_of(tags)
    about_attributes = 0
    for name in ATTRIBUTES:
        label = name.replace("_", " ")
        said = phrases[phrases["phrase"].str.startswith(label) | phrases["phrase"].str.endswith(f"{label} on record")]
        about_attributes += len(said)
        for value, phrase in zip(said[name], said["phrase"]):
            if value is None or value != value:
                assert phrase == f"no {label} on record"
            elif name == "age":
                assert phrase == f"age {value:,.0f}" if float(value).is_integer() else phrase.startswith("age ")
            else:
                assert phrase == f"{label}: {str(value).strip()}"
    # The check above must have something to check: the churn explainer uses the attributes here.
    assert about_attributes > 0


@pytest.mark.slow
def test_reasons_are_words_without_raw_names_or_unknowns(tags: pd.DataFrame) -> None:
    phrases = _phrases_of(tags)["phrase"]

    assert len(phrases) > 0
    assert not phrases.str.contains("_").any(), phrases[phrases.str.contains("_")].unique()[:5]
    for word in ("unknown", "nan", "None", ".00"):
        assert not phrases.str.contains(word, regex=False).any(), (word, phrases[phrases.str.contains(word)].unique()[:5])


@pytest.mark.slow
def test_recency_reasons_state_the_customers_own_recency_and_order_count(tags: pd.DataFrame) -> None:
    phrases = _phrases_of(tags)
    recency = phrases[phrases["phrase"].str.startswith("no order for ")]

    assert len(recency) > 0
    said_days = recency["phrase"].str.extract(r"^no order for ([\d,]+) days")[0].str.replace(",", "").astype(float)
    np.testing.assert_array_equal(said_days.to_numpy(), recency["recency_days"].round().to_numpy(dtype=float))
    single = recency["phrase"].str.endswith("after a single order")
    assert (recency.loc[single, "frequency"] == 1).all()
