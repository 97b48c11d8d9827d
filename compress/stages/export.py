"""`export`: write the deployable ONNX model and prove it behaves like the torch model."""

from __future__ import annotations

import numpy as np
import torch

from compress.artifacts import atomic_write_bytes
from compress.errors import StageError
from compress.recipe.stages import ExportStageConfig
from compress.runtime.evaluate import onnx_logits, onnx_predictions
from compress.runtime.onnx_export import check_parity, export_onnx, shape_label
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.export_lm import export_lm
from compress.stages.registry import register_stage
from compress.training.batchnorm import recalibrate_checked_
from compress.training.inference import split_logits

# the export of a task whose deployable is not one classifier file, by task name
_BY_TASK = {"causal-lm": export_lm}


@register_stage("export")
class ExportStage(Stage):
    """Float models: export with a dynamic batch axis and check logits at two batch sizes.

    An int8 model from `quantize` cannot match float logits exactly, so it is
    checked instead to run at every parity batch size and to agree with the
    float model's predictions on the validation split at least `agreement_min`.
    """

    config_class = ExportStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        by_task = _BY_TASK.get(getattr(ctx.data, "task", "classification"))
        if by_task is not None:  # another task's deployable (a language model's folder)
            return by_task(self.config, ctx)
        target = ctx.workdir / "model.onnx"
        if ctx.onnx_path is None:
            signature = ctx.spec.signature
            recalibrated = self._recalibrate(ctx)
            export_onnx(ctx.model, signature, target, self.config.opset, ctx.debug)
            parity = check_parity(
                ctx.model,
                target,
                signature,
                self.config.parity_batch_sizes,
                self.config.parity_atol,
                self.config.parity_rtol,
                seed=ctx.seed,
            )
            details = {"parity": parity, "bn_recalibration": recalibrated}
            return StageResult(ctx.model, ctx.spec, target, details)
        atomic_write_bytes(target, ctx.onnx_path.read_bytes())
        return StageResult(ctx.model, ctx.spec, target, {"parity": self._check_int8(ctx, target)})

    def _recalibrate(self, ctx: RunContext) -> list[dict]:
        """Fresh BatchNorm statistics for the file that ships (training stages end with
        a recalibration; a model that arrived with weights has had none here). Without
        labels, judged by agreement with the model's own predictions before it."""
        reference = None
        if not ctx.data.val.labeled and self.config.batch_norm.recalibrate:
            reference = split_logits(ctx.model, ctx.data.val).argmax(1)
        record = recalibrate_checked_(
            ctx.model, ctx.data, self.config.batch_norm, where="before export",
            seed=ctx.seed, reference=reference,
        )  # fmt: skip
        return [] if record is None else [record]

    def _check_int8(self, ctx: RunContext, path) -> dict[str, float]:
        generator = torch.Generator().manual_seed(ctx.seed)
        signature = ctx.spec.signature
        for sizes in signature.parity_sizes(self.config.parity_batch_sizes):
            batch = sizes["batch"]
            x = signature.feed(signature.random_example(sizes, generator))
            try:
                out = onnx_predictions(path, x, batch_size=batch)
            except Exception as exc:  # onnxruntime's own exception types
                raise StageError(f"int8 model fails at {shape_label(sizes)}: {exc}") from exc
            if out.shape[0] != batch:
                raise StageError(f"int8 model returned {out.shape[0]} rows for batch {batch}")
        val = ctx.data.val  # streamed: a lazy split is decoded chunk by chunk
        quantized = onnx_logits(path, val, signature).argmax(1)
        if ctx.model is None:  # an ONNX-input recipe: the float file it started from
            reference = onnx_logits(ctx.baseline_onnx, val, signature).argmax(1)
        else:
            reference = split_logits(ctx.model, val).argmax(1).numpy()
        agreement = float(np.mean(quantized == reference))
        if agreement < self.config.agreement_min:
            raise StageError(
                f"int8 model agrees with the float model on {agreement:.2%} of validation "
                f"predictions, below agreement_min {self.config.agreement_min:.2%}"
            )
        return {"int8_agreement_with_float": agreement}
