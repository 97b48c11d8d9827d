"""`classification`: class logits measured as every model was before tasks existed
(accuracy, agreement and latency per batch on one ONNX file: `pipeline.measure`)."""

from __future__ import annotations

from compress.pipeline.tasks.base import Task, register_task
from compress.recipe.tasks import TASK_RULES


@register_task("classification", TASK_RULES.get("classification"))
class ClassificationTask(Task):
    """The measurement, flags and final/ of `pipeline.measure` and `pipeline.final`."""

    def __init__(self, recipe, unavailable):
        from compress.pipeline.measure import Measurement

        super().__init__(recipe, unavailable)
        self.measurement = Measurement(recipe, unavailable)

    def deployable(self, result, stage_dir, seed, debug):
        from compress.pipeline.measure import deployable_onnx

        return deployable_onnx(result, stage_dir, seed, debug)

    def evaluate(self, result, onnx_path, stage_dir, ctx, baseline):
        return self.measurement.evaluate(result, onnx_path, stage_dir, ctx, baseline)

    def flags(self, metrics, stage, previous, accepted):
        from compress.pipeline.measure import slowdown_flag

        flag = slowdown_flag(metrics, stage, previous.name, accepted) if previous else None
        return [flag] if flag else []

    def write_final(self, out_dir, last, report, signature):
        from compress.pipeline.final import write_final

        return write_final(out_dir, last, report, signature)
