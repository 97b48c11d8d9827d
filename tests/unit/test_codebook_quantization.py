"""Non-uniform quantization: k-means and power-of-two codebooks deployed as ONNX."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress.quantization.codebook import assign, encode_onnx, kmeans_codebook, pow2_codebook
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.evaluate import onnx_accuracy, onnx_predictions
from compress.stages.quantize import QuantizeStage
from compress.testing import tiny_run_context

pytestmark = pytest.mark.unit

INPUT_SHAPE = (1, 8, 8)


def test_kmeans_finds_the_clusters_of_clustered_weights():
    rng = np.random.default_rng(0)
    centres = np.array([-0.5, -0.1, 0.2, 0.7])
    weights = rng.choice(centres, 4000) + rng.normal(0, 0.01, 4000)

    codebook = kmeans_codebook(weights.astype(np.float32), bits=2)

    np.testing.assert_allclose(codebook, centres, atol=0.01)


def test_pow2_codebook_is_zero_and_signed_powers_of_two():
    codebook = pow2_codebook(np.array([0.9, -0.3, 0.01], dtype=np.float32), bits=3)

    assert len(codebook) == 2**3 - 1  # sign bit; one code for zero
    magnitudes = np.abs(codebook[codebook != 0])
    np.testing.assert_array_equal(np.log2(magnitudes), np.round(np.log2(magnitudes)))
    assert 0.0 in codebook and magnitudes.max() == 1.0  # 2^0 is nearest to 0.9


def test_assign_picks_the_nearest_entry():
    codebook = np.array([-1.0, 0.0, 0.5, 2.0], dtype=np.float32)
    values = np.array([-3, -0.4, 0.26, 0.24, 1.3, 9], dtype=np.float32)

    np.testing.assert_array_equal(assign(values, codebook), [0, 1, 2, 1, 3, 3])


# pow2's 16 levels sit coarsely on layers of 72 weights: its drop on this 2-epoch model
# moves with the fixture's training numerics (6.1 points after channels-last training);
# a broken encoding would lose ~80.
@pytest.mark.parametrize("method, bits, tolerance", [("kmeans", 4, 0.03), ("pow2", 4, 0.08)])
def test_codebook_onnx_runs_on_ort_small_and_close_to_fp32(
    fp32, tmp_path, digits_bundle, method, bits, tolerance
):
    out = tmp_path / f"{method}.onnx"

    info = encode_onnx(fp32, out, method, bits)

    assert info["encoded_layers"] == 3  # both convolutions and the classifier
    # 4-bit indices plus the codebooks (16 floats a layer: a lot for a 72-weight layer)
    assert 4 <= info["bits_per_weight"] < 5.5
    # the weights shrink ~6x (8x for the indices, less the codebooks); the file less,
    # as a model this small is mostly graph
    assert info["weight_bytes"] < info["weight_bytes_fp32"] / 5
    assert info["bytes"] < info["fp32_bytes"]
    fp32_accuracy = onnx_accuracy(fp32, digits_bundle.test)
    assert fp32_accuracy > 0.8
    assert abs(onnx_accuracy(out, digits_bundle.test) - fp32_accuracy) <= tolerance
    # each rebuilt weight takes at most 2^bits distinct values
    graph = onnx.load(str(out)).graph
    codebooks = [i for i in graph.initializer if i.name.endswith("_codebook")]
    assert len(codebooks) == 3
    assert all(len(numpy_helper.to_array(c)) <= 2**bits for c in codebooks)
    # and the file's batch axis still works
    assert onnx_predictions(out, digits_bundle.test.x[:7].numpy(), batch_size=7).shape == (7, 10)


def test_eight_bit_codebooks_store_one_index_per_byte(fp32, tmp_path, digits_bundle):
    out = tmp_path / "k8.onnx"
    info = encode_onnx(fp32, out, "kmeans", 8)
    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32)).graph.initializer}
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    for layer, name in enumerate(info["encoded"]):
        assert stored[f"q{layer}_indices"].dtype == np.uint8
        assert stored[f"q{layer}_indices"].size == weights[name].size
    fp32_accuracy = onnx_accuracy(fp32, digits_bundle.test)
    assert abs(onnx_accuracy(out, digits_bundle.test) - fp32_accuracy) <= 0.01


def test_quantize_stage_kmeans_reports_codebooks_and_ort_folding(tmp_path, digits_bundle, trained):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "method": "kmeans", "bits": 4,
         # exact name beats pattern beats `bits`; "skip" keeps a layer float
         "layers": {"classifier": "skip", "re:features\\..*": 2, "features.0": 8}}
    )  # fmt: skip

    result = QuantizeStage(config, "quantize").run(ctx)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    details = result.details["quantization"]
    assert details["encoded_layers"] == 2
    assert details["kept_float"] == ["classifier.weight"]
    assert details["bits"] == 4  # the default; the layers' own:
    assert details["layer_bits"] == {"features.0.weight": 8, "features.4.weight": 2}
    # ORT's optimizer turns the constant codebook subgraphs back into plain weights
    assert details["folded_by_runtime"] is True
    assert "Gather" not in details["ops"]


@pytest.mark.parametrize("layers", [{"features.99": "skip"}, {"re:head\\..*": 4}])
def test_quantize_stage_rejects_layer_names_that_match_nothing(
    tmp_path, digits_bundle, trained, layers
):
    from compress.errors import RecipeError

    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "method": "pow2", "layers": layers}
    )
    with pytest.raises(RecipeError, match="layers"):
        QuantizeStage(config, "quantize").run(ctx)


def test_per_layer_precedence_exact_then_first_pattern_then_default():
    from compress.quantization.layers import resolve_per_layer

    names = ["features.0", "features.4", "head.1", "classifier"]
    overrides = {"re:features\\..*": 2, "re:.*\\.1": 3, "features.4": 8, "re:head.*": 5}
    assert resolve_per_layer(names, overrides, 4, "layers") == {
        "features.0": 2, "features.4": 8, "head.1": 3, "classifier": 4,
    }  # fmt: skip


class _MeanSplit(torch.nn.Module):
    """A conv, a spatial mean and a channel split: ReduceMean and Split, whose inputs
    moved between opset 13 and 18 (axes became an input, Split gained num_outputs)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 10)

    def forward(self, x):
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3))
        first, second = pooled.split([4, 4], dim=1)
        return self.head(torch.cat([second, first * 2], dim=1))


def opset13_onnx(path) -> None:
    """An opset-13 file as another exporter writes it (ReduceMean with an `axes`
    attribute, Split with a `split` input)."""
    torch.manual_seed(0)
    torch.onnx.export(
        _MeanSplit().eval(), (torch.zeros(1, 1, 8, 8),), str(path), input_names=["x"],
        dynamic_axes={"x": {0: "n"}}, opset_version=13, dynamo=False,
    )  # fmt: skip


def test_an_opset_13_file_with_reduce_mean_and_split_is_converted_not_relabelled(tmp_path):
    source, out = tmp_path / "opset13.onnx", tmp_path / "kmeans.onnx"
    opset13_onnx(source)
    ops = {node.op_type: node for node in onnx.load(str(source)).graph.node}
    assert [a.name for a in ops["ReduceMean"].attribute if a.name == "axes"] == ["axes"]
    assert "Split" in ops

    info = encode_onnx(source, out, "kmeans", 8)

    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)  # every node valid at the new opset
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [18]
    (mean,) = [node for node in model.graph.node if node.op_type == "ReduceMean"]
    assert not [a for a in mean.attribute if a.name == "axes"] and len(mean.input) == 2
    assert info["encoded_layers"] == 2  # the conv and the head
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    expected = onnx_predictions(source, x)
    got = onnx_predictions(out, x)
    assert got.shape == (5, 10)
    # 8-bit codebooks: the outputs move by the weights' rounding only
    np.testing.assert_allclose(got, expected, atol=0.05)
