"""`distill`: train a student against the current model as a frozen teacher (Hinton KD)."""

from __future__ import annotations

from compress.models import load_weights_, new_model
from compress.models.family import family_of, resolve_model_config
from compress.models.stats import count_params
from compress.recipe.stages import DistillStageConfig
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage
from compress.training import evaluate, fit


@register_stage("distill")
class DistillStage(Stage):
    """Build `student`, train it on alpha * T^2 * KL + (1 - alpha) * CE against the teacher.

    With no augmentation the teacher's logits are computed once for the whole
    training split instead of every batch of every epoch (unless `feature_layers`
    adds hidden-state distillation: the teacher then runs on every batch).
    """

    config_class = DistillStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        teacher = ctx.model.eval()
        # the student's family completes its config, from the teacher's where it keeps
        # part of the teacher (e.g. some of its layers), and says how the student starts
        student_config = resolve_model_config(self.config.student, ctx.spec.config)
        student, spec = new_model(
            student_config, ctx.spec.input_shape, ctx.spec.num_classes, ctx.spec.inputs
        )
        initialised = family_of(student_config).init_student_(student, student_config, teacher)
        if student_config.weights:
            load_weights_(
                student,
                student_config.weights,
                student_config.weights_prefix,
                where=f"stages.{self.name}.student.weights",
            )
        result = fit(
            student,
            ctx.data,
            self.config,
            seed=ctx.seed,
            augment=ctx.recipe.data.augment,
            teacher=teacher,
            distill=self.config,
            on_epoch_end=ctx.on_epoch_end,
            strategy=ctx.strategy,
            checkpoint=ctx.epoch_checkpoint(),
        )
        details = {
            "training": result.summary(),
            "distillation": {
                "temperature": self.config.temperature,
                "alpha": self.config.alpha,
                "teacher_params": count_params(teacher),
                "student_params": count_params(student),
                "teacher_val_accuracy": evaluate(teacher, ctx.data.val)["accuracy"],
                "student_initialised_from": initialised,
                "feature_layers": self.config.feature_layers,
            },
            "bn_recalibration": [] if result.batch_norm is None else [result.batch_norm],
        }
        return StageResult(student, spec, details=details, warnings=result.warnings)
