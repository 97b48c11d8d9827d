"""Every bundled recipe and the tests' recipes validate to the configs they did before
stages and quantization methods became registered plugins (tests/unit/recipe_cases.py)."""

from __future__ import annotations

import json

import pytest

from tests.unit.recipe_cases import SNAPSHOT, raw_cases, resolved

pytestmark = pytest.mark.unit

BEFORE = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
CASES = raw_cases()


def test_the_snapshot_covers_every_case():
    assert sorted(BEFORE) == sorted(CASES)
    assert sum(name.startswith("recipes/") for name in CASES) >= 6


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_recipe_resolves_as_before(name):
    assert resolved(CASES[name]) == BEFORE[name]
