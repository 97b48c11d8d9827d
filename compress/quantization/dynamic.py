"""Dynamic int8 quantization with ONNX Runtime: int8 weights, activations quantized
per batch at run time. For MatMul/Gemm-heavy models (transformers, MLPs); measured
here on convolutions it was 6-9x *slower* than fp32 (ConvInteger), so convolutions
are left in float unless asked for."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_path
from compress.errors import StageError


def quantize_dynamic_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    weight_type: str = "int8",
    per_channel: bool = True,
    op_types: tuple[str, ...] = ("MatMul", "Gemm"),
) -> dict[str, Any]:
    """Write the dynamically quantized model; returns the settings for the report."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    try:
        with atomic_path(out_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
            quantize_dynamic(
                str(fp32_path),
                str(tmp),
                weight_type=types[weight_type],
                per_channel=per_channel,
                op_types_to_quantize=list(op_types),
            )
    except Exception as exc:  # ORT's quantizer raises assorted types
        raise StageError(f"ONNX Runtime dynamic quantization failed: {exc}") from exc
    return {
        "format": "dynamic (integer ops)",
        "weight_type": weight_type,
        "per_channel": per_channel,
        "op_types": list(op_types),
    }
