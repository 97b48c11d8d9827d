"""`train`: fit the current model on the training split (the teacher, when first)."""

from __future__ import annotations

from compress.recipe.stages import TrainStageConfig
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage
from compress.training import fit


@register_stage("train")
class TrainStage(Stage):
    """Train with the recipe's optimizer, schedule and early stopping; keep the best epoch."""

    config_class = TrainStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        result = fit(
            ctx.model,
            ctx.data,
            self.config,
            seed=ctx.seed,
            augment=ctx.recipe.data.augment,
            on_epoch_end=ctx.on_epoch_end,
            strategy=ctx.strategy,
            checkpoint=ctx.epoch_checkpoint(),
        )
        details = {"training": result.summary(), "bn_recalibration": _recalibrations(result)}
        return StageResult(ctx.model, ctx.spec, details=details, warnings=result.warnings)


def _recalibrations(result) -> list[dict]:
    """The fit's closing BatchNorm recalibration, as the report lists it per stage."""
    return [] if result.batch_norm is None else [result.batch_norm]
