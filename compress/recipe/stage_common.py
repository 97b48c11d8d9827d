"""What several stage configs share: the stage base, distillation, fine-tuning.

Kept apart from `stages.py` so each stage's config module (`prune_config.py`)
can build on them; `compress.recipe.stages` re-exports every name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.recipe.schema import Budgets, StrictModel, TrainingConfig


class _StageBase(StrictModel):
    name: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Stage name, used for its folder (default: its type, numbered if repeated).",
    )
    budgets: Budgets = Field(default_factory=Budgets, description="This stage's budgets.")


class DistillConfig(StrictModel):
    """Hinton distillation: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE."""

    temperature: float = Field(4.0, gt=0, description="Softmax temperature T.")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the soft-target term.")


class FinetuneConfig(TrainingConfig, DistillConfig):
    """Fine-tuning after each pruning step; `distill = true` adds the distillation loss."""

    epochs: int = Field(1, ge=0, description="Fine-tune epochs after each step (0: none).")
    distill: bool = Field(False, description="Distil from a teacher while fine-tuning.")
    distill_from: Literal["input", "teacher"] = Field(
        "input",
        description="The distillation teacher: the stage's unpruned input model, or the "
        "run's teacher (the first stage's model).",
    )
