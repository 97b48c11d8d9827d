"""fp16 copies for GPU deployment keep the float32 input contract."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from compress.models import build_model
from compress.recipe.schema import CNNConfig, RuntimeConfig
from compress.runtime.fp16 import convert_to_fp16
from compress.runtime.onnx_export import export_onnx
from compress.runtime.sessions import make_session

pytestmark = pytest.mark.unit


def test_fp16_copy_halves_weights_and_keeps_float32_io(tmp_path):
    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8, 16]), (1, 8, 8), 10).eval()
    fp32 = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")

    half = convert_to_fp16(fp32, tmp_path / "m.fp16.onnx")

    graph = onnx.load(str(half)).graph
    weights = [t for t in graph.initializer if len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8), dtype=np.float32)
    out32 = make_session(fp32).run(None, {"input": x})[0]
    out16 = make_session(half).run(None, {"input": x})[0]
    assert out16.dtype == np.float32
    np.testing.assert_allclose(out16, out32, atol=5e-2, rtol=5e-2)

    def weight_bytes(path):
        return sum(len(t.raw_data) for t in onnx.load(str(path)).graph.initializer)

    assert weight_bytes(half) < 0.55 * weight_bytes(fp32)


def test_gpu_fp16_is_off_by_default():
    assert RuntimeConfig().gpu_fp16 is False
