"""No silent fallbacks: each one is a line in report.json, report.md and on the console.

Every test forces one fallback on a tiny digits run (in this process, through the
CLI, so the console reporter prints) and reads the line back from all three.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.testing import tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration

TRAIN_ONE_EPOCH = {"type": "train", "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam"}}


def _run(tmp_path, recipe: dict, *extra: str):
    path = write_recipe(tmp_path / "recipe.toml", recipe)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), *extra])
    report = json.loads((out / "report.json").read_text())
    return result, report, out


def _one_line(output: str) -> str:
    """The console output with rich's line wrapping undone."""
    return " ".join(output.split())


def test_an_unreadable_cpu_isa_is_a_run_warning(tmp_path, monkeypatch):
    import compress.runtime.machine as machine

    monkeypatch.setattr(machine, "CPUINFO", tmp_path / "no-cpuinfo")
    monkeypatch.setattr(machine.platform, "machine", lambda: "x86_64")
    recipe = tiny_recipe_dict(stages=[TRAIN_ONE_EPOCH, {"type": "export"}])

    result, report, out = _run(tmp_path, recipe, "--no-cache")

    assert result.exit_code == 0, result.output
    (line,) = report["warnings"]
    assert line.startswith("could not read this CPU's instruction-set flags")
    assert str(tmp_path / "no-cpuinfo") in line
    assert report["environment"]["isa"] == []
    assert all(stage["warnings"] == [] for stage in report["stages"])
    assert f"warning: {line}" in _one_line(result.output)
    assert f"- {line}" in (out / "report.md").read_text()


def test_batches_the_engine_cannot_take_are_a_stage_warning(tmp_path):
    # 1,222 training rows in batches of 11: the last batch holds 1 row, and BatchNorm
    # cannot train on one sample
    train = {**TRAIN_ONE_EPOCH, "epochs": 2, "batch_size": 11}
    recipe = tiny_recipe_dict(stages=[train, {"type": "export"}])

    result, report, out = _run(tmp_path, recipe, "--no-cache")

    assert result.exit_code == 0, result.output
    (line,) = report["stages"][0]["warnings"]
    assert line.startswith("2 batch(es) of [1] rows (2 rows in all, over 2 epoch(s) of 1222 ")
    assert line.endswith("a batch of one row cannot train BatchNorm")
    assert report["warnings"] == []
    assert f"warning: train: {line}" in _one_line(result.output)
    assert f"- train: {line}" in (out / "report.md").read_text()


def test_epoch_checkpoints_switched_off_are_a_stage_warning(tmp_path, monkeypatch):
    import compress.training.checkpoint as checkpoint

    class NoJson:  # an epoch's state holding something JSON cannot (a scheduler's lambda)
        loads = staticmethod(json.loads)

        @staticmethod
        def dumps(obj, **kwargs):
            if isinstance(obj, dict) and "fingerprint" in obj:  # the epoch state, not others
                raise TypeError("Object of type function is not JSON serializable")
            return json.dumps(obj, **kwargs)

    monkeypatch.setattr(checkpoint, "json", NoJson)
    recipe = tiny_recipe_dict(stages=[TRAIN_ONE_EPOCH, {"type": "export"}])

    result, report, out = _run(tmp_path, recipe)  # the cache on: epoch checkpoints kept

    assert result.exit_code == 0, result.output
    (line,) = report["stages"][0]["warnings"]
    assert line == (
        "epoch checkpoints were switched off for this fit (its state cannot be stored as "
        "JSON: Object of type function is not JSON serializable): a run killed during it "
        "starts the fit again from its first epoch"
    )
    assert f"warning: train: {line}" in _one_line(result.output)
    assert f"- train: {line}" in (out / "report.md").read_text()

    again, cached, _ = _run(tmp_path, recipe)  # a cached stage still says what it did

    assert again.exit_code == 0, again.output
    assert cached["stages"][0]["cached"] and cached["stages"][0]["warnings"] == [line]
    assert f"warning: train: {line}" in _one_line(again.output)


def test_failed_ort_preprocessing_is_a_stage_warning_and_exclude_names_its_graph(
    tmp_path, monkeypatch
):
    import onnx
    import onnxruntime.quantization.shape_inference as shape_inference

    def refuse(*args, **kwargs):
        raise ValueError("symbolic shape inference incomplete")

    monkeypatch.setattr(shape_inference, "quant_pre_process", refuse)
    quantize = {"type": "quantize", "calibration": {"samples": 64}, "exclude": ["node_linear"]}
    recipe = tiny_recipe_dict(stages=[TRAIN_ONE_EPOCH, quantize, {"type": "export"}])

    result, report, out = _run(tmp_path, recipe, "--no-cache")

    assert result.exit_code == 0, result.output
    train, quantized, export = report["stages"]
    (line,) = quantized["warnings"]
    assert line.startswith(
        "ONNX Runtime's quantization pre-processing failed (ValueError: symbolic shape "
        "inference incomplete): the graph was quantized as exported"
    )
    assert train["warnings"] == [] and export["warnings"] == []
    assert f"warning: quantize: {line}" in _one_line(result.output)
    assert f"- quantize: {line}" in (out / "report.md").read_text()
    # the exclude pattern named a node of the graph actually quantized: it stayed float
    details = quantized["details"]["quantization"]
    assert details["preprocessed"] is False
    (excluded,) = details["float_nodes"]
    graph = onnx.load(str(out / quantized["artifacts"]["onnx"])).graph
    (node,) = [n for n in graph.node if n.name == excluded]
    assert node.op_type in ("Gemm", "MatMul")
    producers = {o: n.op_type for n in graph.node for o in n.output}
    assert producers.get(node.input[0]) != "DequantizeLinear"  # float input, not int8


def test_shipped_files_get_the_umask_mode_not_0600(tmp_path):
    recipe = tiny_recipe_dict(stages=[TRAIN_ONE_EPOCH, {"type": "export"}])
    old = os.umask(0o022)
    try:
        result, report, out = _run(tmp_path, recipe, "--no-cache")
    finally:
        os.umask(old)

    assert result.exit_code == 0, result.output
    for name in ("final/model.onnx", "report.html", "report.json", "recipe.resolved.toml"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
