"""Issue 17, items 2 and 4: expressions from a config compute from the row's own columns and nothing
else. Each attack is tried as an orders mapping, a customers attribute and a scenario tag."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from escape_support import AS_OF, assert_nothing_leaked, one_paragraph_error, run, write_config

from configs.schema import ConfigError, load_config
from features.expressions import ExpressionRefused, check_expression
from serving.scoring import _apply_scenarios, check_scenarios

# Each attack: the expression (with {secret}, {folder}, {leak}) and words the refusal must hold.
ATTACKS = {
    "sniff_csv": ("customer_id || (SELECT Columns FROM sniff_csv('{secret}', skip=1, header=true))::VARCHAR",
                  "subquery"),
    "read_text": ("customer_id || (SELECT content FROM read_text('{secret}'))", "subquery"),
    "read_csv": ("customer_id || (SELECT string_agg(name, ',') FROM read_csv('{secret}'))", "subquery"),
    "read_text_call": ("read_text('{secret}')", "read_text()"),
    "glob": ("customer_id || (SELECT string_agg(file, ',') FROM glob('{folder}/*'))", "subquery"),
    "current_setting": ("customer_id || current_setting('temp_directory')", "current_setting()"),
    "pragma_table_info": ("customer_id || (SELECT string_agg(name, ',') FROM pragma_table_info('_lifetag_orders_raw'))",
                          "subquery"),
    "getvariable": ("customer_id || getvariable('secret')", "getvariable()"),
    "subquery": ("(SELECT customer_id)", "subquery"),
    "statements": ("customer_id; COPY (SELECT content FROM read_text('{secret}')) TO '{leak}'", "';'"),
    "closing_parenthesis": ("customer_id) AS customer_id FROM _lifetag_orders_raw; COPY (SELECT content FROM "
                            "read_text('{secret}')) TO '{leak}'; SELECT (1", "';'"),
}
RULE = "may only compute from the row's own columns"


def _expression(attack: str, secret: Path, leak: Path) -> str:
    return ATTACKS[attack][0].format(secret=secret, folder=secret.parent, leak=leak)


def _yaml_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@pytest.mark.parametrize("attack", ATTACKS)
def test_an_orders_mapping_that_reaches_outside_the_row_is_refused(
    attack: str, tmp_path: Path, secret: Path, orders_csv: Path
) -> None:
    leak = tmp_path / "leak.csv"
    config = write_config(tmp_path, f"orders:\n  columns:\n    customer_id: {_yaml_quoted(_expression(attack, secret, leak))}\n")
    out = tmp_path / "features.csv"

    done = run("features", "--orders", orders_csv, "--as-of", AS_OF, "--out", out, "--config", config,
               "--quarantine", tmp_path / "bad.csv")

    message = one_paragraph_error(done)
    assert message.startswith("error: orders.columns.customer_id: ") and RULE in message
    assert ATTACKS[attack][1] in message
    assert not leak.exists() and not out.exists() and not (tmp_path / "bad.csv").exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_customers_attribute_that_reaches_outside_the_row_is_refused(
    attack: str, tmp_path: Path, secret: Path, orders_csv: Path, customers_csv: Path
) -> None:
    leak = tmp_path / "leak.csv"
    expression = _yaml_quoted(_expression(attack, secret, leak))
    config = write_config(tmp_path, (
        "customers:\n  attributes:\n"
        f"    leak:\n      type: categorical\n      column: {expression}\n"
    ))
    out = tmp_path / "features.csv"

    done = run("features", "--orders", orders_csv, "--customers", customers_csv, "--as-of", AS_OF, "--out", out,
               "--config", config)

    message = one_paragraph_error(done)
    assert message.startswith("error: customers.attributes.leak.column: ") and RULE in message
    assert not leak.exists() and not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


SCORED = {"customer_id": "VARCHAR", "recency_days": "DOUBLE", "churn_tier": "VARCHAR", "lifecycle_stage": "VARCHAR"}


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_scenario_that_reaches_outside_the_row_is_refused_before_anything_runs(
    attack: str, tmp_path: Path, secret: Path
) -> None:
    leak = tmp_path / "leak.csv"
    expression = f"recency_days > 0 AND ({_expression(attack, secret, leak)}) IS NOT NULL"
    if attack in ("statements", "closing_parenthesis"):
        expression = _expression(attack, secret, leak).replace("customer_id", "recency_days > 0", 1)

    with pytest.raises(ConfigError) as caught:
        check_scenarios({"dormant_90d": "recency_days >= 90", "sneaky": expression}, SCORED)
    message = str(caught.value)
    assert message.startswith("scoring.scenarios.sneaky: ") and RULE in message and "\n" not in message
    assert not leak.exists()
    assert_nothing_leaked(tmp_path, secret, message)

    # Nor does the per-batch evaluation run an unchecked expression.
    scored = pd.DataFrame({"customer_id": ["a"], "recency_days": [12.0], "churn_tier": ["low"],
                           "lifecycle_stage": ["active"]})
    with pytest.raises(ConfigError, match="scoring.scenarios.sneaky"):
        _apply_scenarios(scored, {"sneaky": expression})
    assert not leak.exists()


def test_a_scenario_with_statements_is_refused_at_score_start_up_with_exit_2(
    tmp_path: Path, secret: Path, security_shop: Path, security_bundle: Path
) -> None:
    leak = tmp_path / "leak.csv"
    expression = f"recency_days > 90; COPY (SELECT content FROM read_text('{secret}')) TO '{leak}'"
    config = write_config(tmp_path, f"scoring:\n  scenarios:\n    sneaky: {_yaml_quoted(expression)}\n")
    out = tmp_path / "tags.parquet"

    done = run("score", "--orders", security_shop / "orders.parquet", "--as-of", "2025-01-01", "--out", out,
               "--model", security_bundle, "--config", config)

    message = one_paragraph_error(done)
    assert message.startswith("error: scoring.scenarios.sneaky: ") and "';'" in message and RULE in message
    assert not leak.exists() and not out.exists()
    assert_nothing_leaked(tmp_path, secret, done.output)


@pytest.mark.parametrize("expression, says", [
    ("current_date", "'current_date', which is not one of the row's columns"),
    ("now()", "now()"),
    ("random() > 0.5", "random()"),
    ("sum(amount)", "sum()"),
    ("sum(amount) OVER ()", "window function"),
    ("main.abs(amount)", "abs()"),
    ("amount IN (SELECT 1)", "subquery"),
    ("amount = ANY([1])", "subquery"),
    ("COLUMNS(*)", "*"),
    ("$1", "parameter"),
    ("amount) FROM _lifetag_row --", "not one expression"),
    ("list_transform([amount], x -> x + 1)", "list_transform()"),
])
def test_the_checker_refuses_what_is_not_a_pure_computation_on_the_row(expression: str, says: str) -> None:
    with pytest.raises(ExpressionRefused) as caught:
        check_expression(expression, ["amount", "customer_id"])
    assert says in str(caught.value) and RULE in str(caught.value)


def test_a_semicolon_inside_a_string_is_just_text() -> None:
    check_expression("customer_id || ';' || 'x; y'", ["customer_id"])


def test_a_scenario_statement_is_never_executed_even_when_it_cannot_write(tmp_path: Path) -> None:
    # Before the fix the check ran `SELECT (<expr>) FROM scored LIMIT 0`, so the statement after ';'
    # ran too (a COPY was only stopped by the lock). Now it is refused unparsed-as-SQL-to-run.
    with pytest.raises(ConfigError, match="';'"):
        check_scenarios({"t": "recency_days > 0; CREATE TABLE pwned AS SELECT 1"}, SCORED)


def test_legitimate_expressions_still_work_end_to_end(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    example = load_config(repo / "docs" / "examples" / "online_retail.yaml")
    assert "Quantity * Price" in example.orders.columns.amount and "LIKE 'C%'" in example.orders.columns.status
    config = write_config(tmp_path, (repo / "docs" / "examples" / "online_retail.yaml").read_text() + (
        "customers:\n  attributes: {}\n"
    ))
    out = tmp_path / "features.csv"

    done = run("features", "--orders", repo / "docs" / "examples" / "online_retail.csv", "--as-of", "2011-12-10",
               "--out", out, "--config", config, "--quarantine", tmp_path / "bad.csv")

    assert done.exit_code == 0, done.output
    assert len(pd.read_csv(out)) > 0


@pytest.mark.parametrize("expression", [
    "Quantity * Price",
    "try_strptime(InvoiceDate, '%d/%m/%Y %H:%M')",
    "strptime(InvoiceDate, '%d/%m/%Y %H:%M') + INTERVAL 1 HOUR",
    "CASE WHEN Invoice LIKE 'C%' THEN 'cancelled' ELSE 'completed' END",
    "coalesce(nullif(trim(\"Customer ID\"), ''), 'guest')",
    "round(TRY_CAST(Price AS DOUBLE), 2) BETWEEN 0 AND 100 AND Country IN ('France', 'Germany')",
    "date_diff('day', strptime(InvoiceDate, '%d/%m/%Y %H:%M'), DATE '2012-01-01')",
    "regexp_replace(lower(StockCode), '[^a-z0-9]', '') || '-' || upper(left(Country, 2))",
    "greatest(Quantity, 0) * least(Price, 1000) / 2",
    "epoch(strptime(InvoiceDate, '%d/%m/%Y %H:%M'))",
])
def test_the_checker_accepts_plain_computations(expression: str) -> None:
    check_expression(expression, ["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"])


def test_the_default_scenarios_pass_the_check() -> None:
    scenarios = load_config().scoring.scenarios
    columns = {"repeat_orders": "BIGINT", "overdue_ratio": "DOUBLE", "churn_risk": "DOUBLE", "lifecycle_stage": "VARCHAR",
               "recency_days": "DOUBLE", "categories_due": "BIGINT", "promo_orders": "BIGINT",
               "orders_since_promo": "BIGINT", "signup_days": "DOUBLE"}
    check_scenarios(scenarios, columns)
    assert len(scenarios) >= 6
