"""Tasks: how a run measures a model, by what its outputs are (one module per task).

The runner asks the run's task (`task_for`) for the stage's deployable file, its
metrics, the flags it carries and `final/`; nothing else in the pipeline names a task.
A new task is one module with a `Task` subclass registered by `@register_task("name",
rules)` (its `TaskRules`, the recipe-layer half, go into `compress.recipe.tasks`).
"""

from compress.pipeline.tasks import causal_lm, classification  # noqa: F401,E402 (register)
from compress.pipeline.tasks.base import TASKS, Task, register_task, task_for

__all__ = ["TASKS", "Task", "register_task", "task_for"]
