"""Non-uniform weight quantization: a small per-layer codebook plus packed indices.

`kmeans`: Deep Compression's weight sharing, 2^bits centroids per layer found by
1-D k-means (linear initialisation over [min, max], which the paper found best).
`pow2`: every weight snapped to zero or a signed power of two (one sign bit, the
rest an exponent range below the layer's largest magnitude).

Both deploy as ordinary ONNX: each weight initializer is replaced by its codebook
(float32, 2^bits values) and its indices packed into bytes (two 4-bit indices per
byte up to 4 bits), and the graph rebuilds the weight with BitwiseAnd/BitShift,
Gather and Reshape. ORT folds those constant subgraphs when the session loads, so
inference runs the same float kernels as before: the gain is file size, not speed
(measured, see docs/results.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from compress.artifacts import atomic_path
from compress.errors import StageError

WEIGHT_OPS = {"Conv": 1, "Gemm": 1, "MatMul": 1, "ConvTranspose": 1}  # op -> weight input


def kmeans_codebook(weights: np.ndarray, bits: int, iterations: int = 30) -> np.ndarray:
    """2^bits centroids of the layer's weights (Lloyd's algorithm in 1-D)."""
    values = weights.astype(np.float64).ravel()
    levels = min(2**bits, len(np.unique(values)))
    centroids = np.linspace(values.min(), values.max(), levels)
    for _ in range(iterations):
        assignment = assign(values, centroids)
        sums = np.bincount(assignment, weights=values, minlength=levels)
        counts = np.bincount(assignment, minlength=levels)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return np.sort(centroids).astype(np.float32)


def pow2_codebook(weights: np.ndarray, bits: int) -> np.ndarray:
    """Zero and +-2^k for the 2^(bits-1) - 1 exponents k at and below the largest
    magnitude (one bit is the sign, one code is zero)."""
    largest = float(np.abs(weights).max())
    if largest == 0:
        return np.zeros(1, dtype=np.float32)
    top = math.floor(math.log2(largest) + 0.5)  # nearest power of two to the largest weight
    exponents = [top - i for i in range(2 ** (bits - 1) - 1)]
    magnitudes = [2.0**k for k in exponents]
    return np.sort(np.array([0.0, *magnitudes, *(-m for m in magnitudes)], dtype=np.float32))


def assign(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of the nearest codebook entry for every value (codebook sorted)."""
    flat = values.ravel()
    upper = np.clip(np.searchsorted(codebook, flat), 1, len(codebook) - 1)
    lower = upper - 1
    nearer_lower = np.abs(flat - codebook[lower]) <= np.abs(flat - codebook[upper])
    index = np.where(nearer_lower, lower, upper)
    return (index if len(codebook) > 1 else np.zeros_like(index)).astype(np.int64)


CODEBOOKS = {"kmeans": kmeans_codebook, "pow2": pow2_codebook}


def _pack(indices: np.ndarray, bits: int) -> tuple[np.ndarray, int]:
    """Indices as bytes: two per byte (low nibbles: first half) when bits <= 4."""
    if bits > 4:
        return indices.astype(np.uint8), 8
    half = math.ceil(len(indices) / 2)
    padded = np.zeros(2 * half, dtype=np.uint8)
    padded[: len(indices)] = indices
    return (padded[:half] | (padded[half:] << 4)).astype(np.uint8), 4


def _rebuild(graph, weight, layer: int, codebook, packed, width: int) -> tuple[list, int]:
    """Replace initializer `weight` (an `onnx_ir.Value`) by codebook + packed indices.
    Returns the nodes that recompute it (for the caller to place before the nodes
    that read it) and the bytes the new initializers hold.

    Internal names are short (`q3_codebook`): on small models the graph's own text
    is a large share of the file.
    """
    import onnx_ir as ir

    def n(suffix: str) -> str:
        return f"q{layer}_{suffix}"

    shape = tuple(weight.const_value.shape)
    arrays = {
        n("codebook"): codebook.astype(np.float32),
        n("indices"): packed,
        n("shape"): np.array(shape, dtype=np.int64),
    }
    if width == 4:  # low nibbles hold the first half of the indices, high nibbles the rest
        arrays |= {
            n("mask"): np.array([15], dtype=np.uint8),
            n("four"): np.array([4], dtype=np.uint8),
            n("start"): np.array([0], dtype=np.int64),
            n("end"): np.array([int(np.prod(shape))], dtype=np.int64),
        }
    c = {}
    for name, array in arrays.items():
        c[name] = ir.Value(name=name, const_value=ir.tensor(array, name=name))
        graph.register_initializer(c[name])

    def op(op_type: str, inputs: list, output: str, **attributes):
        node = ir.node(op_type, inputs, attributes or None)
        node.outputs[0].name = output
        nodes.append(node)
        return node.outputs[0]

    nodes: list = []
    source = c[n("indices")]
    if width == 4:
        low = op("BitwiseAnd", [source, c[n("mask")]], n("low"))
        high = op("BitShift", [source, c[n("four")]], n("high"), direction="RIGHT")
        both = op("Concat", [low, high], n("both"), axis=0)
        source = op("Slice", [both, c[n("start")], c[n("end")]], n("unpacked"))
    indices = op("Cast", [source], n("i64"), to=ir.DataType.INT64)
    flat = op("Gather", [c[n("codebook")], indices], n("flat"), axis=0)
    rebuilt = op("Reshape", [flat, c[n("shape")]], n("rebuilt"))
    name = weight.name
    ir.convenience.replace_all_uses_with(weight, rebuilt)
    graph.initializers.pop(name)
    rebuilt.name = name  # the consumers' input keeps the weight's name
    return nodes, sum(array.nbytes for array in arrays.values())


def layer_name(weight: str) -> str:
    """The name `layers` knows a weight by: its module ("<module>.weight"), or the
    initializer's own name where the producer gave it another (ONNX files from elsewhere)."""
    return weight[: -len(".weight")] if weight.endswith(".weight") else weight


def weighted_layers(path: str | Path) -> list[str]:
    """The layer names of every Conv/Gemm/MatMul weight initializer of an ONNX file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    names = {
        node.input[WEIGHT_OPS[node.op_type]]
        for node in graph.node
        if node.op_type in WEIGHT_OPS and len(node.input) > WEIGHT_OPS[node.op_type]
    }
    return sorted(layer_name(name) for name in names & initializers)


def _weights(graph) -> list:
    """The weight initializers (`onnx_ir.Value`s) of every Conv/Gemm/MatMul, by name."""
    read = {
        node.inputs[WEIGHT_OPS[node.op_type]]
        for node in graph
        if node.op_type in WEIGHT_OPS and len(node.inputs) > WEIGHT_OPS[node.op_type]
    }
    return sorted((w for w in graph.initializers.values() if w in read), key=lambda w: w.name)


def _at_opset(path: str | Path, opset: int):
    """The file as an `onnx_ir.Model` at `opset` or later: an older file is converted by
    `onnx.version_converter`, which rewrites the ops whose inputs moved (ReduceMean's
    axes became an input at 18) instead of relabelling the number."""
    import onnx
    import onnx_ir as ir

    proto = onnx.load(str(path))
    current = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
                  default=0)  # fmt: skip
    if current < opset:
        try:
            proto = onnx.version_converter.convert_version(proto, opset)
        except Exception as exc:  # the converter raises RuntimeError and assorted C++ errors
            raise StageError(
                f"{path}: cannot convert its opset {current} graph to opset {opset}, which "
                f"the codebook subgraph needs: {str(exc).strip().splitlines()[0]}"
            ) from exc
    return ir.from_proto(proto)


def encode_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    method: str,
    bits: int,
    layers: dict[str, int | str] | None = None,
) -> dict[str, Any]:
    """Replace every Conv/Gemm/MatMul weight by a codebook + packed indices rebuilt
    in-graph.

    Works on the exported file's weights, after the exporter folded BatchNorm into
    the convolutions, so the codebook describes the weights that actually ship.

    Args:
        method: "kmeans" or "pow2".
        bits: index bits of layers `layers` does not name.
        layers: module name -> its bits, or "skip" to keep it float (its weight
            initializer is "<module>.weight").

    Returns what was encoded: layers, weights, bits per weight, file sizes.

    Raises:
        StageError: a file below opset 18 that `onnx.version_converter` cannot convert.

    Example:
        >>> encode_onnx("fp32.onnx", "kmeans.onnx", "kmeans", 4)["encoded_layers"]  # doctest: +SKIP
        3
    """
    import onnx
    import onnx_ir as ir

    model = _at_opset(fp32_path, 18)  # BitwiseAnd needs opset 18
    graph = model.graph
    inputs = set(graph.inputs)  # an initializer listed as an input can be fed: keep it
    encoded, kept, encoded_weights, stored_bits, stored_bytes = [], [], 0, 0, 0
    errors: dict[str, float] = {}
    bits_of: dict[str, int] = {}
    first, new_nodes = next(iter(graph)), []
    for weight in _weights(graph):
        name = weight.name
        values = weight.const_value.numpy()
        layer_bits = (layers or {}).get(layer_name(name), bits)
        fed = weight in inputs
        if values.dtype != np.float32 or values.size < 16 or layer_bits == "skip" or fed:
            kept.append(name)  # skipped, too small to be worth a subgraph, or an input
            continue
        codebook = CODEBOOKS[method](values, layer_bits)
        indices = assign(values, codebook)
        errors[name] = float(np.abs(codebook[indices].reshape(values.shape) - values).mean())
        packed, width = _pack(indices, layer_bits)
        nodes, size = _rebuild(graph, weight, len(encoded), codebook, packed, width)
        new_nodes += nodes
        stored_bytes += size
        encoded.append(name)
        bits_of[name] = layer_bits
        encoded_weights += int(values.size)
        stored_bits += int(values.size) * width + 32 * len(codebook)  # as stored, packed
    if new_nodes:  # the rebuilt weights must exist before the nodes that read them
        graph.insert_before(first, new_nodes)
        for node in new_nodes:
            node.name = ""  # unnamed, as before: the names the graph gave cost bytes
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto)
    with atomic_path(out_path) as tmp:
        onnx.save(proto, str(tmp))
    return {
        "encoded": encoded,
        "layer_bits": bits_of,
        "kept_float": kept,
        "mean_abs_weight_error": errors,
        "encoded_layers": len(encoded),
        "encoded_weights": encoded_weights,
        "bits_per_weight": stored_bits / max(encoded_weights, 1),
        # the weights alone, before and after (the file also holds the graph)
        "weight_bytes_fp32": 4 * encoded_weights,
        "weight_bytes": stored_bytes,
        "fp32_bytes": Path(fp32_path).stat().st_size,
        "bytes": Path(out_path).stat().st_size,
    }
