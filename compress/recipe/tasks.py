"""What a task allows in a recipe: the recipe-layer half of a task plugin.

A task is what a model's outputs are and so how a run measures them: `classification`
(class logits: accuracy, agreement, latency per batch) or `causal-lm` (next-token
logits: perplexity, agreement, decode speed with a KV cache). The model's family names
it (`ModelConfigBase.task`); the measuring half lives in `compress/pipeline/tasks/`,
registered with `@register_task`, which puts its `TaskRules` here. The loader reads
only these rules: budgets a task cannot measure are refused at load, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from compress.registry import Registry


@dataclass(frozen=True)
class TaskRules:
    """The recipe rules of one task.

    Attributes:
        name: the task's name (`ModelConfigBase.task`).
        unmeasured_budgets: budget keys this task never measures -> why (the message
            the loader prints after the key path).
        tunable: whether `compress tune` can score its trials (they score validation
            accuracy or agreement of a classifier's file).
        refused_stages: stage types this task's models cannot go through -> why (and
            what to use instead).
    """

    name: str
    unmeasured_budgets: dict[str, str] = field(default_factory=dict)
    tunable: bool = True
    refused_stages: dict[str, str] = field(default_factory=dict)


_LM_ONLY = "reads a language model's {what}, which a classification model does not have"
_NO_ACCURACY = (
    "reads accuracy, which a language model (task causal-lm) does not have: gate it with "
    "perplexity_increase_max and agreement_min"
)

TASK_RULES: Registry[TaskRules] = Registry("task")
TASK_RULES.register("classification")(
    TaskRules(
        "classification",
        {
            "perplexity_increase_max": _LM_ONLY.format(what="perplexity"),
            "decode_tokens_per_s_min": _LM_ONLY.format(what="decode speed"),
        },
        refused_stages={
            "prune-decoder": "prunes a decoder language model (model.architecture "
            "'hf-causal-lm'); this model is a classifier: use type = 'prune'",
        },
    )
)
TASK_RULES.register("causal-lm")(
    TaskRules(
        "causal-lm",
        {"accuracy_min": _NO_ACCURACY, "accuracy_drop_max": _NO_ACCURACY},
        tunable=False,
        refused_stages={
            # torch-pruning's dependency graph would cut each layer differently (and query
            # heads apart from their KV group): a model its config no longer describes
            "prune": "prunes a classifier's channels; a decoder language model keeps every "
            "layer the same shape and its query heads with their KV group: use type = "
            "'prune-decoder' (layers, KV groups, FFN channels, then token distillation)",
        },
    )
)


def recipe_task(recipe: Any) -> str:
    """The task of a recipe's model (an ONNX file's model: classification)."""
    return getattr(recipe.model, "task", "classification")


def task_problems(recipe: Any) -> list[str]:
    """Budgets the recipe's task cannot measure, each naming its key path, stages its
    models cannot go through, and a `[tune]` table its task's trials cannot score."""
    rules = TASK_RULES.get(recipe_task(recipe))
    tune = (
        [f"[tune]: compress tune does not score {rules.name} models yet (its trials read a "
         "classifier's validation accuracy); run the recipe without [tune]"]
        if getattr(recipe, "tune", None) is not None and not rules.tunable
        else []
    )  # fmt: skip
    stages = [
        f"stages[{index}] (type {stage.type!r}) {rules.refused_stages[stage.type]}"
        for index, stage in enumerate(recipe.stages)
        if stage.type in rules.refused_stages
    ]
    tables = [("budgets", recipe.budgets)] + [
        (f"stages[{index}].budgets", stage.budgets) for index, stage in enumerate(recipe.stages)
    ]
    return (
        tune
        + stages
        + [
            f"{where}.{key} {why}"
            for where, budgets in tables
            for key, why in rules.unmeasured_budgets.items()
            if getattr(budgets, key, None) is not None
        ]
    )
