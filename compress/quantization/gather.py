"""Which ops a weight quantizer converts, and whether it reached the embedding tables.

A transformer's token embedding is a `Gather` on a constant table: all-MiniLM-L6-v2's
30522 x 384 table is 47 MB of its 59 MB int8 file when only MatMul/Gemm are quantized
(../shared/FIELD-NOTES.md: with Gather 23 MB, same accuracy, same speed). So the
default op set adds `Gather` wherever the graph has a Gather whose data is a constant
2-D float table; a model without one (a CNN, whose Gathers index shapes) is left as it
was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

# What dynamic int8 converts by default; Gather joins where the graph has a table.
DEFAULT_OP_TYPES = ("MatMul", "Gemm")
_FLOAT = 1  # onnx.TensorProto.FLOAT


def embedding_tables(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Gather node name -> shape of its constant 2-D float data (an embedding table)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    tables = {
        init.name: tuple(init.dims)
        for init in graph.initializer
        if init.data_type == _FLOAT and len(init.dims) == 2
    }
    return {
        node.name: tables[node.input[0]]
        for node in graph.node
        if node.op_type == "Gather" and node.input and node.input[0] in tables
    }


def resolve_op_types(path: str | Path, op_types: Sequence[str] | None) -> tuple[str, ...]:
    """The recipe's op types, or the default: MatMul, Gemm, and Gather when the model
    has an embedding table."""
    if op_types is not None:
        return tuple(op_types)
    return DEFAULT_OP_TYPES + (("Gather",) if embedding_tables(path) else ())


def table_report(fp32_path: str | Path, quantized_path: str | Path) -> dict[str, Any]:
    """How many embedding tables the quantized file still holds in float, with bytes:
    the report says whether the table (usually most of a text model's file) shrank."""
    before = embedding_tables(fp32_path)
    after = embedding_tables(quantized_path)
    return {
        "embedding_tables": len(before),
        "embedding_tables_float": len(after),
        "embedding_float_bytes": 4 * sum(rows * cols for rows, cols in after.values()),
    }
