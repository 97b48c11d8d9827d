"""`quantize`: make the deployable model smaller (and, where the CPU allows, faster).

uniform: ONNX Runtime int8, static QDQ (default, with an optional accuracy-aware
fallback), dynamic, weight-only int4 for MatMul, `format = "auto"` to measure the
candidates, or `format = "placement"` to keep int8 only where it is faster; kmeans /
pow2: per-layer codebook weights.
"""

from __future__ import annotations

import copy
import shutil

import torch
from torch import nn

from compress.models.signature import Samples, sample_count, slice_samples
from compress.quantization.auto import search
from compress.quantization.codebook import encode_onnx, weighted_layers
from compress.quantization.dynamic import quantize_dynamic_onnx
from compress.quantization.fallback import restore_accuracy
from compress.quantization.int4 import quantize_int4_weights
from compress.quantization.layers import resolve_per_layer
from compress.quantization.placement import PlacementOptions, SearchInputs, search_placement
from compress.quantization.qat import (
    activation_qparams,
    attach,
    match_points,
    shared_qparams,
)
from compress.quantization.static import (
    count_runtime_ops,
    preprocess_warnings,
    quantizable_nodes,
    quantize_static_onnx,
)
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.evaluate import onnx_predictions, split_samples
from compress.runtime.machine import int8_saturates
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage
from compress.training import SingleProcess, evaluate, fit

REBUILD_OPS = {"Gather", "BitShift", "BitwiseAnd"}  # what the codebook subgraph runs
# Validation rows a search scores candidates on when the split is read lazily (image
# folders): its candidates are scored again and again, so the rows are decoded once and held.
SEARCH_ROWS = 2048


@register_stage("quantize")
class QuantizeStage(Stage):
    """Export fp32, then write the quantized ONNX model the config asks for.

    The float torch model passes through unchanged (the export stage checks the
    quantized model's predictions against it); the deployable artifact is the
    quantized ONNX file, and the details record what actually runs in int8.
    """

    config_class = QuantizeStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        if self.config.method in ("kmeans", "pow2"):
            return self._codebook(ctx)
        if self.config.mode == "qat":
            return self._qat(ctx)
        return self._uniform(ctx)

    def _codebook(self, ctx: RunContext) -> StageResult:
        """Per-layer codebook weights: the file stores codebook + packed indices."""
        config = self.config
        fp32_path = ctx.workdir / "model.fp32.onnx"
        self._float_onnx(ctx, fp32_path)
        if ctx.model is None:  # an ONNX file: its weighted nodes' weight names
            weighted = weighted_layers(fp32_path)
        else:
            weighted = [
                name
                for name, module in ctx.model.named_modules()
                if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear))
            ]
        per_layer = resolve_per_layer(weighted, config.layers, config.bits, "layers")
        out_path = ctx.workdir / "model.onnx"
        encoded = encode_onnx(fp32_path, out_path, config.method, config.bits, per_layer)
        fp32_path.unlink()
        runtime = count_runtime_ops(out_path, threads=ctx.recipe.runtime.threads)
        details = {
            "quantization": {
                "method": config.method,
                "bits": config.bits,
                **encoded,
                # True when ORT's optimizer turned the codebook subgraphs back into
                # constant weights at load time (inference pays nothing for them)
                "folded_by_runtime": not (REBUILD_OPS & set(runtime["ops"])),
                **runtime,
            }
        }
        # The float model passes through, as for int8: the export stage checks that
        # the codebook model agrees with its predictions.
        return StageResult(ctx.model, ctx.spec, onnx_path=out_path, details=details)

    def _uniform(self, ctx: RunContext) -> StageResult:
        config = self.config
        fp32_path = ctx.workdir / "model.fp32.onnx"
        self._float_onnx(ctx, fp32_path)
        int8_path = ctx.workdir / "model.onnx"
        if config.format == "auto":
            settings = self._auto(ctx, fp32_path, int8_path)
        elif config.format == "placement":
            settings = self._placement(ctx, fp32_path, int8_path)
        elif config.mode == "int4":
            settings = quantize_int4_weights(
                fp32_path, int8_path, block_size=config.block_size, op_types=config.op_types
            )
        elif config.mode == "dynamic":
            settings = quantize_dynamic_onnx(
                fp32_path, int8_path, weight_type=config.weight_type,
                per_channel=config.per_channel, op_types=config.op_types,
            )  # fmt: skip
        else:
            settings = self._static(ctx, fp32_path, int8_path)
        ops = count_runtime_ops(int8_path, threads=ctx.recipe.runtime.threads)
        fp32_path.unlink()  # the int8 file is the artifact; fp32 lives in the previous stage
        details = {"quantization": {**settings, **ops}}
        return StageResult(ctx.model, ctx.spec, onnx_path=int8_path, details=details,
                           warnings=preprocess_warnings(settings))  # fmt: skip

    @staticmethod
    def _float_onnx(ctx: RunContext, fp32_path) -> None:
        """The float model to quantize: for an ONNX-input recipe the current ONNX file
        as it is; else the previous stage's deployed export of this very model (the
        runner exported and parity-checked it; a second export costs seconds for a
        transformer and gives the same graph), or a fresh export when there is none."""
        if ctx.model is None:
            shutil.copyfile(ctx.onnx_path, fp32_path)
        elif ctx.onnx_path is None and ctx.input_onnx is not None and ctx.input_onnx.is_file():
            shutil.copyfile(ctx.input_onnx, fp32_path)
        else:
            export_onnx(ctx.model, ctx.spec.signature, fp32_path, debug=ctx.debug)

    def _qat(self, ctx: RunContext) -> StageResult:
        """Calibrate, train the scales and weights with fake quantization, re-quantize."""
        config = self.config
        settings = self._static_settings()  # per-channel: the config requires it for QAT
        calibration_x = self._calibration_x(ctx)
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
        learned = fake.learned()
        fake.detach()
        model.eval()

        int8_path = ctx.workdir / "model.onnx"
        # Training is kept unless the fake-quant model validates worse than with the
        # calibrated scales it started from (beyond noise): a QAT that went wrong ships
        # the static int8 model instead.
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
        summary = result.summary()
        summary.pop("history")
        report["qat"] = {
            "epochs": config.qat.epochs,
            "distill": teacher is not None,
            "fit": summary,
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
        return StageResult(model, ctx.spec, int8_path, {"quantization": {**report, **ops}},
                           warnings=result.warnings + preprocess_warnings(report))  # fmt: skip

    def _static_settings(self) -> dict:
        """The quantize_static_onnx settings of static and QAT quantization."""
        config = self.config
        return {
            "activation_type": config.activation_type,
            "weight_type": config.weight_type,
            "per_channel": config.per_channel,
            "calibration": config.calibration,
            "reduce_range": self._reduce_range(),
        }

    def _reduce_range(self) -> bool:
        if self.config.reduce_range == "auto":
            return int8_saturates()
        return self.config.reduce_range

    def _calibration_x(self, ctx: RunContext) -> Samples:
        """Real training samples for range calibration: one array for a one-input
        model, arrays keyed by input name otherwise."""
        generator = torch.Generator().manual_seed(ctx.seed)
        train = ctx.data.train
        count = min(self.config.calibration.samples, len(train))
        chosen = torch.randperm(len(train), generator=generator)[:count]
        rows = train.take(chosen)
        return rows[0].numpy() if len(rows) == 1 else ctx.spec.signature.feed(rows)

    def _search_inputs(self, ctx: RunContext) -> tuple:
        """What the measuring searches (auto, placement) take, in their order:
        calibration samples, validation inputs and labels, runtime, signature, the
        accuracy limit."""
        signature = ctx.spec.signature
        val_x = self._val_samples(ctx)
        return (
            self._calibration_x(ctx),
            val_x,
            self._val_labels(ctx, val_x),
            ctx.recipe.runtime,
            signature,
            self.config.auto_val_accuracy_drop_max,
        )

    @staticmethod
    def _val_samples(ctx: RunContext):
        """Validation inputs the searches (auto, placement, fallback) score on, as arrays:
        all of an in-memory split, the first SEARCH_ROWS of a lazy one (decoded once)."""
        val = ctx.data.val
        rows = None if val.reader is None else SEARCH_ROWS
        return split_samples(val, ctx.spec.signature, max_rows=rows)

    @staticmethod
    def _val_labels(ctx: RunContext, val_x, fp32_path=None):
        """The labels the searches score accuracy on. Without labels: the float model's
        own predictions, so their "accuracy" is top-1 agreement with it."""
        labels = ctx.data.val.y.numpy()[: sample_count(val_x)]
        if ctx.data.val.labeled:
            return labels
        fp32_path = fp32_path or ctx.workdir / "model.fp32.onnx"
        return onnx_predictions(fp32_path, val_x).argmax(1)

    def _auto(self, ctx: RunContext, fp32_path, out_path) -> dict:
        config = self.config
        return search(
            fp32_path,
            out_path,
            *self._search_inputs(ctx),
            per_channel=config.per_channel,
            calibration=config.calibration,
            reduce_range=self._reduce_range(),
            op_types=config.op_types,
        )

    def _placement(self, ctx: RunContext, fp32_path, out_path) -> dict:
        """Static int8 with the stage's settings, layers that are slower in int8
        returned to fp32 (compress/quantization/placement.py)."""
        config = self.config
        options = PlacementOptions(
            max_candidates=config.placement_max_candidates,
            repeats=config.placement_repeats,
            rounds=config.placement_rounds,
            min_gain=config.placement_min_gain,
        )
        inputs = SearchInputs(*self._search_inputs(ctx))
        return search_placement(fp32_path, out_path, inputs, self._static_settings(), options)

    def _static(self, ctx: RunContext, fp32_path, int8_path) -> dict:
        config = self.config
        calibration_x = self._calibration_x(ctx)
        settings = self._static_settings()
        always_float: tuple[str, ...] = ()
        if config.exclude:  # node names or patterns, resolved against the graph ORT quantizes
            nodes = quantizable_nodes(fp32_path)
            patterns = {entry: "float" for entry in config.exclude}
            chosen = resolve_per_layer(nodes, patterns, "int8", "exclude")
            always_float = tuple(node for node in nodes if chosen[node] == "float")
        report = quantize_static_onnx(
            fp32_path, int8_path, calibration_x, **settings, exclude=always_float
        )
        if config.fallback is not None:
            val_x = self._val_samples(ctx)
            report["fallback"] = restore_accuracy(
                fp32_path,
                int8_path,
                calibration_x,
                val_x,
                self._val_labels(ctx, val_x, fp32_path),
                settings,
                config.fallback.val_accuracy_drop_max,
                config.fallback.max_layers,
                always_float=always_float,
            )
            report["float_nodes"] = list(always_float) + report["fallback"]["float_layers"]
        return report
