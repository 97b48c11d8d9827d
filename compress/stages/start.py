"""`input`: the starting model of a recipe that brings trained weights (`[model] weights`).

It changes nothing; it is run like any stage so the runner measures the starting
model on ONNX Runtime first, and that measurement becomes the baseline of every
accuracy drop, speed-up and size ratio after it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.recipe.schema import Budgets, StrictModel
from compress.stages.base import RunContext, Stage, StageResult


class StartConfig(StrictModel):
    """The starting point: which weights the recipe's model was loaded with."""

    type: Literal["input"] = "input"
    name: str = Field("input", description="Its folder in the run directory.")
    weights: str = Field(description="The `[model] weights` file the model was loaded from.")
    budgets: Budgets = Field(default_factory=Budgets, description="None: it is the baseline.")


class StartStage(Stage):
    """Pass the loaded model through, recording where its weights came from.

    Not in the stage registry: a recipe cannot name it, the plan puts it first.
    """

    config_class = StartConfig

    def _run(self, ctx: RunContext) -> StageResult:
        return StageResult(ctx.model, ctx.spec, details={"weights": self.config.weights})
