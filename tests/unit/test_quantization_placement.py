"""`format = "placement"`: int8 kept where it is measured faster, fp32 elsewhere."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from compress.models import build_model
from compress.quantization import placement
from compress.quantization.auto import FP32
from compress.quantization.placement import SearchInputs, choose, int8_runs, search_placement
from compress.quantization.static import quantizable_nodes, quantize_static_onnx
from compress.recipe.schema import ResNetConfig, RuntimeConfig
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.latency import LatencyStats
from compress.runtime.onnx_export import export_onnx
from compress.stages.quantize import QuantizeStage
from compress.testing import tiny_run_context

pytestmark = pytest.mark.unit

U8S8 = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True}
RUNTIME = RuntimeConfig(threads=1, batch_size=1, warmup=5, repeats=30, rounds=5)


def _ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _row(model, median, low, drop=0.0, layers=3):
    speed = {"median": median, "min": low, "max": median + 0.05}
    return {"model": model, "speedup": speed, "val_accuracy_drop": drop, "int8_layers": layers}


def test_choose_takes_the_fastest_accurate_int8_model():
    rows = [_row("full int8", 1.6, 1.5), _row("int8 placement", 1.9, 1.8, layers=2)]
    name, why = choose(rows, drop_max=0.01)
    assert name == "int8 placement"
    assert "2 layers in int8, 1.90x (1.80-1.95)" in why


def test_choose_keeps_fp32_unless_int8_is_faster_in_every_round():
    # a median above 1 is not enough: one round was slower than fp32
    name, why = choose([_row("full int8", 1.04, 0.97)], drop_max=0.01)
    assert name == FP32
    assert "no int8 placement was faster" in why and "full int8 1.04x (0.97-1.09)" in why


def test_choose_keeps_fp32_when_int8_is_inaccurate():
    name, why = choose([_row("full int8", 2.0, 1.9, drop=0.05)], drop_max=0.01)
    assert name == FP32 and "lost more than 1.00%" in why


def test_int8_runs_split_where_the_model_computes_in_float(fp32, tmp_path):
    int8 = tmp_path / "int8.onnx"
    calibration = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    quantize_static_onnx(fp32, int8, calibration, **U8S8)

    layers, runs = int8_runs(int8)

    convs, linear = layers[:2], layers[2:]
    assert layers == quantizable_nodes(fp32) and len(layers) == 3
    # the global average pool (ReduceMean) runs in float: the classifier is its own run
    assert runs == [linear, convs]


def _int8_layers(path) -> set[str]:
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    layers = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    return {n.name for n in layers if set(n.input) & dequantized}


def test_search_keeps_a_change_only_when_it_is_faster(fp32, tmp_path, monkeypatch):
    """Timing from a cost model, so the greedy itself is checked: in int8 the second
    conv saves 3 ms, the first costs 1 ms more, the classifier 0.5 ms more."""
    first, second, linear = quantizable_nodes(fp32)
    cost = {first: -1.0, second: 3.0, linear: -0.5}  # ms saved by int8

    def fake_measure(paths, signature, runtime, **timing):
        ms = [10.0 - sum(cost[n] for n in _int8_layers(p)) for p in paths]
        return [LatencyStats("cpu", 1, 1, m, m, m, m, 0.0, 1, [m] * runtime.rounds) for m in ms]

    monkeypatch.setattr(placement, "measure_with_runtime", fake_measure)
    calibration = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    val_x = calibration[:8]
    val_y = onnx_predictions(fp32, val_x).argmax(1)

    inputs = SearchInputs(calibration, val_x, val_y, RUNTIME, (1, 8, 8), 1.0)
    report = search_placement(fp32, tmp_path / "out.onnx", inputs, U8S8)

    tried = [(trial["fp32_layers"], trial["kept"]) for trial in report["trials"]]
    # the classifier's run, the conv run whole, then its entry and exit peeled
    assert tried == [([linear], True), ([first, second], False), ([first], True),
                     ([second], False)]  # fmt: skip
    assert {row["node"]: row["placement"] for row in report["layers"]} == {
        first: "fp32", second: "int8", linear: "fp32"
    }  # fmt: skip
    assert report["format"] == "int8 placement"
    placed = next(row for row in report["models"] if row["model"] == "int8 placement")
    assert placed["speedup"]["median"] == pytest.approx(10.0 / 7.0)
    assert _int8_layers(tmp_path / "out.onnx") == {second}
    assert "ran 1.06x (1.06-1.06)" in report["layers"][2]["why"]  # 8.5 ms -> 8.0 ms


def test_tiny_net_slower_in_int8_passes_fp32_through(fp32, digits_bundle, tmp_path):
    """23,200 MACs at batch 1: Q/DQ and transposes cost more than int8 saves."""
    out = tmp_path / "placed.onnx"
    val_x, val_y = digits_bundle.val.x.numpy(), digits_bundle.val.y.numpy()
    calibration = digits_bundle.train.x[:64].numpy()

    inputs = SearchInputs(calibration, val_x, val_y, RUNTIME, (1, 8, 8), 0.01)
    report = search_placement(fp32, out, inputs, U8S8)

    full = next(row for row in report["models"] if row["model"] == "full int8")
    assert full["speedup"]["median"] < 1.0, full  # the premise: int8 is slower here
    assert report["format"] == FP32, report["reason"]
    assert "passes through" in report["reason"]
    assert not _ops(out) & {"QuantizeLinear", "DequantizeLinear"}
    np.testing.assert_array_equal(onnx_predictions(out, val_x), onnx_predictions(fp32, val_x))
    assert [row["placement"] for row in report["layers"]] == ["fp32"] * 3
    for row in report["layers"]:  # each says what was measured for it
        assert "x (" in row["why"], row


def _resnet_224() -> nn.Module:
    torch.manual_seed(0)
    config = ResNetConfig(widths=[16, 32, 64], blocks_per_stage=1, stem_stride=2)
    model = build_model(config, (3, 224, 224), 10).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.1, 0.1)
    return model


def test_resnet_at_224_keeps_int8_and_beats_fp32(tmp_path):
    shape = (3, 224, 224)
    fp32 = export_onnx(_resnet_224(), shape, tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((16, *shape)).astype(np.float32)
    val_x = rng.standard_normal((32, *shape)).astype(np.float32)
    val_y = onnx_predictions(fp32, val_x).argmax(1)  # fp32 agrees with itself: 100%
    out = tmp_path / "placed.onnx"

    inputs = SearchInputs(calibration, val_x, val_y, RUNTIME, shape, 0.1)
    report = search_placement(fp32, out, inputs, U8S8)

    assert report["format"] != FP32, report["reason"]
    shipped = next(row for row in report["models"] if row["model"] == report["format"])
    # faster than fp32 in every round (measured 1.64-2.10x here; 1.2 failed once at
    # 1.197 on a loaded machine, so the bound only asks for a clear win)
    assert shipped["speedup"]["min"] > 1.05, shipped
    int8 = [row for row in report["layers"] if row["placement"] == "int8"]
    assert len(int8) >= 0.7 * len(report["layers"]), report["layers"]
    assert "QuantizeLinear" in _ops(out)
    assert len(report["trials"]) <= 12
    assert report["fp32_val_accuracy"] == 1.0


def test_quantize_stage_with_placement_reports_every_layer(trained, digits_bundle, tmp_path):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "format": "placement", "calibration": {"samples": 64},
         "placement_repeats": 10, "placement_max_candidates": 2}
    )  # fmt: skip

    result = QuantizeStage(config, "quantize").run(ctx)

    details = result.details["quantization"]
    nodes = [row["node"] for row in details["layers"]]
    assert len(nodes) == 3 and len(details["trials"]) <= 2
    assert {row["placement"] for row in details["layers"]} <= {"int8", "fp32"}
    assert details["reason"] and 0 < details["fp32_val_accuracy"] <= 1
    for row in details["models"]:
        assert row["p50_ms"] > 0 and row["speedup"]["rounds"] == ctx.recipe.runtime.rounds
    shipped_q = "QuantizeLinear" in _ops(result.onnx_path)
    assert shipped_q == (details["format"] != FP32)
    assert (details["int8_compute_nodes"] > 0) == (details["format"] != FP32)
    assert result.model is trained  # the float model passes through unchanged


@pytest.mark.parametrize(
    "extra",
    [{"mode": "dynamic"}, {"fallback": {}}, {"exclude": ["node_linear"]}, {"method": "kmeans"}],
)
def test_placement_with_settings_it_cannot_honour_is_a_recipe_error(extra):
    with pytest.raises(ValueError, match="placement"):
        QuantizeStageConfig.model_validate({"type": "quantize", "format": "placement", **extra})


def test_placement_knobs_are_validated():
    config = QuantizeStageConfig.model_validate({"type": "quantize", "format": "placement"})
    assert (config.placement_max_candidates, config.placement_rounds) == (12, 3)
    with pytest.raises(ValueError, match="placement_candidates"):
        QuantizeStageConfig.model_validate(
            {"type": "quantize", "format": "placement", "placement_candidates": 4}
        )
