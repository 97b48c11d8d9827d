"""Exit codes say whose mistake it is: 2 the user's recipe, 3 a stage, 4 our own bug."""

from __future__ import annotations

import json

import pytest
import tomli_w
from click.testing import CliRunner

from compress.cli import main
from compress.testing import tiny_recipe_dict

pytestmark = pytest.mark.integration


def _run(tmp_path, recipe: dict, *extra: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(recipe))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out), *extra])
    return result, out


def test_a_layer_name_typo_is_a_recipe_error_naming_the_key(tmp_path):
    recipe = tiny_recipe_dict(
        stages=[
            {"type": "train", "epochs": 1},
            {"type": "prune", "ratio": 0.3, "layer_ratios": {"features.99": 0.5}},
        ]
    )

    result, out = _run(tmp_path, recipe)

    assert result.exit_code == 2, result.output
    assert "layer_ratios" in result.output and "features.99" in result.output
    assert json.loads((out / "report.json").read_text())["exit_code"] == 2


@pytest.mark.parametrize(
    "error, code, said",
    [
        # our own bug: exit 4, never passed off as a failed stage
        (
            AttributeError("'NoneType' object has no attribute 'weight'"),
            4,
            "internal error, please report",
        ),
        # a user model's shape mismatch: the stage failed
        (
            RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x3)"),
            3,
            "RuntimeError",
        ),
    ],
    ids=["our-bug", "user-model"],
)
def test_an_exception_inside_a_stage_exits_by_whose_mistake_it_is(
    tmp_path, monkeypatch, error, code, said
):
    from compress.stages.train import TrainStage

    def broken(self, ctx):
        raise error

    monkeypatch.setattr(TrainStage, "_run", broken)

    result, out = _run(tmp_path, tiny_recipe_dict())

    assert result.exit_code == code, result.output
    assert said in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["exit_code"] == code and report["error"]["type"] == type(error).__name__
    assert "Traceback" in report["error"]["traceback"]


def test_our_own_bug_outside_a_stage_is_exit_4_with_the_traceback_under_debug(
    tmp_path, monkeypatch
):
    import compress.runner

    def broken(recipe, data):
        raise TypeError("initial_model() got an unexpected keyword argument 'x'")

    monkeypatch.setattr(compress.runner, "initial_model", broken)

    plain, _ = _run(tmp_path / "a", tiny_recipe_dict())
    debug, _ = _run(tmp_path / "b", tiny_recipe_dict(), "--debug")

    assert plain.exit_code == debug.exit_code == 4
    assert "internal error" in plain.output and "Traceback" not in plain.output
    assert "Traceback" in debug.output


def test_our_own_bug_after_a_stage_ran_is_in_the_report_not_left_running(tmp_path, monkeypatch):
    import compress.runner

    def broken(*args, **kwargs):
        raise AttributeError("'NoneType' object has no attribute 'eval'")

    monkeypatch.setattr(compress.runner, "check", broken)  # the budgets, in the runner's own step

    result, out = _run(tmp_path, tiny_recipe_dict())

    assert result.exit_code == 4, result.output
    report = json.loads((out / "report.json").read_text())
    assert (report["status"], report["exit_code"]) == ("error", 4)
    assert report["error"]["stage"] == "train" and report["error"]["type"] == "AttributeError"
    assert report["stages"][0]["status"] == "error"


def test_cuda_on_a_machine_without_a_gpu_is_exit_2_before_anything_trains(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")

    result, out = _run(tmp_path, tiny_recipe_dict(training={"device": "cuda"}))

    assert result.exit_code == 2, result.output
    assert "training.device: 'cuda' asks for a CUDA GPU" in result.output
    assert not (out / "train").exists()
