"""Accuracy-aware fallback and dynamic int8: measured sensitivity, restored budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.models import build_model
from compress.quantization.static import quantizable_nodes, quantize_static_onnx
from compress.recipe.schema import MLPConfig, TrainingConfig
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.evaluate import onnx_accuracy
from compress.runtime.onnx_export import export_onnx
from compress.stages.quantize import QuantizeStage
from compress.testing import tiny_run_context
from compress.training import fit

pytestmark = pytest.mark.unit

INPUT_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def sensitive(digits_bundle):
    """An MLP whose hidden activation has one unit 1000x larger than the rest.

    The unit's incoming weights are scaled up and its outgoing weights down by the
    same factor: the float model computes the same function (ReLU is positively
    homogeneous), but a per-tensor int8 range for that activation is now set by one
    unit, and the classifier that reads it loses everything else.
    """
    torch.manual_seed(0)
    model = build_model(MLPConfig(hidden=[64, 32]), INPUT_SHAPE, 10)
    config = TrainingConfig(epochs=4, batch_size=32, optimizer={"name": "adam", "lr": 0.01})
    fit(model, digits_bundle, config, seed=0)
    hidden, reader = model.body[1], model.body[3]  # Flatten, Linear, ReLU, Linear, ReLU
    with torch.no_grad():
        activity = torch.relu(hidden(digits_bundle.val.x.flatten(1))).mean(0)
        unit = int(activity.argmax())
        hidden.weight[unit] *= 1000
        hidden.bias[unit] *= 1000
        reader.weight[:, unit] /= 1000
    return model.eval()


@pytest.fixture(scope="module")
def fp32(sensitive, tmp_path_factory):
    return export_onnx(sensitive, INPUT_SHAPE, tmp_path_factory.mktemp("fp32") / "fp32.onnx")


def _plain_mlp(data):
    """An MLP [64] trained 3 epochs on digits, with no outlier: int8 suits it."""
    torch.manual_seed(0)
    model = build_model(MLPConfig(hidden=[64]), INPUT_SHAPE, 10)
    config = TrainingConfig(epochs=3, batch_size=32, optimizer={"name": "adam", "lr": 0.01})
    fit(model, data, config, seed=0)
    return model.eval()


def test_the_outlier_unit_breaks_plain_int8(fp32, digits_bundle, tmp_path):
    int8 = tmp_path / "int8.onnx"
    quantize_static_onnx(fp32, int8, digits_bundle.train.x[:256].numpy())

    fp32_accuracy = onnx_accuracy(fp32, digits_bundle.test)
    assert fp32_accuracy > 0.85
    assert onnx_accuracy(int8, digits_bundle.test) < fp32_accuracy - 0.1


def test_fallback_returns_the_sensitive_layer_to_float_and_restores_accuracy(
    fp32, sensitive, digits_bundle, tmp_path
):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=sensitive)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "calibration": {"samples": 256},
         "fallback": {"val_accuracy_drop_max": 0.02}}
    )  # fmt: skip

    result = QuantizeStage(config, "quantize").run(ctx)

    fallback = result.details["quantization"]["fallback"]
    # the layer writing the outlier activation and the one reading it (QDQ quantizes
    # a Gemm's output as well as its input); the classifier after them is harmless
    writer, reader, classifier = quantizable_nodes(fp32)
    assert fallback["needed"] and fallback["met"]
    assert {row["node"] for row in fallback["sensitivity"][:2]} == {writer, reader}
    assert fallback["sensitivity"][-1]["node"] == classifier
    assert set(fallback["float_layers"]) <= {writer, reader}
    assert fallback["int8_val_accuracy"] < fallback["fp32_val_accuracy"] - 0.1
    assert fallback["final_val_accuracy"] >= fallback["fp32_val_accuracy"] - 0.02
    assert result.details["quantization"]["float_nodes"] == fallback["float_layers"]
    # on the test split too, and the classifier still computes in int8
    assert onnx_accuracy(result.onnx_path, digits_bundle.test) >= (
        onnx_accuracy(fp32, digits_bundle.test) - 0.03
    )
    assert result.details["quantization"]["int8_compute_nodes"] >= 1


def test_fallback_is_not_run_when_int8_already_meets_the_budget(digits_bundle, tmp_path):
    model = _plain_mlp(digits_bundle)
    ctx = tiny_run_context(tmp_path, digits_bundle, model=model)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "fallback": {"val_accuracy_drop_max": 0.05}}
    )
    fallback = QuantizeStage(config, "quantize").run(ctx).details["quantization"]["fallback"]
    assert fallback["needed"] is False and fallback["float_layers"] == []


def test_dynamic_mode_quantizes_matmuls_and_stays_accurate(sensitive, digits_bundle, tmp_path):
    model = _plain_mlp(digits_bundle)
    ctx = tiny_run_context(tmp_path, digits_bundle, model=model)
    config = QuantizeStageConfig.model_validate({"type": "quantize", "mode": "dynamic"})

    result = QuantizeStage(config, "quantize").run(ctx)

    details = result.details["quantization"]
    assert details["format"].startswith("dynamic")
    assert details["int8_compute_nodes"] >= 1  # MatMulInteger / DynamicQuantizeMatMul
    fp32 = export_onnx(model, INPUT_SHAPE, tmp_path / "fp32.onnx")
    assert abs(onnx_accuracy(result.onnx_path, digits_bundle.test)
               - onnx_accuracy(fp32, digits_bundle.test)) <= 0.03  # fmt: skip


def test_fallback_with_dynamic_mode_is_a_recipe_error():
    with pytest.raises(ValueError, match="static"):
        QuantizeStageConfig.model_validate({"type": "quantize", "mode": "dynamic", "fallback": {}})


def test_sensitivity_ranking_is_reproducible(fp32, digits_bundle):
    from compress.quantization.fallback import rank_layers

    settings = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True,
                "calibration": None}  # fmt: skip
    x = digits_bundle.val.x[:200].numpy()
    calibration = digits_bundle.train.x[:128].numpy()
    first = rank_layers(fp32, calibration, x, settings)
    second = rank_layers(fp32, calibration, x, settings)
    assert [r["node"] for r in first] == [r["node"] for r in second]
    assert np.isclose(first[0]["logit_mse"], second[0]["logit_mse"])


def test_exclude_takes_exact_node_names_and_patterns(fp32, sensitive, digits_bundle, tmp_path):
    from compress.errors import RecipeError

    writer, reader, classifier = quantizable_nodes(fp32)
    ctx = tiny_run_context(tmp_path / "a", digits_bundle, model=sensitive)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "exclude": [writer, f"re:{reader}"]}
    )
    details = QuantizeStage(config, "quantize").run(ctx).details["quantization"]
    assert details["float_nodes"] == [writer, reader]
    assert details["ops"].get("QGemm", 0) == 1  # only the classifier is int8

    ctx = tiny_run_context(tmp_path / "b", digits_bundle, model=sensitive)
    config = QuantizeStageConfig.model_validate({"type": "quantize", "exclude": ["no_such_node"]})
    with pytest.raises(RecipeError, match="no_such_node"):
        QuantizeStage(config, "quantize").run(ctx)


def test_int4_mode_stores_transformer_matmuls_in_4_bits(digits_bundle, tmp_path):
    from compress.recipe.schema import TransformerConfig

    torch.manual_seed(0)
    config = TransformerConfig(patch_size=2, embed_dim=32, num_heads=2, depth=1)
    model = build_model(config, INPUT_SHAPE, 10)
    fit(model, digits_bundle, TrainingConfig(epochs=3, batch_size=32,
        optimizer={"name": "adam", "lr": 0.003}), seed=0)  # fmt: skip
    ctx = tiny_run_context(tmp_path, digits_bundle, model=model.eval())
    stage = QuantizeStageConfig.model_validate({"type": "quantize", "mode": "int4"})

    result = QuantizeStage(stage, "quantize").run(ctx)

    details = result.details["quantization"]
    assert details["int4_matmuls"] >= 4  # qkv, proj, fc1, fc2
    assert details["ops"].get("MatMulNBits", 0) >= 4  # and ORT runs them as such
    fp32 = export_onnx(model, INPUT_SHAPE, tmp_path / "fp32.onnx")
    assert result.onnx_path.stat().st_size < fp32.stat().st_size
    assert abs(onnx_accuracy(result.onnx_path, digits_bundle.test)
               - onnx_accuracy(fp32, digits_bundle.test)) <= 0.05  # fmt: skip


def test_int4_mode_on_a_model_without_matmuls_says_so(tmp_path):
    from compress.errors import StageError

    ctx = tiny_run_context(tmp_path)
    stage = QuantizeStageConfig.model_validate({"type": "quantize", "mode": "int4"})
    with pytest.raises(StageError, match="MatMul"):
        QuantizeStage(stage, "quantize").run(ctx)
