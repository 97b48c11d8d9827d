"""`quantize`: make the deployable model smaller (and, where the CPU allows, faster).

uniform: ONNX Runtime int8, static QDQ (default, with an optional accuracy-aware
fallback), dynamic, weight-only int4 for MatMul, or `format = "auto"` to measure the
candidates; kmeans / pow2: per-layer codebook weights.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.quantization.auto import search
from compress.quantization.codebook import encode_onnx
from compress.quantization.dynamic import quantize_dynamic_onnx
from compress.quantization.fallback import restore_accuracy
from compress.quantization.int4 import quantize_int4_weights
from compress.quantization.layers import resolve_per_layer
from compress.quantization.static import (
    count_runtime_ops,
    quantizable_nodes,
    quantize_static_onnx,
)
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage

REBUILD_OPS = {"Gather", "BitShift", "BitwiseAnd"}  # what the codebook subgraph runs


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
        return self._uniform(ctx)

    def _codebook(self, ctx: RunContext) -> StageResult:
        """Per-layer codebook weights: the file stores codebook + packed indices."""
        config = self.config
        weighted = [
            name
            for name, module in ctx.model.named_modules()
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear))
        ]
        per_layer = resolve_per_layer(weighted, config.layers, config.bits, "layers")
        fp32_path = ctx.workdir / "model.fp32.onnx"
        export_onnx(ctx.model, ctx.spec.input_shape, fp32_path, debug=ctx.debug)
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
        export_onnx(ctx.model, ctx.spec.input_shape, fp32_path, debug=ctx.debug)
        int8_path = ctx.workdir / "model.onnx"
        if config.format == "auto":
            settings = self._auto(ctx, fp32_path, int8_path)
        elif config.mode == "int4":
            settings = quantize_int4_weights(fp32_path, int8_path, block_size=config.block_size)
        elif config.mode == "dynamic":
            settings = quantize_dynamic_onnx(
                fp32_path, int8_path, weight_type=config.weight_type, per_channel=config.per_channel
            )
        else:
            settings = self._static(ctx, fp32_path, int8_path)
        ops = count_runtime_ops(int8_path, threads=ctx.recipe.runtime.threads)
        fp32_path.unlink()  # the int8 file is the artifact; fp32 lives in the previous stage
        details = {"quantization": {**settings, **ops}}
        return StageResult(ctx.model, ctx.spec, onnx_path=int8_path, details=details)

    def _calibration_x(self, ctx: RunContext):
        generator = torch.Generator().manual_seed(ctx.seed)
        train = ctx.data.train
        count = min(self.config.calibration.samples, len(train))
        chosen = torch.randperm(len(train), generator=generator)[:count]
        return train.x[chosen].numpy()

    def _auto(self, ctx: RunContext, fp32_path, out_path) -> dict:
        config = self.config
        return search(
            fp32_path,
            out_path,
            self._calibration_x(ctx),
            ctx.data.val.x.numpy(),
            ctx.data.val.y.numpy(),
            ctx.recipe.runtime,
            ctx.spec.input_shape,
            config.auto_val_accuracy_drop_max,
            per_channel=config.per_channel,
            calibration=config.calibration,
        )

    def _static(self, ctx: RunContext, fp32_path, int8_path) -> dict:
        config = self.config
        calibration_x = self._calibration_x(ctx)
        settings = {
            "activation_type": config.activation_type,
            "weight_type": config.weight_type,
            "per_channel": config.per_channel,
            "calibration": config.calibration,
        }
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
            report["fallback"] = restore_accuracy(
                fp32_path,
                int8_path,
                calibration_x,
                ctx.data.val.x.numpy(),
                ctx.data.val.y.numpy(),
                settings,
                config.fallback.val_accuracy_drop_max,
                config.fallback.max_layers,
                always_float=always_float,
            )
            report["float_nodes"] = list(always_float) + report["fallback"]["float_layers"]
        return report
