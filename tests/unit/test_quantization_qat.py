"""Quantization-aware training: fake quantization where ORT quantizes, learned scales
carried into the QDQ model ORT runs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from compress.quantization.qat import (
    ActivationFakeQuant,
    WeightFakeQuant,
    activation_qparams,
    attach,
    match_points,
    round_ste,
    shared_qparams,
)
from compress.quantization.static import quantize_static_onnx
from compress.recipe.schema import TrainingConfig
from compress.recipe.stages import QuantizeStageConfig
from compress.runtime.evaluate import onnx_accuracy
from compress.runtime.onnx_export import export_onnx
from compress.stages.quantize import QuantizeStage
from compress.testing import tiny_run_context
from compress.training import fit

QAT_ONE_EPOCH = {
    "type": "quantize",
    "mode": "qat",
    "calibration": {"samples": 64},
    "qat": {"epochs": 1, "batch_size": 32},
}


def _onnx_logits(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_straight_through_rounding_passes_gradients_unchanged():
    x = torch.tensor([0.2, 1.7, -2.5], requires_grad=True)
    y = round_ste(x)
    y.sum().backward()
    assert y.tolist() == [0.0, 2.0, -2.0]
    assert x.grad.tolist() == [1.0, 1.0, 1.0]


def test_activation_fake_quant_is_on_the_grid_and_learns_its_scale():
    quant = ActivationFakeQuant(scale=0.1, zero_point=10, dtype="uint8")
    x = torch.linspace(-3, 30, 200, requires_grad=True)
    y = quant(x)
    assert torch.allclose((y / 0.1 + 10).round(), y / 0.1 + 10, atol=1e-4)  # on the grid
    assert y.min().item() == pytest.approx(-1.0) and y.max().item() == pytest.approx(24.5)
    y.sum().backward()
    assert quant.scale.grad is not None and quant.scale.grad.abs() > 0
    assert x.grad[x.detach() > 24.6].abs().max() == 0  # clipped inputs get no gradient
    assert torch.all(x.grad[(x.detach() > -0.9) & (x.detach() < 24.4)] == 1)  # others pass


def test_weight_fake_quant_is_ort_symmetric_per_channel_int8():
    weight = torch.randn(4, 3, 3, 3)
    quantized = WeightFakeQuant()(weight)
    for channel in range(4):
        scale = weight[channel].abs().max() / 127
        levels = quantized[channel] / scale
        assert torch.allclose(levels, levels.round(), atol=1e-3)
        assert levels.abs().max() == pytest.approx(127, abs=1e-3)
    # commutes with folding BatchNorm: per-channel scaling moves the grid along
    factors = torch.tensor([0.5, -2.0, 3.0, 1.0]).view(4, 1, 1, 1)
    assert torch.allclose(WeightFakeQuant()(weight * factors), quantized * factors, atol=1e-5)


@pytest.mark.parametrize(
    ("machine", "flags", "saturates"),
    [
        ("x86_64", "fma avx2", True),
        ("x86_64", "avx2 avx512f avx512_vnni", False),
        ("x86_64", "avx2 avx_vnni", False),
        ("aarch64", "", False),
    ],
)
def test_reduce_range_auto_follows_the_cpu(monkeypatch, machine, flags, saturates):
    from compress.runtime import machine as host

    monkeypatch.setattr(host.platform, "machine", lambda: machine)
    monkeypatch.setattr(host, "_cpuinfo", lambda: {"flags": flags})

    assert host.int8_saturates() is saturates


def test_maxpool_output_shares_its_input_scale(fp32, digits_bundle, tmp_path):
    calibrated = tmp_path / "calibrated.onnx"
    quantize_static_onnx(fp32, calibrated, digits_bundle.train.x[:64].numpy())

    ties = shared_qparams(calibrated)

    assert ties == {"max_pool2d": "relu", "max_pool2d_1": "relu_1"}


def _prepare(model, fp32_path, x, tmp_path):
    # 7-bit weights: ORT's u8s8 is then exact int8 arithmetic on every CPU (without
    # VNNI, 8-bit weights can saturate int16 sums and ORT departs from the math)
    calibrated = tmp_path / "calibrated.onnx"
    quantize_static_onnx(fp32_path, calibrated, x, reduce_range=True)
    qparams = activation_qparams(calibrated)
    points, unmatched = match_points(model, fp32_path, list(qparams), x[:16])
    return qparams, points, unmatched, shared_qparams(calibrated)


def test_every_quantized_tensor_of_a_cnn_is_found_in_torch(trained, fp32, digits_bundle, tmp_path):
    x = digits_bundle.train.x[:64].numpy()

    qparams, points, unmatched, _ = _prepare(trained, fp32, x, tmp_path)

    assert unmatched == []
    assert points["input"] == ("", -1)
    assert points["relu"] == ("features.2", 0)  # the first conv's ReLU module
    assert points["logits_QuantizeLinear_Input"] == ("classifier", 0)
    assert set(points) == set(qparams)


def test_exported_qdq_model_carries_the_learned_scales(trained, fp32, digits_bundle, tmp_path):
    """The ORT model computes what the fake-quant torch model computes, with the
    learned scales: moved scales must move the ONNX model the same way."""
    x = digits_bundle.train.x[:64].numpy()
    test_x = digits_bundle.test.x.numpy()
    qparams, points, _, ties = _prepare(trained, fp32, x, tmp_path)
    model = copy.deepcopy(trained)
    fake = attach(model, points, qparams, ties, reduce_range=True)
    with torch.no_grad():  # stand-in for training: every scale moved by 1.3-1.6x
        for index, quant in enumerate(fake.model._qat_fake_quants.values()):
            quant.scale.mul_(1.3 + 0.1 * (index % 4))
    model.eval()
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(test_x)).numpy()
    learned = fake.learned()
    fake.detach()
    fixed = {qparams[name]["tensor"]: value for name, value in learned.items()}
    learned_path = tmp_path / "learned.onnx"
    quantize_static_onnx(fp32, learned_path, x, fixed_qparams=fixed, reduce_range=True)
    calibrated_path = tmp_path / "calibrated.onnx"

    onnx_learned = _onnx_logits(learned_path, test_x)
    onnx_calibrated = _onnx_logits(calibrated_path, test_x)

    assert activation_qparams(learned_path)["relu"]["scale"] == pytest.approx(learned["relu"][0])
    error_learned = np.abs(onnx_learned - torch_logits).mean()
    error_calibrated = np.abs(onnx_calibrated - torch_logits).mean()
    # the same arithmetic, to float rounding (measured 0.0013 vs 0.027)
    assert error_learned < 0.004 and error_learned < error_calibrated / 8
    assert (onnx_learned.argmax(1) == torch_logits.argmax(1)).mean() >= 0.99


def test_detach_leaves_the_plain_float_model(trained):
    model = copy.deepcopy(trained)
    keys = set(model.state_dict())
    norm = model.features[1]
    fake = attach(model, {"input": ("", -1)}, {"input": {"scale": 0.1, "zero_point": 0,
                                                          "dtype": "uint8"}})  # fmt: skip
    model.train()
    assert not norm.training  # BatchNorm statistics stay what the deployed model folds
    fake.detach()
    model.train()

    assert set(model.state_dict()) == keys
    assert norm.training
    assert not model._forward_pre_hooks and not hasattr(model, "_qat_fake_quants")


def test_qat_stage_writes_an_all_int8_model(tmp_path, digits_bundle, trained, fp32):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    before = copy.deepcopy(trained.state_dict())
    config = QuantizeStageConfig.model_validate(QAT_ONE_EPOCH)

    result = QuantizeStage(config, "quantize").run(ctx)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())  # not trained
    assert result.model is not trained
    assert set(result.model.state_dict()) == set(before)  # no fake-quant leftovers
    quantization = result.details["quantization"]
    assert quantization["mode"] == "qat" and quantization["scheme"] == "u8s8"
    assert quantization["ops"]["QLinearConv"] == 2 and quantization["float_compute_nodes"] == 0
    qat = quantization["qat"]
    assert qat["learned_tensors"] == 7 and qat["calibrated_tensors"] == []
    assert qat["kept"] == "trained"  # digits: QAT measured at or above calibrated
    assert qat["distill"] is True
    scales = qat["scales"].values()
    assert any(s["learned"] != pytest.approx(s["calibrated"], rel=1e-4) for s in scales)
    int8_accuracy = onnx_accuracy(result.onnx_path, digits_bundle.test)
    assert abs(int8_accuracy - onnx_accuracy(fp32, digits_bundle.test)) <= 0.03


def test_qat_on_a_residual_net_learns_every_add(digits_bundle, tmp_path):
    ctx = tiny_run_context(
        tmp_path, digits_bundle, recipe={"model": {"architecture": "resnet", "widths": [8, 16]}}
    )
    fit(ctx.model, digits_bundle, TrainingConfig(epochs=2, batch_size=32,
        optimizer={"name": "adam", "lr": 0.01}), seed=0)  # fmt: skip
    fp32_accuracy = onnx_accuracy(
        export_onnx(ctx.model.eval(), (1, 8, 8), tmp_path / "fp32.onnx"), digits_bundle.test
    )
    (tmp_path / "fp32.onnx").unlink()
    config = QuantizeStageConfig.model_validate(QAT_ONE_EPOCH)

    result = QuantizeStage(config, "quantize").run(ctx)

    quantization = result.details["quantization"]
    assert quantization["qat"]["calibrated_tensors"] == []  # the adds too (via the ReLU)
    assert quantization["ops"]["QLinearAdd"] == 2 and quantization["float_compute_nodes"] == 0
    assert onnx_accuracy(result.onnx_path, digits_bundle.test) >= fp32_accuracy - 0.04


def test_qat_that_hurts_validation_ships_the_calibrated_model(
    tmp_path, digits_bundle, trained, monkeypatch
):
    from compress.runtime.machine import int8_saturates
    from compress.stages.quantize_methods import qat as stage_module

    real_fit = stage_module.fit

    def harmful_training(model, *args, **kwargs):
        result = real_fit(model, *args, **kwargs)
        with torch.no_grad():  # stands in for a fine-tune that went wrong
            model.classifier.parametrizations.weight.original.mul_(-1)
        return result

    monkeypatch.setattr(stage_module, "fit", harmful_training)
    ctx = tiny_run_context(tmp_path, digits_bundle, model=trained)
    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "mode": "qat", "calibration": {"samples": 64}}
    )
    static = tmp_path / "static.onnx"
    chosen = torch.randperm(len(digits_bundle.train), generator=torch.Generator().manual_seed(0))
    quantize_static_onnx(
        export_onnx(trained, (1, 8, 8), tmp_path / "fp32.onnx"), static,
        digits_bundle.train.x[chosen[:64]].numpy(), reduce_range=int8_saturates(),
    )  # fmt: skip

    workdir = tmp_path / "stage"
    workdir.mkdir()
    ctx.workdir = workdir
    result = QuantizeStage(config, "quantize").run(ctx)

    qat = result.details["quantization"]["qat"]
    assert qat["kept"] == "calibrated"
    assert sorted(p.name for p in workdir.iterdir()) == ["model.onnx"]
    assert qat["val_accuracy_fake_quant_after"] < qat["val_accuracy_fake_quant_before"]
    assert result.model is trained
    test_x = digits_bundle.test.x.numpy()
    assert np.array_equal(_onnx_logits(result.onnx_path, test_x), _onnx_logits(static, test_x))


@pytest.mark.parametrize(
    "bad",
    [{"per_channel": False}, {"weight_type": "uint8"}],
    ids=["per-tensor", "uint8-weights"],
)
def test_qat_refuses_settings_it_cannot_train(bad):
    with pytest.raises(ValidationError, match="mode 'qat'"):
        QuantizeStageConfig.model_validate({"type": "quantize", "mode": "qat", **bad})


def test_qat_with_format_auto_is_the_auto_method_which_does_not_train():
    # format names the method first: auto compares whole-model formats, never trains
    with pytest.raises(ValidationError, match='format = "auto"') as info:
        QuantizeStageConfig.model_validate({"type": "quantize", "mode": "qat", "format": "auto"})

    assert info.value.errors()[0]["loc"][1:] == ("mode",)


def test_without_ort_preprocessing_qat_matches_the_graph_actually_quantized(
    trained, fp32, digits_bundle, tmp_path, monkeypatch
):
    """When ORT's pre-processing fails, quantization falls back to the exported graph:
    the tensors QAT trains must be that graph's, and all be found in torch."""
    import onnx
    import onnxruntime.quantization.shape_inference as shape_inference

    def refuse(*args, **kwargs):
        raise ValueError("symbolic shape inference incomplete")

    monkeypatch.setattr(shape_inference, "quant_pre_process", refuse)
    x = digits_bundle.train.x[:64].numpy()

    qparams, points, unmatched, _ = _prepare(trained, fp32, x, tmp_path)

    graph = onnx.load(str(fp32)).graph
    exported = {o for node in graph.node for o in node.output} | {i.name for i in graph.input}
    assert {q["tensor"] for q in qparams.values()} <= exported
    assert unmatched == []
    assert set(points) == set(qparams)
    report = quantize_static_onnx(fp32, tmp_path / "again.onnx", x, reduce_range=True)
    assert report["preprocessed"] is False
    assert report["preprocess_note"].startswith("pre-processing skipped: ValueError")
