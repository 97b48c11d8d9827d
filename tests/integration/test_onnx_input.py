"""An ONNX file as the input: `[model] onnx`, ONNX stages only, the file as the baseline."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from compress.data import load_data
from compress.models import build_model
from compress.recipe.schema import CNNConfig, DataConfig
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.onnx_export import export_onnx
from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained():
    """A digits CNN trained for a few epochs on compress's own digits tensors (so the
    recipe's data, normalised the same way, is what it was trained on)."""
    torch.manual_seed(0)
    data = load_data(DataConfig(), seed=0)
    model = build_model(CNNConfig(widths=[8, 16]), (1, 8, 8), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(4):
        for index in torch.randperm(len(data.train)).split(32):
            optimizer.zero_grad()
            logits = model(data.train.x[index])
            loss = torch.nn.functional.cross_entropy(logits, data.train.y[index])
            loss.backward()
            optimizer.step()
    return model.eval(), data


@pytest.fixture(scope="module")
def user_onnx(trained, tmp_path_factory):
    """The user's file: exported with a dynamic batch axis under an input name of its own."""
    model, _ = trained
    path = tmp_path_factory.mktemp("user") / "digits.onnx"
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), str(path), input_names=["pixels"],
        output_names=["scores"], dynamic_axes={"pixels": {0: "n"}, "scores": {0: "n"}},
        dynamo=False,
    )  # fmt: skip
    return path


def _onnx_recipe(tmp_path, onnx_path, stages, **extra):
    recipe = tiny_recipe_dict(stages=stages, **extra)
    recipe["model"] = {"onnx": str(onnx_path)}
    return write_recipe(tmp_path / "onnx.toml", recipe)


def _run(tmp_path, path):
    return run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")


def _refused(tmp_path, path):
    """`compress run` in this process (a refusal happens before any stage: no need to pay
    for a new interpreter): (exit code, output)."""
    from click.testing import CliRunner

    from compress.cli import main

    threads = torch.get_num_threads()  # the run sets the recipe's: keep other tests' own
    try:
        result = CliRunner().invoke(main, ["run", str(path), "--out", str(tmp_path / "run")])
    finally:
        torch.set_num_threads(threads)
    return result.exit_code, result.output


def test_an_onnx_file_is_quantized_and_exported_with_itself_as_the_baseline(tmp_path, user_onnx):
    path = _onnx_recipe(
        tmp_path,
        user_onnx,
        [{"type": "quantize", "calibration": {"samples": 64}}, {"type": "export"}],
        budgets={"agreement_min": 0.9, "accuracy_min": 0.8},
    )

    run = _run(tmp_path, path)

    assert run.returncode == 0, run.output
    stages = run.report["stages"]
    assert [s["name"] for s in stages] == ["input", "quantize", "export"]
    assert run.report["teacher_stage"] == "input"
    base, quantized = stages[0]["metrics"], stages[1]["metrics"]
    assert base["agreement"] == 1.0 and base["kl_mean"] == 0.0
    assert base["accuracy"] > 0.8
    assert 0.9 <= quantized["agreement"] <= 1.0 and quantized["kl_mean"] > 0.0
    # counted on the float graph: the CNN's 23,200 MACs; quantization keeps the counts
    assert base["macs"] == quantized["macs"] == 23_200
    assert base["params"] == quantized["params"] > 0
    assert stages[0]["artifacts"]["weights"] is None  # no torch model anywhere
    assert not (tmp_path / "run" / "quantize" / "model.safetensors").exists()
    assert stages[1]["details"]["quantization"]["int8_compute_nodes"] > 0
    final = tmp_path / "run" / "final" / "model.onnx"
    inputs = onnx.load(str(final)).graph.input
    assert [i.name for i in inputs] == ["pixels"]  # the file's own names, not compress's
    for batch in (1, 5):
        x = np.zeros((batch, 1, 8, 8), np.float32)
        assert onnx_predictions(final, x).shape == (batch, 10)
    checks = {c["metric"]: c for c in run.report["final"]["budgets"]}
    assert checks["agreement"]["passed"] and checks["agreement"]["value"] >= 0.9
    assert "| agreement |" in (tmp_path / "run" / "report.md").read_text()

    again = _run(tmp_path, path)  # a rerun reuses every stage: the files are the models

    assert again.returncode == 0, again.output
    assert [s["cached"] for s in again.report["stages"]] == [True, True, True]
    assert again.report["final"]["sha256"] == run.report["final"]["sha256"]


class _RowMixer(torch.nn.Module):
    """Mixes each image row with a Linear on a 3-d tensor: ONNX MatMul, what int4 takes."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Linear(8, 16)
        self.head = torch.nn.Linear(8 * 16, 10)

    def forward(self, x):
        return self.head(torch.relu(self.mix(x[:, 0])).flatten(1))


@pytest.fixture(scope="module")
def matmul_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("user") / "rows.onnx"
    torch.onnx.export(
        _RowMixer().eval(), (torch.zeros(1, 1, 8, 8),), str(path), input_names=["x"],
        dynamic_axes={"x": {0: "n"}}, dynamo=False,
    )  # fmt: skip
    return path


@pytest.mark.parametrize(
    "quantize",
    [
        {"method": "kmeans", "bits": 4, "layers": {"classifier": "skip"}},
        {"format": "auto"},
        {"fallback": {"val_accuracy_drop_max": 0.0, "max_layers": 1}},
        {"mode": "int4", "block_size": 32},
    ],
    ids=["kmeans", "auto", "fallback", "int4"],
)
def test_other_quantize_modes_run_on_an_onnx_file(tmp_path, user_onnx, matmul_onnx, quantize):
    # calibration is a key of the calibrating methods only (kmeans and int4 read none)
    calibrates = quantize.get("method") != "kmeans" and quantize.get("mode") != "int4"
    stage = {"type": "quantize", **quantize}
    if calibrates:
        stage["calibration"] = {"samples": 32}
    source = matmul_onnx if quantize.get("mode") == "int4" else user_onnx
    # the row mixer is untrained: near-even logits flip more easily than a trained model's
    export = {"type": "export", "agreement_min": 0.9 if source == matmul_onnx else 0.97}
    path = _onnx_recipe(tmp_path, source, [stage, export])

    run = _run(tmp_path, path)

    assert run.returncode == 0, run.output
    details = run.report["stages"][1]["details"]["quantization"]
    if "method" in quantize:  # codebooks: every weight but the skipped layer's
        assert details["encoded_layers"] >= 1
        assert not any(name.startswith("classifier") for name in details["encoded"])
    elif "fallback" in quantize:
        assert "float_layers" in details["fallback"]
    elif "format" in quantize:  # measured candidates, the file's input timed
        assert len(details["candidates"]) >= 2 and details["format"]
    else:
        assert details["ops"].get("MatMulNBits", 0) >= 1
    assert run.report["stages"][1]["metrics"]["agreement"] > 0.5


def test_a_torch_stage_on_an_onnx_file_is_exit_2_naming_it(tmp_path, user_onnx):
    path = _onnx_recipe(
        tmp_path,
        user_onnx,
        [{"type": "prune", "ratio": 0.3}, {"type": "quantize", "mode": "qat"}, {"type": "export"}],
    )

    code, output = _refused(tmp_path, path)

    assert code == 2, output
    assert 'stages[0] (prune), stages[1] (quantize, mode = "qat") need a torch model' in output
    assert "ONNX stages only" in output
    assert "Traceback" not in output
    assert not (tmp_path / "run").exists()


def test_an_onnx_file_with_a_fixed_batch_is_exit_2_saying_how_to_export_it(tmp_path, trained):
    model, _ = trained
    fixed = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(fixed), dynamo=False)
    path = _onnx_recipe(tmp_path, fixed, [{"type": "export"}])

    code, output = _refused(tmp_path, path)

    assert code == 2, output
    assert "has a fixed batch size of 1" in output
    assert "dynamic batch axis" in output


def test_a_file_that_is_not_onnx_or_does_not_fit_the_data_is_exit_2(tmp_path, trained):
    model, _ = trained
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    junk = _onnx_recipe(tmp_path, tmp_path / "junk.onnx", [{"type": "export"}])
    code, output = _refused(tmp_path, junk)
    assert code == 2, output
    assert "junk.onnx is not a valid ONNX model" in output

    wide = build_model(CNNConfig(widths=[8, 16]), (3, 16, 16), 10)
    from compress.models.signature import InputSignature

    export_onnx(wide, InputSignature.image((3, 16, 16)), tmp_path / "wide.onnx")
    wide_recipe = _onnx_recipe(tmp_path, tmp_path / "wide.onnx", [{"type": "export"}])
    code, output = _refused(tmp_path, wide_recipe)
    assert code == 2, output
    assert "has shape ['batch', 3, 16, 16]; the data gives ['batch', 1, 8, 8]" in output
    assert "Traceback" not in output


def test_the_resolved_recipe_of_an_onnx_run_validates_again(tmp_path, user_onnx):
    from compress.recipe.loader import load_recipe

    path = _onnx_recipe(tmp_path, user_onnx, [{"type": "export"}])
    recipe = load_recipe(path)
    resolved = tmp_path / "resolved.toml"
    resolved.write_text(recipe.to_toml())
    again = load_recipe(resolved)
    assert again.model.onnx == str(user_onnx)
    assert json.loads(again.model.model_dump_json()) == json.loads(recipe.model.model_dump_json())


def test_an_onnx_file_and_images_without_labels_are_gated_by_agreement(tmp_path):
    """Calibration images only: accuracy cannot be measured, fidelity to the file can."""
    from compress.models.signature import InputSignature
    from compress.testing.images import write_image_folder

    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8, 16]), (1, 12, 12), 4).eval()
    export_onnx(model, InputSignature.image((1, 12, 12)), tmp_path / "mine.onnx")
    write_image_folder(tmp_path / "calibration", classes=2, per_class=20)
    data = {"source": "image-folder", "path": str(tmp_path / "calibration"), "channels": 1,
            "labeled": False, "num_classes": 4, "mean": [0.5], "std": [0.25]}  # fmt: skip
    plan = [{"type": "quantize", "calibration": {"samples": 16}}, {"type": "export"}]
    path = _onnx_recipe(tmp_path, tmp_path / "mine.onnx", plan, data=data,
                        budgets={"agreement_min": 0.5})  # fmt: skip

    run = _run(tmp_path, path)

    assert run.returncode == 0, run.output
    stages = run.report["stages"]
    assert [s["name"] for s in stages] == ["input", "quantize", "export"]
    assert all(s["metrics"]["accuracy"] is None for s in stages)
    assert stages[1]["metrics"]["agreement"] >= 0.5
    (check,) = run.report["final"]["budgets"]
    assert check["metric"] == "agreement" and check["passed"]
    contract = run.report["final"]["input"]
    assert contract["preprocessing"]["mean"] == [0.5] and contract["preprocessing"]["std"] == [0.25]

    accuracy_gate = _onnx_recipe(tmp_path, tmp_path / "mine.onnx", [{"type": "export"}],
                                 data=data, budgets={"accuracy_min": 0.9})  # fmt: skip
    code, output = _refused(tmp_path, accuracy_gate)
    assert code == 2, output
    assert "budgets.accuracy_min reads accuracy, which needs labels" in output
