"""`input`: the starting model of a recipe that brings one: trained weights
(`[model] weights`), an ONNX file (`[model] onnx`), or a family's pretrained files that
hold a whole model (a language model's folder or GGUF file: `pretrained`).

It changes nothing; it is run like any stage so the runner measures the starting
model on ONNX Runtime first, and that measurement becomes the baseline of every
accuracy drop, agreement, speed-up and size ratio after it. An ONNX file is copied
into the stage folder, so the run folder holds what it measured even if the user's
file changes later.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compress.artifacts import atomic_path, sha256_file
from compress.models.onnx_file import read_onnx
from compress.recipe.schema import Budgets, StrictModel
from compress.stages.base import RunContext, Stage, StageResult


class StartConfig(StrictModel):
    """The starting point: the weights the recipe's model was loaded with, or its ONNX file."""

    type: Literal["input"] = "input"
    name: str = Field("input", description="Its folder in the run directory.")
    weights: str | None = Field(None, description="The `[model] weights` file loaded.")
    onnx: str | None = Field(None, description="The `[model] onnx` file, copied as is.")
    pretrained: str | None = Field(
        None, description="The family's pretrained files the model was loaded from."
    )
    budgets: Budgets = Field(default_factory=Budgets, description="None: it is the baseline.")

    @model_validator(mode="after")
    def _one_source(self) -> StartConfig:
        sources = [self.weights, self.onnx, self.pretrained]
        if sum(source is not None for source in sources) != 1:
            raise ValueError(
                "the starting point is weights, an ONNX file or pretrained files, exactly one"
            )
        return self


class StartStage(Stage):
    """Pass the loaded model through, recording where it came from.

    Not in the stage registry: a recipe cannot name it, the plan puts it first.
    """

    config_class = StartConfig

    def _run(self, ctx: RunContext) -> StageResult:
        if self.config.weights is not None:
            return StageResult(ctx.model, ctx.spec, details={"weights": self.config.weights})
        if self.config.pretrained is not None:
            details = {"pretrained": self.config.pretrained}
            return StageResult(ctx.model, ctx.spec, details=details)
        import onnx  # not at import time: `compress --help` need not load onnx

        target = ctx.workdir / "model.onnx"
        model = read_onnx(self.config.onnx)  # external data, if any, is embedded below
        with atomic_path(target) as tmp:
            onnx.save(model, str(tmp))
        details = {"onnx": self.config.onnx, "onnx_sha256": sha256_file(self.config.onnx)}
        return StageResult(None, ctx.spec, onnx_path=target, details=details)
