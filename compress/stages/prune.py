"""`prune`: structured (channels removed) or unstructured (weights zeroed), in steps.

After each step the model is fine-tuned (optionally distilling from the stage's
unpruned input model) and validated, and the step is recorded, so the report
shows the whole ratio / size / accuracy path.
"""

from __future__ import annotations

import copy

import torch

from compress.models import find_classifier
from compress.models.stats import count_macs, count_nonzero_params, count_params
from compress.pruning.schedule import pruning_schedule
from compress.pruning.structured import StructuredPruner, resolve_modules
from compress.pruning.unstructured import (
    magnitude_prune_,
    make_permanent_,
    overall_sparsity,
    sparsity_by_layer,
)
from compress.recipe.stages import PruneStageConfig
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage
from compress.training import evaluate, fit


@register_stage("prune")
class PruneStage(Stage):
    """Prune the current model to `ratio` in `steps` steps, fine-tuning after each."""

    config_class = PruneStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        config = self.config
        model = ctx.model
        unpruned = copy.deepcopy(model).eval() if config.finetune.distill else None
        ignored = resolve_modules(model, config.ignored_layers)
        classifier = find_classifier(model, ctx.spec.num_classes)
        if classifier is not None:  # its outputs are the classes: never pruned
            ignored.append(classifier)

        steps_log = [self._step_record(ctx, model, 0, 0.0, None)]
        if config.method == "structured":
            pruner = StructuredPruner(
                model,
                torch.randn(1, *ctx.spec.input_shape),
                config.ratio,
                config.steps,
                config.schedule,
                config.importance,
                ignored,
                config.global_pruning,
                config.round_to,
            )
            for step in range(1, config.steps + 1):
                ratio = pruner.step()
                fit_summary = self._finetune(ctx, model, unpruned, step)
                steps_log.append(self._step_record(ctx, model, step, ratio, fit_summary))
        else:
            previous = 0.0
            for step, ratio in enumerate(
                pruning_schedule(config.ratio, config.steps, config.schedule), 1
            ):
                magnitude_prune_(model, ratio, previous, ignored, config.global_pruning)
                previous = ratio
                fit_summary = self._finetune(ctx, model, unpruned, step)
                record = self._step_record(ctx, model, step, ratio, fit_summary)
                record["sparsity"] = overall_sparsity(model, ignored)
                steps_log.append(record)
            make_permanent_(model)

        details = {
            "method": config.method,
            "ratio_meaning": (
                "share of output channels removed from each prunable layer"
                if config.method == "structured"
                else "share of prunable weights set to zero"
            ),
            "steps": steps_log,
        }
        if config.method == "unstructured":
            details["sparsity_by_layer"] = sparsity_by_layer(model)
            details["nonzero_params"] = count_nonzero_params(model)
            details["note"] = (
                "zeroed weights are stored densely and run on dense kernels: expect no "
                "speed-up and no raw-size gain on ONNX Runtime; the gain is compressibility"
            )
        return StageResult(model, ctx.spec, details=details)

    def _finetune(self, ctx: RunContext, model, unpruned, step: int) -> dict | None:
        finetune = self.config.finetune
        if finetune.epochs == 0:
            return None
        result = fit(
            model,
            ctx.data,
            finetune,
            seed=ctx.seed + step,
            augment=ctx.recipe.data.augment,
            teacher=unpruned,
            distill=finetune if unpruned is not None else None,
            on_epoch_end=ctx.on_epoch_end,
        )
        summary = result.summary()
        summary.pop("history")
        return summary

    @staticmethod
    def _step_record(ctx: RunContext, model, step: int, ratio: float, fit_summary) -> dict:
        return {
            "step": step,
            "ratio": ratio,
            "params": count_params(model),
            "macs": count_macs(model, ctx.spec.input_shape),
            "val_accuracy": evaluate(model, ctx.data.val)["accuracy"],
            "finetune": fit_summary,
        }
