"""ONNX Runtime int8 without a search: static (and static with an accuracy-aware
fallback), dynamic, and weight-only int4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.quantization.dynamic import quantize_dynamic_onnx
from compress.quantization.fallback import restore_accuracy
from compress.quantization.int4 import quantize_int4_weights
from compress.quantization.layers import resolve_per_layer
from compress.quantization.static import quantizable_nodes, quantize_static_onnx
from compress.recipe.quantize_methods import (
    DynamicConfig,
    FallbackMethodConfig,
    Int4Config,
    StaticConfig,
)
from compress.stages.quantize_methods.base import QuantizeMethod, register_quantize_method


@register_quantize_method("static")
class StaticMethod(QuantizeMethod):
    """Calibrated int8 QDQ; `exclude`d nodes stay float."""

    config_class = StaticConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        calibration_x = self.calibration_x()
        always_float = self.always_float(fp32_path)
        return quantize_static_onnx(
            fp32_path, out_path, calibration_x, **self.static_settings(), exclude=always_float
        )

    def always_float(self, fp32_path: Path) -> tuple[str, ...]:
        """The `exclude` node names or patterns, resolved against the graph ORT quantizes."""
        if not self.config.exclude:
            return ()
        nodes = quantizable_nodes(fp32_path)
        patterns = {entry: "float" for entry in self.config.exclude}
        chosen = resolve_per_layer(nodes, patterns, "int8", "exclude")
        return tuple(node for node in nodes if chosen[node] == "float")


@register_quantize_method("fallback")
class FallbackMethod(StaticMethod):
    """Static int8, then the layers int8 hurts most return to float until validation
    accuracy is back within `fallback.val_accuracy_drop_max`."""

    config_class = FallbackMethodConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config = self.config
        calibration_x = self.calibration_x()
        settings = self.static_settings()
        always_float = self.always_float(fp32_path)
        report = quantize_static_onnx(
            fp32_path, out_path, calibration_x, **settings, exclude=always_float
        )
        val_x = self.val_samples()
        report["fallback"] = restore_accuracy(
            fp32_path,
            out_path,
            calibration_x,
            val_x,
            self.val_labels(val_x, fp32_path),
            settings,
            config.fallback.val_accuracy_drop_max,
            config.fallback.max_layers,
            always_float=always_float,
        )
        report["float_nodes"] = list(always_float) + report["fallback"]["float_layers"]
        return report


@register_quantize_method("dynamic")
class DynamicMethod(QuantizeMethod):
    """Int8 weights, activations quantized per batch at run time (MatMul/Gemm models)."""

    config_class = DynamicConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config = self.config
        return quantize_dynamic_onnx(
            fp32_path, out_path, weight_type=config.weight_type,
            per_channel=config.per_channel, op_types=config.op_types,
        )  # fmt: skip


@register_quantize_method("int4")
class Int4Method(QuantizeMethod):
    """Weight-only block-wise 4-bit MatMul (and Gather)."""

    config_class = Int4Config

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config = self.config
        return quantize_int4_weights(
            fp32_path, out_path, block_size=config.block_size, op_types=config.op_types
        )
