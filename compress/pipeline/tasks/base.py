"""The task interface and its registry (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compress.errors import RecipeError
from compress.recipe.tasks import TASK_RULES, TaskRules, recipe_task
from compress.registry import Registry

if TYPE_CHECKING:
    from compress.recipe.loader import Recipe
    from compress.report.records import Final, Flag, Metrics, StageRecord
    from compress.stages import RunContext, StageResult


class Task:
    """How one run measures its models; one instance per run.

    Args:
        recipe: the run's recipe (its `[runtime]` says how to time).
        unavailable: providers the recipe allows to be missing and that are.

    Example:
        >>> task = task_for(recipe, data)(recipe, {})  # doctest: +SKIP
        >>> onnx_path = task.deployable(result, stage_dir, seed=0, debug=False)  # doctest: +SKIP
    """

    name: ClassVar[str] = ""
    rules: ClassVar[TaskRules]

    def __init__(self, recipe: Recipe, unavailable: dict[str, str]):
        self.recipe, self.unavailable = recipe, unavailable

    def deployable(self, result: StageResult, stage_dir: Path, seed: int, debug: bool) -> Path:
        """The stage's deployed ONNX file (its own, or an export checked for parity)."""
        raise NotImplementedError

    def evaluate(self, result: StageResult, onnx_path: Path, stage_dir: Path,
                 ctx: RunContext, baseline: Metrics | None) -> Metrics:  # fmt: skip
        """The stage's metrics (`baseline`: the first stage's, None while measuring it)."""
        raise NotImplementedError

    def flags(self, metrics: Metrics, stage: str, previous: StageRecord | None,
              accepted: float | None) -> list[Flag]:  # fmt: skip
        """What no budget gates but a person should know (slower than its input...)."""
        return []

    def write_final(self, out_dir: Path, last: StageRecord, report: Any, signature) -> Final:
        """Copy the last good stage's model to final/ with its contract."""
        raise NotImplementedError


TASKS: Registry[type[Task]] = Registry("task")


def register_task(name: str, rules: TaskRules) -> Callable[[type[Task]], type[Task]]:
    """Class decorator: register a `Task` under `name`, its `rules` in the recipe layer."""

    def decorator(cls: type[Task]) -> type[Task]:
        TASKS.register(name)(cls)
        TASK_RULES.ensure(name, rules)
        cls.name, cls.rules = name, rules
        return cls

    return decorator


def task_for(recipe: Recipe, data: Any) -> type[Task]:
    """The task of a run: its model's (`ModelConfigBase.task`), which the data's
    (`DataBundle.task`) must match.

    Raises:
        RecipeError: the data is for another task (text windows for a classifier...).
    """
    name = recipe_task(recipe)
    data_task = getattr(data, "task", "classification")
    if data_task != name:
        raise RecipeError(
            f"model.architecture {recipe.model.architecture!r} is a {name} model and the "
            f"data (source {getattr(recipe.data, 'source', '?')!r}) is for {data_task}"
        )
    return TASKS.get(name)
