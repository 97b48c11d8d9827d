"""An ONNX file as the starting model: read it, check it fits the data, count it.

`[model] onnx = "model.onnx"` has no torch model behind it. Its inputs (names, element
types, fixed and dynamic dims) are the file's own; the recipe's data must fit them.
Parameters and MACs are counted on the float graph once, and quantized stages report
the same counts, as they do for torch models (quantization changes the arithmetic's
precision, not its amount).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import RecipeError
from compress.models.checkpoint import ModelSpec
from compress.models.signature import InputSignature, TensorSpec

WHERE = "model.onnx"


def read_onnx(path: str | Path, where: str = WHERE):
    """The checked `onnx.ModelProto` of a user file (external data read from beside it).

    Raises RecipeError (exit 2) naming the file when it is missing, not ONNX, or
    invalid, before any stage runs."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{where}: {path} not found")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError ...
        raise RecipeError(
            f"{where}: {path} is not a valid ONNX model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
        ) from None
    graph_inputs = _graph_inputs(model)
    if not graph_inputs:
        raise RecipeError(f"{where}: {path} declares no inputs")
    if not model.graph.output:
        raise RecipeError(f"{where}: {path} declares no outputs")
    return model


def _graph_inputs(model) -> list:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _output_width(model) -> int | None:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value"):
        return int(dims[1].dim_value)
    return None


def onnx_spec(config, data, where: str = WHERE) -> ModelSpec:
    """The ModelSpec of an ONNX starting model, checked against the data it will be fed.

    The file's names and dims win (they are what a deployment feeds); the data must
    give as many inputs, of the file's per-sample shape, and no more classes than the
    file's logits are wide. A fixed batch dim is refused: every stage is measured at
    several batch sizes."""
    model = read_onnx(config.onnx, where)
    file_signature = InputSignature.from_onnx(config.onnx)
    data_signature = data.signature
    path = config.onnx
    if len(file_signature.inputs) != len(data_signature.inputs):
        raise RecipeError(
            f"{where}: {path} takes {len(file_signature.inputs)} inputs "
            f"({', '.join(file_signature.names)}); the data gives {len(data_signature.inputs)} "
            f"({', '.join(data_signature.names)})"
        )
    inputs = []
    for ours, theirs in zip(file_signature.inputs, data_signature.inputs):
        if isinstance(ours.shape[0], int):
            raise RecipeError(
                f"{where}: {path}: input {ours.name!r} has a fixed batch size of "
                f"{ours.shape[0]} (shape {list(ours.shape)}); compress measures every stage "
                "at several batch sizes: export it with a dynamic batch axis "
                "(torch.onnx.export(..., dynamic_shapes=...) or dynamic_axes={name: {0: 'batch'}})"
            )
        fixed = [(i, d) for i, d in enumerate(ours.shape) if i and isinstance(d, int)]
        mismatched = [
            (i, d, theirs.shape[i])
            for i, d in fixed
            if i >= len(theirs.shape) or (isinstance(theirs.shape[i], int) and theirs.shape[i] != d)
        ]
        if len(ours.shape) != len(theirs.shape) or mismatched:
            raise RecipeError(
                f"{where}: {path}: input {ours.name!r} has shape {list(ours.shape)}; the data "
                f"gives {list(theirs.shape)} (set data.image_size / channels to match)"
            )
        if ours.dtype != theirs.dtype:
            raise RecipeError(
                f"{where}: {path}: input {ours.name!r} is {ours.dtype}; "
                f"the data gives {theirs.dtype}"
            )
        # integer inputs (token ids) draw random examples below the data's bound
        inputs.append(TensorSpec(ours.name, ours.dtype, ours.shape, theirs.high))
    signature = InputSignature(tuple(inputs), file_signature.output)
    width = _output_width(model)
    classes = data.num_classes if getattr(data, "labeled", True) else 0
    if width is not None and classes > width:
        raise RecipeError(
            f"{where}: {path} outputs {width} logits per sample; the data has {classes} classes"
        )
    shape = tuple(d for d in signature.inputs[0].shape[1:])
    return ModelSpec(config, shape, width or classes, signature)


def count_onnx_params(path: str | Path) -> int:
    """Values in the file's float initializers (its weights, biases, norms)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    return int(
        sum(
            numpy_helper.to_array(init).size
            for init in model.graph.initializer
            if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        )
    )


def _fixed_copy(model, signature: InputSignature):
    """The model with every input's dims set to one sample's sizes, shapes inferred."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    sizes = signature.sizes(1)
    by_name = {spec.name: spec for spec in signature.inputs}
    for value in _graph_inputs(fixed):
        spec = by_name.get(value.name)
        if spec is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, spec.concrete(sizes)):
            dim.Clear()
            dim.dim_value = int(size)
    return onnx.shape_inference.infer_shapes(fixed, data_prop=True)


def _known_shapes(graph, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Every value's shape that shape inference fixed, a named dynamic axis (`batch`,
    `sequence`, as the exporter names them) read as one sample's size. Shape
    inference leaves a name where a value's shape went through data-dependent ops
    (BERT's attention probabilities keep a symbolic `batch` behind the mask)."""
    shapes: dict[str, list[int]] = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        resolved = [
            int(d.dim_value) if d.HasField("dim_value") else sizes.get(d.dim_param) for d in dims
        ]
        if dims and all(d is not None for d in resolved):
            shapes[value.name] = resolved
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _matmul_macs(left: list[int] | None, right: list[int] | None, out) -> int | None:
    """MACs of a MatMul between any two tensors (weights or activations): output
    elements times the shared dimension, from whichever operand's shape is known."""
    inner = left[-1] if left else (right[-2] if right and len(right) >= 2 else None)
    if out is None or inner is None:
        return None
    return int(np.prod(out)) * int(inner)


def count_onnx_macs(path: str | Path, signature: InputSignature) -> int:
    """Multiply-accumulates of one sample through the float graph's Conv, Gemm and
    MatMul nodes, MatMuls between two activations (attention scores) included
    (shapes from ONNX shape inference at batch 1; nodes whose shapes it cannot
    infer are not counted)."""
    import onnx

    model = _fixed_copy(onnx.load(str(path)), signature)
    shapes = _known_shapes(model.graph, signature.sizes(1))
    total = 0
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type == "Conv" and out is not None and node.input[1] in shapes:
            weight = shapes[node.input[1]]  # (out_channels, in_channels / group, *kernel)
            total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type == "Gemm" and out is not None and node.input[0] in shapes:
            left = shapes[node.input[0]]
            transposed = any(a.name == "transA" and a.i for a in node.attribute)
            total += int(np.prod(out)) * int(left[-2] if transposed else left[-1])
        elif node.op_type == "MatMul":
            macs = _matmul_macs(shapes.get(node.input[0]), shapes.get(node.input[1]), out)
            total += macs or 0
    return total
