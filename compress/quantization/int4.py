"""Weight-only int4 for MatMul: ONNX Runtime's block-wise 4-bit path (MatMulNBits).

Weights are stored as 4-bit integers with one scale (and zero point, if asymmetric)
per block of `block_size` input features; activations stay float. It applies to
MatMul nodes with a constant 2-D weight, i.e. the Linear layers of a transformer
(token inputs are 3-D, so they export as MatMul); a CNN's classifier exports as
Gemm and is left alone.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_path
from compress.errors import StageError


def quantize_int4_weights(
    fp32_path: str | Path, out_path: str | Path, *, block_size: int = 32, symmetric: bool = True
) -> dict[str, Any]:
    """Write the int4-weight model; returns settings and how many MatMuls it converted."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32_path))
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=block_size, is_symmetric=symmetric,
        op_types_to_quantize=("MatMul",),
    )  # fmt: skip
    logging.getLogger("onnxruntime.quantization").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        quantizer.process()
    converted = collections.Counter(n.op_type for n in quantizer.model.model.graph.node)
    if not converted.get("MatMulNBits"):
        raise StageError(
            "mode 'int4' quantizes MatMul weights, and this model has none with a constant "
            "weight (a CNN's Linear layers export as Gemm); use mode 'static'"
        )
    with atomic_path(out_path) as tmp:
        onnx.save(quantizer.model.model, str(tmp))
    return {
        "format": "weight-only int4 (MatMulNBits)",
        "block_size": block_size,
        "symmetric": symmetric,
        "int4_matmuls": converted["MatMulNBits"],
        "float_matmuls": converted.get("MatMul", 0),
    }
