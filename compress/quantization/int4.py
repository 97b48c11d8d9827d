"""Weight-only int4 for MatMul and embedding tables: ONNX Runtime's block-wise 4-bit
path (MatMulNBits, GatherBlockQuantized).

Weights are stored as 4-bit integers with one scale (and zero point, if asymmetric)
per block of `block_size` values; activations stay float. It applies to MatMul nodes
with a constant 2-D weight, i.e. the Linear layers of a transformer (token inputs are
3-D, so they export as MatMul), and to `Gather` on a constant table (token, position
embeddings: blocks along the hidden axis). A CNN's classifier exports as Gemm and is
left alone. Measured on MiniLM (../shared/FIELD-NOTES.md): 0.73-0.96x fp32's speed on
this CPU, so int4 is for size only.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_path
from compress.errors import StageError
from compress.quantization.gather import embedding_tables, table_report

INT4_OP_TYPES = ("MatMul", "Gather")  # what MatMulNBitsQuantizer converts


def int4_op_types(fp32_path: str | Path, op_types: Sequence[str] | None) -> tuple[str, ...]:
    """The recipe's op types that int4 can convert (Gemm has no 4-bit kernel), or
    MatMul plus Gather where the model has an embedding table."""
    if op_types is None:
        return ("MatMul", "Gather") if embedding_tables(fp32_path) else ("MatMul",)
    return tuple(op for op in op_types if op in INT4_OP_TYPES)


def quantize_int4_weights(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    block_size: int = 32,
    symmetric: bool = True,
    op_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the int4-weight model; returns settings and how many ops it converted.

    Args:
        block_size: values sharing one scale (a power of 2, >= 16).
        symmetric: no zero points.
        op_types: "MatMul" and/or "Gather" (others are ignored: no int4 kernel);
            None: MatMul, and Gather when the model has an embedding table.

    Example:
        >>> quantize_int4_weights("fp32.onnx", "int4.onnx")["int4_gathers"]  # doctest: +SKIP
        3
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    chosen = int4_op_types(fp32_path, op_types)
    if not chosen:
        raise StageError(
            f"mode 'int4' converts MatMul and Gather; op_types {list(op_types or [])} names neither"
        )
    model = onnx.load(str(fp32_path))
    quantizer = MatMulNBitsQuantizer(
        model, bits=4, block_size=block_size, is_symmetric=symmetric,
        op_types_to_quantize=chosen, quant_axes=(("MatMul", 0), ("Gather", 1)),
    )  # fmt: skip
    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    # it warns that it raises the opset to 21 (int4 types) and divides zero-scale blocks
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantizer.process()
    converted = collections.Counter(n.op_type for n in quantizer.model.model.graph.node)
    if not converted.get("MatMulNBits") and not converted.get("GatherBlockQuantized"):
        raise StageError(
            "mode 'int4' quantizes MatMul weights and embedding tables, and this model has "
            "neither with a constant weight (a CNN's Linear layers export as Gemm); use "
            "mode 'static'"
        )
    with atomic_path(out_path) as tmp:
        onnx.save(quantizer.model.model, str(tmp))
    return {
        "format": "weight-only int4 (MatMulNBits)",
        "block_size": block_size,
        "symmetric": symmetric,
        "op_types": list(chosen),
        "int4_matmuls": converted["MatMulNBits"],
        "float_matmuls": converted.get("MatMul", 0),
        "int4_gathers": converted.get("GatherBlockQuantized", 0),
        **table_report(fp32_path, out_path),
    }
