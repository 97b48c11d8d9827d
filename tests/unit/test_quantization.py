"""Static int8 quantization on ONNX Runtime: QDQ u8s8, int8 kernels, accuracy, calibration."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from pydantic import ValidationError

from compress.quantization.static import count_runtime_ops, quantize_static_onnx
from compress.recipe.stages import CalibrationConfig, QuantizeStageConfig
from compress.runtime.evaluate import onnx_accuracy
from compress.stages.quantize import QuantizeStage
from compress.testing import tiny_run_context

pytestmark = pytest.mark.unit

INPUT_SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def calibration_x(digits_bundle) -> np.ndarray:
    return digits_bundle.train.x[:256].numpy()


@pytest.fixture(scope="module")
def int8(fp32, calibration_x, tmp_path_factory):
    """(path, settings) of the fp32 model quantized with the defaults (min-max)."""
    path = tmp_path_factory.mktemp("int8") / "int8.onnx"
    settings = quantize_static_onnx(fp32, path, calibration_x)
    return path, settings


def _scales(path) -> dict[str, np.ndarray]:
    graph = onnx.load(str(path)).graph
    return {
        init.name: numpy_helper.to_array(init)
        for init in graph.initializer
        if init.name.endswith("_scale")
    }


def test_default_settings_are_qdq_u8s8_per_channel(int8, calibration_x):
    _, settings = int8

    assert settings["format"] == "QDQ"
    assert settings["scheme"] == "u8s8"
    assert (settings["activation_type"], settings["weight_type"]) == ("uint8", "int8")
    assert settings["per_channel"] is True
    assert settings["calibration"]["method"] == "minmax"
    assert settings["calibration_samples"] == len(calibration_x) == 256
    assert settings["preprocessed"] is True


def test_int8_model_computes_in_int8_on_ort(int8, fp32):
    path, _ = int8

    quantized, dense = count_runtime_ops(path), count_runtime_ops(fp32)

    assert quantized["ops"].get("QLinearConv") == 2  # both convolutions
    assert quantized["int8_compute_nodes"] >= 3  # 2 convs + the classifier
    assert quantized["float_compute_nodes"] == 0
    assert dense["int8_compute_nodes"] == 0  # the counter tells the two apart
    assert dense["float_compute_nodes"] >= 3


def test_qdq_graph_stores_int8_weights(int8):
    path, _ = int8
    graph = onnx.load(str(path)).graph

    ops = {node.op_type for node in graph.node}
    weights = [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT8]

    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert len(weights) >= 3  # two conv kernels and the classifier, signed


def test_int8_accuracy_is_within_3_points_of_fp32(int8, fp32, digits_bundle):
    path, _ = int8

    fp32_accuracy = onnx_accuracy(fp32, digits_bundle.test)
    int8_accuracy = onnx_accuracy(path, digits_bundle.test)

    assert fp32_accuracy > 0.8  # a trained model, so the comparison means something
    assert abs(int8_accuracy - fp32_accuracy) <= 0.03


def test_percentile_calibration_changes_activation_scales(int8, fp32, calibration_x, tmp_path):
    minmax_path, _ = int8
    path = tmp_path / "percentile.onnx"

    settings = quantize_static_onnx(
        fp32,
        path,
        calibration_x,
        calibration=CalibrationConfig(method="percentile", percentile=99.9),
    )

    minmax, percentile = _scales(minmax_path), _scales(path)
    assert settings["calibration"]["method"] == "percentile"
    assert settings["calibration"]["percentile"] == 99.9
    assert sorted(minmax) == sorted(percentile)
    changed = [k for k in minmax if not np.array_equal(minmax[k], percentile[k])]
    assert changed  # some activation range differs
    # clipping outliers only narrows ranges: no scale grows
    assert all(np.all(percentile[k] <= minmax[k] * (1 + 1e-6)) for k in changed)


def test_entropy_calibration_is_refused_rather_than_silently_minmax():
    # ORT's quantize_static does not pass the entropy calibrator's bin settings through
    # and returns exactly the min-max ranges (FIELD-NOTES.md): refuse it, loudly.
    with pytest.raises(ValidationError, match="minmax"):
        CalibrationConfig(method="entropy")


def test_signed_activations_are_s8s8(fp32, calibration_x, tmp_path):
    settings = quantize_static_onnx(
        fp32, tmp_path / "s8.onnx", calibration_x[:32], activation_type="int8"
    )

    assert settings["scheme"] == "s8s8"
    assert settings["calibration_samples"] == 32
    inputs = onnx.load(str(tmp_path / "s8.onnx")).graph.initializer
    zero_points = [i for i in inputs if i.name == "input_zero_point"]
    assert [z.data_type for z in zero_points] == [onnx.TensorProto.INT8]


def test_quantize_stage_writes_the_int8_model_and_reports_it(
    tmp_path, digits_bundle, trained, fp32
):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "calibration": {"samples": 64}}
    )

    result = QuantizeStage(config, "quantize").run(ctx)

    assert result.onnx_path == tmp_path / "model.onnx"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # fp32 removed
    assert result.model is trained and result.spec is ctx.spec  # float model passes through
    quantization = result.details["quantization"]
    assert quantization["scheme"] == "u8s8"
    assert quantization["calibration_samples"] == 64
    assert quantization["int8_compute_nodes"] > 0
    assert quantization["ops"]["QLinearConv"] == 2
    int8_accuracy = onnx_accuracy(result.onnx_path, digits_bundle.test)
    assert abs(int8_accuracy - onnx_accuracy(fp32, digits_bundle.test)) <= 0.03


@pytest.mark.parametrize(
    "method",
    ["minmax", "percentile"],
)
def test_quantization_prints_nothing(fp32, calibration_x, tmp_path, capfd, method):
    quantize_static_onnx(
        fp32, tmp_path / "q.onnx", calibration_x[:32], calibration=CalibrationConfig(method=method)
    )

    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("", "")


@pytest.mark.parametrize(
    ("saturates", "setting", "expected"),
    [(True, "auto", True), (False, "auto", False), (True, False, False)],
)
def test_reduce_range_auto_turns_on_7_bit_weights_where_int8_saturates(
    tmp_path, digits_bundle, trained, monkeypatch, saturates, setting, expected
):
    from compress.stages.quantize_methods import base as stage_module

    monkeypatch.setattr(stage_module, "int8_saturates", lambda: saturates)
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "calibration": {"samples": 32}, "reduce_range": setting}
    )

    result = QuantizeStage(config, "quantize").run(ctx)

    assert result.details["quantization"]["reduce_range"] is expected
    weights = [
        numpy_helper.to_array(init)
        for init in onnx.load(str(result.onnx_path)).graph.initializer
        if init.name.endswith("weight_quantized")
    ]
    assert weights and max(int(np.abs(w).max()) for w in weights) == (64 if expected else 127)
