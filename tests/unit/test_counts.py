"""MACs for any module (subclassed convolutions, fused attention, BERT), equal to the
ONNX graph's count, and the report's warning when the two disagree."""

from __future__ import annotations

import pytest
from torch import nn

from compress.models.onnx_file import count_onnx_macs
from compress.models.signature import InputSignature, as_signature
from compress.models.stats import compare_macs, count_macs
from compress.pipeline.measure import count_warnings
from compress.runtime.onnx_export import export_onnx
from compress.testing.tf_style import Conv2dSame, tf_style_cnn

pytestmark = pytest.mark.unit


def test_a_conv2d_subclass_with_its_own_forward_is_counted():
    conv = Conv2dSame(3, 8, 3, stride=2)  # 16x16 -> 8x8, "same" padding in forward

    assert count_macs(conv, (3, 16, 16)) == (8 * 8 * 8) * (3 * 3 * 3)


def test_the_tf_style_cnn_is_counted_layer_by_layer():
    model = tf_style_cnn(10, (1, 8, 8), widths=(16, 32))

    stem = (16 * 8 * 8) * (1 * 9)
    depthwise = (16 * 4 * 4) * 9  # stride 2, one input channel per group
    pointwise = (32 * 4 * 4) * 16
    classifier = 32 * 10
    assert count_macs(model, (1, 8, 8)) == stem + depthwise + pointwise + classifier


def test_fused_attention_fast_path_is_counted_with_its_scores():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    tokens = 5

    linears = tokens * (3 * 16 * 16 + 16 * 16 + 16 * 32 + 32 * 16)
    scores = 2 * tokens * tokens * 16  # q @ k^T and weights @ v
    assert count_macs(layer, (tokens, 16)) == linears + scores


@pytest.mark.parametrize(
    ("model", "shape"),
    [
        (tf_style_cnn(10, (3, 16, 16), widths=(8, 16, 32)), (3, 16, 16)),
        (nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), (5, 16)),
    ],
    ids=["tf-style-cnn", "transformer-layer"],
)
def test_torch_and_onnx_counts_agree(tmp_path, model, shape):
    path = export_onnx(model.eval(), shape, tmp_path / "m.onnx")

    assert count_onnx_macs(path, as_signature(shape)) == count_macs(model, shape)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_tiny_bert_counts_its_attention_scores_on_both_sides(tmp_path, attention):
    pytest.importorskip("transformers")
    from compress.models import new_model
    from compress.models.families.hf_encoder import HFEncoderConfig
    from compress.models.family import resolve_model_config
    from compress.testing.text import tiny_bert_folder

    folder = tiny_bert_folder(tmp_path / "bert", num_hidden_layers=2)
    config = resolve_model_config(HFEncoderConfig(path=str(folder), attention=attention))
    model, spec = new_model(config, (16,), 2, InputSignature.text(64))
    path = export_onnx(model, spec.signature, tmp_path / "bert.onnx")

    torch_macs = count_macs(model, spec.signature)
    onnx_macs = count_onnx_macs(path, spec.signature)

    scores = 2 * 2 * 12 * 12 * 32  # layers x (q @ k^T, weights @ v) x tokens^2 x hidden
    assert torch_macs == onnx_macs
    assert torch_macs > scores and compare_macs(torch_macs, onnx_macs) is None


def test_counts_apart_by_more_than_2_percent_are_a_warning():
    assert compare_macs(1000, 1020) is None
    assert count_warnings({"macs": 1000, "macs_onnx": 1019}) == []
    assert count_warnings({"macs": 2_560, "macs_onnx": 100_000_000}) == [
        "MACs: torch counts 2,560, the ONNX graph 100,000,000 (3906150.0% apart, more than 2%)"
        "; the report shows torch's count"
    ]
    assert count_warnings({"macs": 1000}) == []  # a quantized graph is not compared
