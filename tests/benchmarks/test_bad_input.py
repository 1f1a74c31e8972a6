"""The bad-input benchmark: its cases run through the real CLI and come out as table rows."""
from __future__ import annotations

import re

from benchmarks.bad_input import CASES, Workspace, run_case, table, table_row

ROW = re.compile(r"^\| .+ \| `lifetag .+` \| -?\d+ \| .* \| (\d[\d,]* / \d[\d,]*)? \| (yes|no) \| (yes|NO) \| (YES|no) \|$")


def _case(name):
    return next(c for c in CASES if c.name == name)


def test_bad_input_cases_become_table_rows(tmp_path):
    outcomes = []
    for i, name in enumerate(["non-numeric amount, --quarantine", "missing file"]):
        folder = tmp_path / f"case-{i}"
        folder.mkdir()
        outcomes.append(run_case(_case(name), Workspace(folder)))
    quarantined, missing = outcomes
    assert quarantined.exit_code == 0 and quarantined.rows == "3 / 1" and quarantined.intact and not quarantined.escaped
    assert missing.exit_code == 2 and "no such file" in missing.message and not missing.traceback
    for outcome in outcomes:
        assert ROW.match(table_row(outcome)), table_row(outcome)
    assert table(outcomes).endswith("2 cases: 0 escapes, 0 destroyed inputs, 0 tracebacks.")
