"""HQQ block quantization of one float weight through onnxruntime's quantizer.

onnxruntime's `MatMulNBitsQuantizer` with `HQQWeightOnlyQuantConfig` quantizes a whole model;
here it gets a loaded one-MatMul model (a path would leave tied tensors pointing into the
source file, FIELD-NOTES) and the MatMulNBits tensors it writes are taken back as `NBits`.
HQQ's zero points are floats: MatMulNBits runs them on a slow kernel path (8-25x slower than
uint4 zero points on onnxruntime 1.32), which the placement search's timing shows.

Example:
    >>> enc = hqq(weight, bits=4, block_size=32)   # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from compress.quantization.nbits import NBits


def hqq(weight: np.ndarray, bits: int, block_size: int) -> NBits:
    """HQQ encoding of a float weight `[K, N]` (4 bits; 8 is refused by HQQ: use RTN)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        HQQWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    if bits != 4:
        raise ValueError("HQQ here quantizes to 4 bits; use algorithm 'rtn' for int8")
    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="m")],
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    config = HQQWeightOnlyQuantConfig(block_size=block_size, bits=bits)
    quantizer = MatMulNBitsQuantizer(model, bits=bits, block_size=block_size, algo_config=config)
    quantizer.process()
    out: onnx.ModelProto = quantizer.model.model
    node = next(x for x in out.graph.node if x.op_type == "MatMulNBits")
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    blocks = -(-k // block_size)
    packed = inits[node.input[1]].reshape(n, blocks, -1)
    scales = inits[node.input[2]].reshape(n, blocks).astype(np.float32)
    zero = inits[node.input[3]].reshape(n, -1) if len(node.input) > 3 else None
    return NBits(bits, block_size, packed, scales, zero, None, k, n)
