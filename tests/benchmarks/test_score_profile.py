"""The scoring benchmark's profile names real functions: a refactor that moves one must move its row too."""
from __future__ import annotations

import importlib

import pytest

from benchmarks.score import PHASES


@pytest.mark.parametrize(("label", "module", "qualname"), PHASES, ids=[p[0].strip() for p in PHASES])
def test_every_profile_phase_names_a_function_that_exists(label: str, module: str, qualname: str) -> None:
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    assert callable(target), label
