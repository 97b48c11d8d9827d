"""A recipe on a folder of PNG files: trains, calibrates, exports and evaluates lazily."""

from __future__ import annotations

import json

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe
from compress.testing.images import break_file, write_image_folder

pytestmark = pytest.mark.integration

STAGES = [
    {"type": "train", "epochs": 1, "batch_size": 8, "optimizer": {"name": "adam", "lr": 0.01}},
    {"type": "quantize", "mode": "static", "calibration": {"samples": 16}},
    {"type": "export"},
]


def _recipe(tmp_path, **data):
    root = write_image_folder(tmp_path / "images", per_class=20)
    break_file(root / "class1" / "005.png")
    keys = {"source": "image-folder", "path": str(root), "channels": 1, **data}
    return write_recipe(tmp_path / "images.toml", tiny_recipe_dict(data=keys, stages=STAGES))


def test_an_image_folder_with_a_bad_file_skipped_runs_every_stage(tmp_path):
    path = _recipe(tmp_path, skip_bad_images=True, num_workers=1)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    report = run.report
    assert [s["name"] for s in report["stages"]] == ["train", "quantize", "export"]
    assert all(s["metrics"]["accuracy"] >= 0.75 for s in report["stages"])  # 8 test images
    assert report["data"]["sizes"] == {"train": 27, "val": 4, "test": 8}
    assert "skipped 1 unreadable image" in report["data"]["warnings"][0]
    contract = json.loads((tmp_path / "run" / "final" / "model.contract.json").read_text())
    assert contract["shape"] == ["batch", 1, 12, 12]
    assert contract["preprocessing"]["channels"] == 1
    assert contract["preprocessing"]["stats"] == "computed from all 27 training images"


def test_a_bad_file_without_skip_is_exit_2_naming_it(tmp_path):
    path = _recipe(tmp_path)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 2, run.output
    assert "class1/005.png: truncated or corrupt PNG" in run.output


def test_unlabeled_images_calibrate_and_export_a_model_you_bring(tmp_path):
    import torch

    from compress.models import build_model
    from compress.recipe.schema import CNNConfig

    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8, 16]), (1, 12, 12), 4)
    torch.save(model.state_dict(), tmp_path / "mine.pt")
    root = write_image_folder(tmp_path / "calibration" / "any" / "depth", per_class=8)
    recipe = tiny_recipe_dict(
        data={"source": "image-folder", "path": str(tmp_path / "calibration"), "channels": 1,
              "labeled": False, "num_classes": 4},
        model={"architecture": "cnn", "widths": [8, 16], "weights": str(tmp_path / "mine.pt")},
        stages=STAGES[1:],
    )  # fmt: skip
    path = write_recipe(tmp_path / "unlabeled.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    assert root.is_dir() and "(no labels)" in run.output
    stages = run.report["stages"]
    assert [s["name"] for s in stages] == ["input", "quantize", "export"]
    assert all(s["metrics"]["accuracy"] is None for s in stages)
    assert stages[1]["metrics"]["agreement"] > 0.5  # int8 vs the float model, no labels
    assert run.report["final"]["input"]["output"]["labeled"] is False
