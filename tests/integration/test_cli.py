"""The `compress` command end to end: exit codes, report.json, final model.

In this process (`run_cli`); tests/unit/test_run_cli.py checks that it gives the same
exit code and output as a real `python -m compress`."""

from __future__ import annotations

import hashlib
import json
import tomllib

import numpy as np
import pytest

import compress
from compress.testing import CliRun, run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


def _train(**fields) -> dict:
    return {
        "type": "train",
        "epochs": 1,
        "batch_size": 32,
        "optimizer": {"name": "adam", "lr": 0.01},
        **fields,
    }


# --------------------------------------------------------------------------- a passing run


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> CliRun:
    """The tiny recipe (1 epoch in the file, 2 by --set) with budgets it meets."""
    root = tmp_path_factory.mktemp("good")
    recipe = tiny_recipe_dict(
        budgets={"accuracy_min": 0.5},
        stages=[_train(budgets={"params_max": 10_000}), {"type": "export"}],
    )
    path = write_recipe(root / "tiny.toml", recipe)

    return run_cli(
        "run",
        path,
        "--out",
        root / "run",
        "--set",
        "stages[0].epochs=2",
        cwd=root,
        out=root / "run",
    )


def test_tiny_recipe_exits_0_and_reports_passed(good):
    assert good.returncode == 0, good.output

    report = good.report

    assert "Traceback" not in good.output
    assert (report["status"], report["exit_code"], report["failures"]) == ("passed", 0, [])
    assert report["error"] is None
    assert report["compress_version"] == compress.__version__
    assert "PASSED" in (good.out / "report.md").read_text(encoding="utf-8")


def test_report_documents_each_stage(good):
    stages = good.report["stages"]

    assert [(s["name"], s["type"], s["status"], s["dir"]) for s in stages] == [
        ("train", "train", "passed", "train"),
        ("export", "export", "passed", "export"),
    ]
    for stage in stages:
        metrics = stage["metrics"]
        assert 0.5 <= metrics["accuracy"] <= 1.0
        latency = metrics["latency"]["cpu"]
        assert 0 < latency["p50_ms"] <= latency["p90_ms"]
        assert latency["n"] == 5 * 2  # repeats * rounds
        assert len(latency["round_p50_ms"]) == 2
        assert metrics["size_bytes"] == (good.out / stage["dir"] / "model.onnx").stat().st_size
        assert metrics["params"] == 1_442  # CNN [8, 16] on 1x8x8, 10 classes
        assert metrics["macs"] == 23_200
    assert stages[0]["budgets"] == [
        {
            "metric": "params",
            "limit": 10_000,
            "value": 1_442,
            "passed": True,
            "message": "params 1,442 <= max 10,000",
            "baseline": None,
            "skipped": False,
        }
    ]
    assert stages[1]["budgets"] == []
    # The export stage's model is the trained model: same accuracy on the same test split.
    assert stages[1]["metrics"]["accuracy"] == stages[0]["metrics"]["accuracy"]
    assert stages[1]["details"]["parity"]["batch_7_max_abs_diff"] < 1e-4


def test_report_has_the_documented_fields(good):
    # docs/report-schema.md, version 1: fields may be added, never removed.
    report = good.report
    train, export = report["stages"]

    assert report["schema_version"] == 2
    assert {
        "schema_version", "compress_version", "status", "exit_code", "recipe", "seed",
        "started_at", "finished_at", "duration_s", "environment", "runtime", "distributed",
        "data", "teacher_stage", "stages", "final", "best_stage", "best_stage_path", "failures",
        "error", "paths",
    } <= set(report)  # fmt: skip
    assert {"name", "path", "resolved"} <= set(report["recipe"])
    assert report["data"]["sizes"] == {"train": 1222, "val": 216, "test": 359}
    assert (report["teacher_stage"], report["best_stage"]) == ("train", "export")
    assert report["best_stage_path"] == "export/model.onnx"
    for stage in (train, export):
        assert {
            "name", "type", "status", "dir", "duration_s", "metrics", "budgets", "details",
            "artifacts",
        } <= set(stage)  # fmt: skip
        assert {
            "accuracy", "accuracy_change", "latency", "primary_provider", "speedup",
            "size_bytes", "size_ratio", "params", "macs",
        } <= set(stage["metrics"])  # fmt: skip
        for key in ("onnx", "weights", "structure"):
            assert (good.out / stage["artifacts"][key]).is_file()
        assert stage["artifacts"]["onnx_only"] is (stage["type"] == "export")
    assert export["metrics"]["speedup"]["rounds"] == 2  # timed interleaved with the teacher
    assert "teacher_p50_ms_interleaved" in export["metrics"]
    assert train["metrics"]["size_ratio"] == 1.0 and train["metrics"]["accuracy_change"] == 0.0


def test_set_override_changes_epochs(good):
    resolved = tomllib.loads((good.out / "recipe.resolved.toml").read_text(encoding="utf-8"))

    assert resolved["stages"][0]["epochs"] == 2
    assert good.report["recipe"]["resolved"]["stages"][0]["epochs"] == 2
    assert good.report["stages"][0]["details"]["training"]["epochs_run"] == 2


def test_final_model_and_input_contract(good):
    final = good.report["final"]
    model = good.out / final["path"]

    assert final["path"] == "final/model.onnx"
    assert final["stage"] == "export"
    assert final["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert final["budgets"][0]["message"].startswith("accuracy ")
    assert final["budgets"][0]["passed"] is True
    contract = final["input"]
    assert contract["name"] == "input"
    assert contract["shape"] == ["batch", 1, 8, 8]
    assert contract["dtype"] == "float32"
    assert contract["preprocessing"]["formula"] == "(raw * scale - mean[c]) / std[c]"
    assert contract["preprocessing"]["scale"] == 1 / 16
    assert len(contract["preprocessing"]["mean"]) == len(contract["preprocessing"]["std"]) == 1
    assert json.loads((good.out / "final" / "model.contract.json").read_text()) == contract


def test_final_model_runs_on_onnx_runtime_from_the_contract_alone(good):
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    from compress.data import load_data, stratified_split
    from compress.recipe.schema import DataConfig

    final = good.report["final"]
    pre = final["input"]["preprocessing"]
    digits = load_digits()
    test_idx = stratified_split(digits.target, DataConfig().test_fraction, seed=0)[1]
    raw = digits.images[test_idx][:, None].astype(np.float32)
    x = ((raw * pre["scale"] - pre["mean"][0]) / pre["std"][0]).astype(np.float32)
    # The contract reproduces exactly the test inputs the report's accuracy was measured on.
    assert np.allclose(x, load_data(DataConfig(), seed=0).test.x.numpy(), atol=1e-5)
    session = ort.InferenceSession(
        str(good.out / final["path"]), providers=["CPUExecutionProvider"]
    )

    logits = np.concatenate(
        [session.run(None, {final["input"]["name"]: x[i : i + 3]})[0] for i in range(0, len(x), 3)]
    )

    assert session.run(None, {"input": x[:3]})[0].shape == (3, 10)
    accuracy = float(np.mean(logits.argmax(1) == digits.target[test_idx]))
    assert accuracy == final["metrics"]["accuracy"]


# --------------------------------------------------------------------------- missed budgets


@pytest.fixture(scope="module")
def missed(tmp_path_factory) -> CliRun:
    """A run whose train stage misses a latency budget and whose final model misses accuracy."""
    root = tmp_path_factory.mktemp("missed")
    recipe = tiny_recipe_dict(
        budgets={"accuracy_min": 1.0},
        stages=[_train(budgets={"latency_p50_ms_max": 1e-6}), {"type": "export"}],
    )
    path = write_recipe(root / "tiny.toml", recipe)

    return run_cli("run", path, "--out", root / "run", cwd=root, out=root / "run")


def test_missed_budget_exits_1_naming_stage_metric_value_and_limit(missed):
    report = missed.report
    train, final = report["stages"][0], report["final"]
    p50 = train["metrics"]["latency"]["cpu"]["p50_ms"]
    accuracy = final["metrics"]["accuracy"]

    assert missed.returncode == 1, missed.output
    assert "Traceback" not in missed.output
    assert f"stage 'train': latency_p50_ms {p50:.4g} ms > max 1e-06 ms" in missed.stderr
    assert f"final model: accuracy {accuracy * 100:.2f}% < min 100.00%" in missed.stderr
    assert (report["status"], report["exit_code"]) == ("failed", 1)
    assert train["status"] == "failed"
    assert train["budgets"][0]["limit"] == 1e-6 and train["budgets"][0]["value"] == p50
    assert final["budgets"][0]["passed"] is False


def test_missed_budget_still_writes_the_final_model(missed):
    final = missed.out / "final" / "model.onnx"

    assert final.is_file()
    assert missed.report["final"]["sha256"] == hashlib.sha256(final.read_bytes()).hexdigest()
    assert missed.report["best_stage"] is None


# --------------------------------------------------------------------------- usage errors


def test_typo_key_exits_2_naming_the_key_path(tmp_path):
    recipe = tiny_recipe_dict(stages=[_train(optimizr={"name": "adam"}), {"type": "export"}])
    path = write_recipe(tmp_path / "t.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path)

    assert run.returncode == 2
    assert "t.toml: stages[0].optimizr: unknown key" in run.stderr
    assert "Traceback" not in run.output
    assert not (tmp_path / "run").exists()


def test_validate_accepts_a_good_recipe(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("validate", path, "--set", "stages[0].epochs=3", cwd=tmp_path)

    assert run.returncode == 0, run.output
    assert run.stdout.strip() == f"{path}: valid; stages: train -> export"


def test_validate_rejects_a_bad_recipe_with_exit_2(tmp_path):
    recipe = tiny_recipe_dict(stages=[_train(epochs=-3), {"type": "export"}])
    path = write_recipe(tmp_path / "t.toml", recipe)

    run = run_cli("validate", path, cwd=tmp_path)

    assert run.returncode == 2
    assert "t.toml: stages[0].epochs: must be > 0, got -3" in run.stderr
    assert "Traceback" not in run.output
    assert run.stdout == ""


def test_debug_shows_the_traceback(tmp_path):
    recipe = tiny_recipe_dict(stages=[_train(epochs=-3), {"type": "export"}])
    path = write_recipe(tmp_path / "t.toml", recipe)

    run = run_cli("validate", path, "--debug", cwd=tmp_path)

    assert run.returncode == 2
    assert "Traceback" in run.stderr


def test_invalid_override_path_exits_2(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("validate", path, "--set", "stages[9].epochs=1", cwd=tmp_path)

    assert run.returncode == 2
    assert "--set stages[9].epochs: no list item stages[9]" in run.stderr


def test_missing_recipe_exits_2(tmp_path):
    run = run_cli("validate", tmp_path / "absent.toml", cwd=tmp_path)

    assert run.returncode == 2
    assert "absent.toml: recipe file not found" in run.stderr


@pytest.mark.parametrize("value", ["a[/]b", "[adam]"])
def test_error_messages_print_user_values_verbatim(tmp_path, value):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("validate", path, "--set", f"stages[0].optimizer.name={value}", cwd=tmp_path)

    assert run.returncode == 2
    assert "Traceback" not in run.output
    assert value in run.stderr


def test_unavailable_provider_exits_2_before_training(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has CUDA")
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict(runtime={"providers": ["cuda"]}))

    run = run_cli("run", path, cwd=tmp_path, out=tmp_path / "runs" / "tiny")

    assert run.returncode == 2
    assert "runtime.providers asks for cuda" in run.stderr
    assert "onnxruntime-gpu" in run.stderr
    assert "Traceback" not in run.output
    report = run.report  # the default run directory is runs/<recipe name>
    assert (report["status"], report["exit_code"], report["stages"]) == ("error", 2, [])
    assert not (run.out / "train").exists()


def test_data_error_exits_2_with_one_clear_line(tmp_path):
    # the data is the user's input: exit 2 (issue 21), as a bad recipe is
    missing = tmp_path / "absent.npz"
    recipe = tiny_recipe_dict(data={"source": "npz", "path": str(missing)})
    path = write_recipe(tmp_path / "t.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 2
    assert f"npz: {missing} not found" in run.stderr
    assert "Traceback" not in run.output
    assert run.report["error"]["type"] == "DataError"


def test_stage_error_exits_3_naming_the_stage(tmp_path):
    stages = [_train(optimizer={"name": "sgd", "lr": 1e30}), {"type": "export"}]
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict(stages=stages))

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 3, run.output
    assert "stage 'train': epoch 1: training loss became" in run.stderr
    assert "Traceback" not in run.output
    report = run.report
    assert (report["status"], report["exit_code"]) == ("error", 3)
    assert report["error"]["stage"] == "train" and report["error"]["type"] == "StageError"
    assert [s["status"] for s in report["stages"]] == ["error"]
    assert report["final"] is None
    assert not (run.out / "final").exists()


_MISFIT_MODEL = """
from torch import nn


def wrong_input(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))  # digits have 64 features
"""


@pytest.fixture(scope="module")
def misfit(tmp_path_factory) -> CliRun:
    """A user architecture that builds but whose forward fails on the data's shape."""
    root = tmp_path_factory.mktemp("misfit")
    (root / "user_models.py").write_text(_MISFIT_MODEL, encoding="utf-8")
    recipe = tiny_recipe_dict()
    recipe["model"] = {"architecture": "user_models:wrong_input"}
    path = write_recipe(root / "t.toml", recipe)

    # `python -m` puts the working directory on sys.path, so user_models imports.
    return run_cli("run", path, "--out", root / "run", cwd=root, out=root / "run")


def test_user_model_failing_in_a_stage_is_not_reported_as_a_missed_budget(misfit):
    assert misfit.returncode == 3
    assert "stage 'train'" in misfit.stderr
    assert "mat1 and mat2 shapes cannot be multiplied" in misfit.stderr


def test_a_crashed_run_still_writes_its_report(misfit):
    assert (misfit.out / "report.json").is_file()
    assert misfit.report["status"] == "error"
    assert misfit.report["error"]["stage"] == "train"


def test_user_model_failing_in_a_stage_does_not_pass(misfit):
    # What holds today, and must keep holding: the run fails loudly, never exits 0.
    assert misfit.returncode != 0
    assert "mat1 and mat2 shapes cannot be multiplied" in misfit.stderr
    assert not (misfit.out / "final").exists()
