"""Start from what the user has: weights trained elsewhere, no train stage."""

from __future__ import annotations

import pytest
import torch

from compress.models import build_model
from compress.recipe.schema import CNNConfig
from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


def test_a_recipe_without_a_train_stage_starts_from_the_users_pt_file(tmp_path):
    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8, 16]), (1, 8, 8), 10)
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, tmp_path / "mine.pt")
    recipe = tiny_recipe_dict(
        model={
            "architecture": "cnn",
            "widths": [8, 16],
            "weights": str(tmp_path / "mine.pt"),
            "weights_prefix": "model.",
        },  # fmt: skip
        stages=[{"type": "quantize", "calibration": {"samples": 32}}, {"type": "export"}],
    )
    path = write_recipe(tmp_path / "byo.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    names = [stage["name"] for stage in run.report["stages"]]
    assert names == ["input", "quantize", "export"]  # the user's model is the baseline row
    assert run.report["teacher_stage"] == "input"
    assert run.report["stages"][0]["metrics"]["speedup"]["median"] == 1.0
    assert "size_ratio" in run.report["stages"][1]["metrics"]


def test_weights_that_do_not_fit_are_exit_2_before_anything_runs(tmp_path):
    model = build_model(CNNConfig(widths=[8]), (1, 8, 8), 10)
    torch.save(model.state_dict(), tmp_path / "other.pth")
    recipe = tiny_recipe_dict(
        model={"architecture": "cnn", "widths": [8, 16], "weights": str(tmp_path / "other.pth")}
    )
    path = write_recipe(tmp_path / "bad.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 2, run.output
    assert "model.weights: the weights do not fit the model" in run.output
    assert "missing: features.4.weight" in run.output
    assert "Traceback" not in run.output
    assert not (tmp_path / "run" / "train").exists()


def test_data_of_a_shape_the_architecture_cannot_take_is_exit_2(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", x_train=rng.random((90, 16)).astype("float32"),
             y_train=rng.integers(0, 3, 90))  # fmt: skip
    recipe = tiny_recipe_dict(data={"source": "npz", "path": str(tmp_path / "flat.npz")})
    path = write_recipe(tmp_path / "flat.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 2, run.output
    assert "model.architecture 'cnn' cannot be built for the data's input shape (16,)" in run.output
    assert "Traceback" not in run.output
