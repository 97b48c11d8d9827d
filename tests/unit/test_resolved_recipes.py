"""Every bundled recipe and the tests' recipes validate to the configs they did before
stages and quantization methods became registered plugins (tests/unit/recipe_cases.py).

Everything but a quantize stage resolves exactly as before. A quantize stage now
resolves to its method's config, which holds only the keys that method reads: each of
those must resolve to the same value as before, and each key it no longer holds must
be one the recipe never set (it was a default the method ignored), so no recipe loses
a setting it made.

Two later changes are allowed for, and only these: every training table (train,
distill, a prune stage's `finetune`, QAT's `qat`) gained `batch_norm` (BatchNorm
recalibration, on by default); and a `finetune` table that sets no `optimizer` now
resolves without one (it continues the model's last training, decided at run time).
"""

from __future__ import annotations

import json

import pytest

from compress.recipe.stages import method_name
from tests.unit.recipe_cases import SNAPSHOT, raw_cases, resolved

pytestmark = pytest.mark.unit

BEFORE = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
CASES = raw_cases()
SELECTORS = {"type", "method", "mode", "format", "budgets"}
ADDED = "batch_norm"  # a key every training table gained after the snapshot


def _without_later_changes(new: dict, table: dict) -> dict:
    """`new` (a resolved stage) less what the snapshot could not know of (above)."""
    new = {key: value for key, value in new.items() if key != ADDED}
    for nested in ("finetune", "qat"):
        if isinstance(new.get(nested), dict):
            inner = {key: value for key, value in new[nested].items() if key != ADDED}
            if nested == "finetune" and "optimizer" not in table.get(nested, {}):
                assert inner.pop("optimizer", None) is None  # continues the last training
            new[nested] = inner
    return new


def _without_inherited(old: dict, table: dict) -> dict:
    if isinstance(old.get("finetune"), dict) and "optimizer" not in table.get("finetune", {}):
        old = {**old, "finetune": {k: v for k, v in old["finetune"].items() if k != "optimizer"}}
    return old


def test_the_snapshot_covers_every_case():
    assert sorted(BEFORE) == sorted(CASES)
    assert sum(name.startswith("recipes/") for name in CASES) >= 6


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_recipe_resolves_as_before(name):
    before, raw = BEFORE[name], CASES[name]

    after = resolved(raw)

    assert {k: v for k, v in after.items() if k != "stages"} == {
        k: v for k, v in before.items() if k != "stages"
    }
    assert len(after["stages"]) == len(before["stages"])
    for old, new, table in zip(before["stages"], after["stages"], raw["stages"], strict=True):
        new, old = _without_later_changes(new, table), _without_inherited(old, table)
        if old["type"] != "quantize":
            assert new == old
            continue
        assert new == {key: old[key] for key in new}, f"{name}: a key changed its value"
        dropped = set(old) - set(new)
        assert not dropped & set(table), f"{name}: the recipe set {dropped & set(table)}"
        assert SELECTORS <= set(new)
        assert method_name(new) == method_name(table)


def test_the_cases_cover_every_builtin_method():
    methods = {
        method_name(stage)
        for raw in CASES.values()
        for stage in raw["stages"]
        if stage["type"] == "quantize"
    }

    assert methods == {
        "static", "fallback", "dynamic", "qat", "int4", "kmeans", "pow2", "auto", "placement",
        "weight-only",  # recipes/smollm2-quantize.toml
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_resolved_recipe_validates_again_to_itself(name):
    # recipe.resolved.toml, a tune trial and a spawned worker revalidate the dump
    import tomllib

    from compress.recipe.loader import validate_recipe

    recipe = validate_recipe(CASES[name])

    assert validate_recipe(tomllib.loads(recipe.to_toml())) == recipe
