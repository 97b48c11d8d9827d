"""`mode = "qat"`: calibrate, train the scales and weights with fake quantization,
re-quantize with the learned scales. The one method that needs the torch model and
trains on labels (its config says so; the loader reads it)."""

from __future__ import annotations

import copy
from typing import Any

from compress.models.signature import slice_samples
from compress.quantization.qat import activation_qparams, attach, match_points, shared_qparams
from compress.quantization.static import (
    count_runtime_ops,
    preprocess_warnings,
    quantize_static_onnx,
)
from compress.recipe.quantize_methods import QATMethodConfig
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import StageResult
from compress.stages.quantize_methods.base import QuantizeMethod, register_quantize_method
from compress.training import SingleProcess, evaluate, fit


@register_quantize_method("qat")
class QATMethod(QuantizeMethod):
    """Static QDQ whose activation scales and weights are fine-tuned with fake quantization.

    The trained model ships unless its fake-quant validation accuracy fell more than
    `qat.keep_val_drop_max` below the calibrated scales' (then static int8 ships).
    """

    config_class = QATMethodConfig

    def run(self) -> StageResult:
        ctx, config = self.ctx, self.config
        settings = self.static_settings()  # per-channel: the config requires it for QAT
        calibration_x = self.calibration_x()
        fp32_path = ctx.workdir / "model.fp32.onnx"
        calibrated_path = ctx.workdir / "model.calibrated.onnx"
        export_onnx(ctx.model, ctx.spec.signature, fp32_path, debug=ctx.debug)
        report = quantize_static_onnx(fp32_path, calibrated_path, calibration_x, **settings)
        qparams = activation_qparams(calibrated_path)
        match_x = slice_samples(calibration_x, 0, 16)
        points, unmatched = match_points(ctx.model, fp32_path, list(qparams), match_x)

        model = copy.deepcopy(ctx.model)
        teacher = None
        if config.qat.distill:
            use_teacher = config.qat.distill_from == "teacher" and ctx.teacher is not None
            teacher = copy.deepcopy(ctx.teacher if use_teacher else ctx.model).eval()
        fake = attach(
            model, points, qparams, shared_qparams(calibrated_path), settings["reduce_range"]
        )
        trained = self._train(model, teacher)
        learned = fake.learned()
        fake.detach()
        model.eval()

        int8_path = ctx.workdir / "model.onnx"
        # Training is kept unless the fake-quant model validates worse than with the
        # calibrated scales it started from (beyond noise): a QAT that went wrong ships
        # the static int8 model instead.
        before, after = trained["before"], trained["after"]
        kept = "trained" if after >= before - config.qat.keep_val_drop_max else "calibrated"
        if kept == "trained":
            trained_path = ctx.workdir / "model.trained.fp32.onnx"
            export_onnx(model, ctx.spec.signature, trained_path, debug=ctx.debug)
            fixed = {qparams[name]["tensor"]: value for name, value in learned.items()}
            report = quantize_static_onnx(
                trained_path, int8_path, calibration_x, **settings, fixed_qparams=fixed
            )
            trained_path.unlink()
            calibrated_path.unlink()
        else:
            model = ctx.model
            calibrated_path.replace(int8_path)
        fp32_path.unlink()
        report["qat"] = {
            "epochs": config.qat.epochs,
            "distill": teacher is not None,
            "fit": trained["fit"],
            "val_accuracy_fake_quant_before": before,
            "val_accuracy_fake_quant_after": after,
            "kept": kept,
            "learned_tensors": len(learned),
            # tensors no torch module computes (e.g. a functional op's output inside
            # forward): they keep ranges calibrated on the trained model
            "calibrated_tensors": unmatched,
            "scales": {
                name: {"calibrated": qparams[name]["scale"], "learned": scale}
                for name, (scale, _) in learned.items()
            },
        }
        report["mode"] = "qat"
        ops = count_runtime_ops(int8_path, threads=ctx.recipe.runtime.threads)
        details = {"quantization": {**report, **ops}}
        warnings = trained["warnings"] + preprocess_warnings(report)
        return StageResult(model, ctx.spec, onnx_path=int8_path, details=details,
                           warnings=warnings)  # fmt: skip

    def _train(self, model, teacher) -> dict[str, Any]:
        """Fit the fake-quantized `model` in place (distilling from `teacher`, if any);
        its validation accuracy before and after, and the fit's summary."""
        ctx, config = self.ctx, self.config
        before = evaluate(model, ctx.data.val)["accuracy"]
        # Fake-quant hooks cannot travel in a training job to other ranks (a job is a
        # structure and weights), so QAT trains in this process even in a distributed run.
        result = fit(
            model,
            ctx.data,
            config.qat,
            seed=ctx.seed,
            strategy=SingleProcess(),
            augment=ctx.recipe.data.augment,
            teacher=teacher,
            distill=config.qat if teacher is not None else None,
            on_epoch_end=ctx.on_epoch_end,
            checkpoint=ctx.epoch_checkpoint(),
        )
        after = evaluate(model, ctx.data.val)["accuracy"]
        summary = result.summary()
        summary.pop("history")
        return {"before": before, "after": after, "fit": summary, "warnings": result.warnings}
