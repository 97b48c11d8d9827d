"""Tasks: the run's measurement by its model's task, and the budgets each task refuses
at load (naming the key); the language-model budgets read the causal-lm figures."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from compress.budgets.checks import check_budgets
from compress.errors import RecipeError
from compress.pipeline.tasks import TASKS, task_for
from compress.recipe.loader import validate_recipe
from compress.recipe.schema import Budgets
from compress.recipe.tasks import TASK_RULES

pytestmark = pytest.mark.unit

LM = {
    "name": "lm",
    "data": {"source": "text-corpus", "files": ["corpus/*.txt"]},
    "model": {"architecture": "hf-causal-lm", "path": "llama"},
    "stages": [{"type": "export"}],
}


def test_every_task_has_its_rules_and_its_measurement():
    assert TASKS.names() == TASK_RULES.names() == ["causal-lm", "classification"]


def test_a_language_model_starts_from_its_files_without_a_training_stage():
    recipe = validate_recipe(LM)
    from compress.pipeline.setup import stage_plan

    assert [name for _, name in stage_plan(recipe)] == ["input", "export"]
    assert stage_plan(recipe)[0][0].pretrained == "llama"


@pytest.mark.parametrize("where", ["budgets", "stages"])
def test_accuracy_budgets_on_a_language_model_are_refused_naming_the_key(where):
    raw = {**LM, "budgets": {"accuracy_drop_max": 0.01}}
    if where == "stages":
        raw = {**LM, "stages": [{"type": "export", "budgets": {"accuracy_min": 0.5}}]}
    with pytest.raises(RecipeError) as error:
        validate_recipe(raw, "lm.toml")
    key = "budgets.accuracy_drop_max" if where == "budgets" else "stages[0].budgets.accuracy_min"
    assert f"lm.toml: stages: {key} reads accuracy" in str(error.value)


def test_language_model_budgets_on_a_classifier_are_refused():
    raw = {"name": "c", "budgets": {"perplexity_increase_max": 0.01},
           "stages": [{"type": "train", "epochs": 1}]}  # fmt: skip
    with pytest.raises(RecipeError, match="budgets.perplexity_increase_max reads a language"):
        validate_recipe(raw, "c.toml")


def test_data_for_another_task_is_a_recipe_error():
    recipe = validate_recipe(LM)
    with pytest.raises(RecipeError, match="is a causal-lm model and the data"):
        task_for(recipe, SimpleNamespace(task="classification"))
    assert task_for(recipe, SimpleNamespace(task="causal-lm")) is TASKS.get("causal-lm")


def test_language_model_budgets_read_perplexity_increase_and_decode_speed():
    budgets = Budgets(perplexity_increase_max=0.01, decode_tokens_per_s_min=100, speedup_min=2.5)
    metrics = {"perplexity": 41.2, "perplexity_increase": 0.0066, "decode_tokens_per_s": 150.0,
               "speedup": {"median": 2.4, "min": 2.3, "max": 2.6},
               "teacher_decode_tokens_per_s_interleaved": 62.0}  # fmt: skip
    checks = {c.metric: c for c in check_budgets(budgets, metrics, {"perplexity": 40.93})}
    assert checks["perplexity_increase"].passed
    assert "baseline perplexity 40.93 -> 41.2" in checks["perplexity_increase"].message
    assert checks["decode_tokens_per_s"].passed
    assert "150.0 tokens/s" in checks["decode_tokens_per_s"].message
    assert not checks["speedup"].passed
    assert "baseline 62.0 decode tokens/s" in checks["speedup"].message


def test_a_tune_table_on_a_language_model_is_refused():
    space = {"stages[0].parity_atol": {"type": "float", "low": 1e-5, "high": 1e-4}}
    raw = {**LM, "tune": {"stage": 0, "trials": 2, "space": space}}
    with pytest.raises(RecipeError, match=r"\[tune\]: compress tune does not score causal-lm"):
        validate_recipe(raw, "lm.toml")
