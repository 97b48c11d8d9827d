"""Dynamic int8 quantization with ONNX Runtime: int8 weights, activations quantized
per batch at run time. For MatMul/Gemm-heavy models (transformers, MLPs); measured
here on convolutions it was 6-9x *slower* than fp32 (ConvInteger), so convolutions
are left in float unless asked for. Embedding tables (`Gather` on a constant) are
quantized too by default (compress/quantization/gather.py): 8-bit rows dequantized
after the lookup."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_path
from compress.errors import StageError
from compress.quantization.gather import resolve_op_types, table_report


def quantize_dynamic_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    weight_type: str = "int8",
    per_channel: bool = True,
    op_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the dynamically quantized model; returns the settings for the report.

    Args:
        op_types: ONNX op types to convert; None: MatMul, Gemm, and Gather when the
            model has an embedding table (`resolve_op_types`).

    Example:
        >>> quantize_dynamic_onnx("fp32.onnx", "int8.onnx")["op_types"]  # doctest: +SKIP
        ['MatMul', 'Gemm', 'Gather']
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    op_types = resolve_op_types(fp32_path, op_types)
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
        **table_report(fp32_path, out_path),
    }
