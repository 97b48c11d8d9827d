"""ONNX export, parity, latency measurement and speed-up ratios on ONNX Runtime."""

from __future__ import annotations

import copy
import math
import statistics

import numpy as np
import pytest
import torch

from compress.errors import StageError, UsageError
from compress.runtime.evaluate import onnx_accuracy, onnx_predictions
from compress.runtime.latency import LatencyStats, measure_latency, speedup
from compress.runtime.onnx_export import INPUT_NAME, OUTPUT_NAME, check_parity, export_onnx
from compress.runtime.sessions import available_providers, check_providers, make_session
from compress.testing import TinyCNN, TinyResNet, tiny_bundle

pytestmark = pytest.mark.unit

SHAPE = TinyCNN.input_shape


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Non-default BatchNorm statistics, so a parity check has something to catch."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A TinyCNN and its ONNX export (exporting takes seconds: do it once per module)."""
    torch.manual_seed(0)
    model = _trained_like(TinyCNN(num_classes=3))
    path = export_onnx(model, SHAPE, tmp_path_factory.mktemp("onnx") / "tiny.onnx")
    return model, path


def test_export_writes_one_self_contained_file(exported):
    _, path = exported

    assert path.is_file() and path.stat().st_size > 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.onnx"]  # no .onnx.data


@pytest.mark.parametrize("batch", [1, 7])
def test_exported_model_accepts_any_batch_size(exported, batch):
    model, path = exported
    session = make_session(path)
    x = torch.randn(batch, *SHAPE, generator=torch.Generator().manual_seed(batch))

    (logits,) = session.run(None, {INPUT_NAME: x.numpy()})

    assert logits.shape == (batch, 3)
    with torch.no_grad():
        assert np.allclose(logits, model(x).numpy(), atol=1e-5)


def test_exported_model_names_its_input_and_output(exported):
    session = make_session(exported[1])

    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [OUTPUT_NAME]
    assert session.get_inputs()[0].shape[1:] == list(SHAPE)


def test_parity_passes_for_the_exported_model(exported):
    model, path = exported

    report = check_parity(model, path, SHAPE, [1, 7], atol=1e-4, rtol=1e-3)

    assert set(report) == {"batch_1_max_abs_diff", "batch_7_max_abs_diff"}
    assert all(0 <= diff < 1e-4 for diff in report.values())


def test_parity_catches_a_model_changed_after_export(exported):
    model, path = exported
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.classifier.bias[1] += 0.01

    with pytest.raises(StageError) as info:
        check_parity(changed, path, SHAPE, [1, 7], atol=1e-4, rtol=1e-3)

    assert str(info.value).startswith(
        "ONNX/torch parity failed at batch size 1: max |diff| = 0.01 exceeds atol 0.0001"
    )


def test_parity_catches_a_wrong_output_shape(exported):
    _, path = exported
    wider = TinyCNN(num_classes=4).eval()

    with pytest.raises(StageError) as info:
        check_parity(wider, path, SHAPE, [1, 7], atol=1e-4, rtol=1e-3)

    assert str(info.value) == "ONNX output shape (1, 3) != torch (1, 4) at batch size 1"


def test_export_and_parity_of_a_residual_model(tmp_path):
    model = _trained_like(TinyResNet(num_classes=5))

    path = export_onnx(model, SHAPE, tmp_path / "res.onnx")
    report = check_parity(model, path, SHAPE, [1, 7], atol=1e-4, rtol=1e-3)

    assert max(report.values()) < 1e-4


class _NoOnnxOp(torch.nn.Module):
    """kthvalue has no ONNX translation in the dynamo exporter."""

    def forward(self, x):
        return torch.kthvalue(x.flatten(1), 3, dim=1).values


@pytest.fixture(scope="module")
def export_failure(tmp_path_factory):
    target = tmp_path_factory.mktemp("fail") / "bad.onnx"
    with pytest.raises(StageError) as info:
        export_onnx(_NoOnnxOp(), SHAPE, target)
    return str(info.value), target


def test_export_failure_is_a_stage_error_and_leaves_no_file(export_failure):
    message, target = export_failure

    assert message.startswith("ONNX export failed: ")
    assert message.endswith("(run with --debug for the exporter's output)")
    assert list(target.parent.iterdir()) == []


def test_export_failure_message_has_no_terminal_escape_codes(export_failure):
    message, _ = export_failure

    assert "\x1b[" not in message


def test_export_failure_names_the_unsupported_operator(export_failure):
    message, _ = export_failure

    assert "kthvalue" in message


def test_onnx_accuracy_equals_torch_accuracy(exported):
    model, path = exported
    split = tiny_bundle().test

    accuracy = onnx_accuracy(path, split)

    with torch.no_grad():
        torch_predictions = model(split.x).argmax(1).numpy()
    onnx_predicted = onnx_predictions(path, split.x.numpy()).argmax(1)
    assert np.array_equal(onnx_predicted, torch_predictions)
    assert accuracy == float(np.mean(torch_predictions == split.y.numpy()))


def test_onnx_predictions_batches_the_input(exported):
    model, path = exported
    x = torch.randn(10, *SHAPE, generator=torch.Generator().manual_seed(3))

    logits = onnx_predictions(path, x.numpy(), batch_size=3)

    assert logits.shape == (10, 3)
    with torch.no_grad():
        assert np.allclose(logits, model(x).numpy(), atol=1e-5)


# --------------------------------------------------------------------------- latency


def test_measure_latency_counts_every_run(exported):
    _, path = exported

    stats = measure_latency(
        [path, path], SHAPE, threads=1, batch_size=2, warmup=1, repeats=4, rounds=3
    )

    assert len(stats) == 2
    for s in stats:
        assert (s.provider, s.threads, s.batch_size) == ("cpu", 1, 2)
        assert s.n == 4 * 3
        assert len(s.round_p50_ms) == 3
        assert 0 < s.p50_ms <= s.p90_ms <= s.p99_ms
        assert min(s.round_p50_ms) > 0
        assert s.std_ms >= 0 and s.mean_ms > 0


def test_latency_stats_serialise(exported):
    (stats,) = measure_latency([exported[1]], SHAPE, warmup=0, repeats=2, rounds=1)

    data = stats.to_dict()

    assert set(data) == {
        "provider",
        "threads",
        "batch_size",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "mean_ms",
        "std_ms",
        "n",
        "round_p50_ms",
        "percentiles",
        "other_load",
        "disturbed_rounds",
        "throughput",
        "throughput_rounds",
    }
    assert data["throughput"] == pytest.approx(stats.batch_size * 1000 / stats.p50_ms)
    assert data["n"] == 2


def _stats(round_p50: list[float]) -> LatencyStats:
    p50 = statistics.median(round_p50)
    return LatencyStats("cpu", 1, 1, p50, p50, p50, p50, 0.0, 10 * len(round_p50), round_p50)


def test_speedup_is_the_median_of_per_round_ratios():
    baseline, candidate = _stats([2.0, 4.0, 6.0]), _stats([1.0, 1.0, 2.0])

    result = speedup(baseline, candidate)

    assert result == {"median": 3.0, "min": 2.0, "max": 4.0, "rounds": 3}


def test_speedup_is_not_the_ratio_of_medians():
    baseline, candidate = _stats([1.0, 10.0, 100.0]), _stats([1.0, 1.0, 100.0])

    result = speedup(baseline, candidate)

    assert baseline.p50_ms / candidate.p50_ms == 10.0
    assert result["median"] == 1.0  # per-round ratios 1, 10, 1


def test_speedup_with_an_even_number_of_rounds():
    result = speedup(_stats([2.0, 3.0, 8.0, 10.0]), _stats([1.0, 1.0, 2.0, 2.0]))

    assert result["median"] == 3.5  # ratios 2, 3, 4, 5
    assert result["rounds"] == 4


def test_speedup_skips_zero_rounds_and_reports_nan_without_any():
    partial = speedup(_stats([2.0, 3.0]), _stats([0.0, 1.0]))
    empty = speedup(_stats([2.0]), _stats([0.0]))

    assert partial == {"median": 3.0, "min": 3.0, "max": 3.0, "rounds": 1}
    assert math.isnan(empty["median"]) and empty["rounds"] == 0


# --------------------------------------------------------------------------- providers


def test_available_providers_names_what_onnxruntime_offers_in_recipe_terms(monkeypatch):
    # (replaces "onnxruntime ships a CPU provider", a fact about onnxruntime) the
    # mapping from ORT's names to the recipe's, unknown providers left out
    import onnxruntime as ort

    offered = ["TensorrtExecutionProvider", "OpenVINOExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: offered)

    assert available_providers() == ["cpu", "tensorrt"]
    assert check_providers(["cpu", "tensorrt"]) == {}
    missing = check_providers(["cpu", "cuda"], optional=["cuda"])
    assert list(missing) == ["cuda"] and "onnxruntime-gpu" in missing["cuda"]


@pytest.mark.skipif("cuda" in available_providers(), reason="this onnxruntime has CUDA")
def test_missing_cuda_provider_says_what_to_install():
    with pytest.raises(UsageError) as info:
        check_providers(["cpu", "cuda"])

    message = str(info.value)
    assert message.startswith("runtime.providers asks for cuda, which this onnxruntime build")
    assert "onnxruntime-gpu" in message
    assert info.value.exit_code == 2
