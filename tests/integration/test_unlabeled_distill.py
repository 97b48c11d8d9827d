"""Distillation needs no labels: on unlabeled PNGs (`data.labeled = false`) a model you
bring distils (alpha = 1) into a student that is pruned and fine-tuned from the unpruned
model's outputs, gated by agreement; only the parts that read labels are refused, each
named by its key."""

from __future__ import annotations

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe
from compress.testing.images import write_image_folder

pytestmark = pytest.mark.integration

CLASSES = 4
DISTILL = {
    "type": "distill",
    "student": {"architecture": "cnn", "widths": [16, 32]},
    "alpha": 1.0,
    "epochs": 4,
    "batch_size": 16,
    "optimizer": {"name": "adam", "lr": 0.01},
    "early_stopping": {"monitor": "val_agreement", "patience": 3},
}
PRUNE = {
    "type": "prune",
    "ratio": 0.3,
    "steps": 2,
    "finetune": {
        "epochs": 2,
        "batch_size": 16,
        "distill": True,
        "alpha": 1.0,
        "optimizer": {"name": "adam", "lr": 0.003},
    },
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> str:
    """A CNN trained on labelled images of the same kind: the model a user brings."""
    tmp_path = tmp_path_factory.mktemp("teacher")
    root = write_image_folder(tmp_path / "labeled", classes=CLASSES, per_class=24, seed=1)
    recipe = tiny_recipe_dict(
        data={"source": "image-folder", "path": str(root), "channels": 1},
        model={"architecture": "cnn", "widths": [16, 32]},
        stages=[{"type": "train", "epochs": 4, "batch_size": 16,
                 "optimizer": {"name": "adam", "lr": 0.01}}],
    )  # fmt: skip
    path = write_recipe(tmp_path / "teacher.toml", recipe)
    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")
    assert run.returncode == 0, run.output
    return str(tmp_path / "run" / run.report["stages"][0]["artifacts"]["weights"])


def _unlabeled_recipe(tmp_path, teacher: str, stages: list[dict]):
    # no class folders: images at any depth, as a user's unlabeled dump is
    write_image_folder(tmp_path / "dump" / "any", classes=CLASSES, per_class=40, seed=2)
    recipe = tiny_recipe_dict(
        data={"source": "image-folder", "path": str(tmp_path / "dump"), "channels": 1,
              "labeled": False, "num_classes": CLASSES},
        model={"architecture": "cnn", "widths": [16, 32], "weights": teacher},
        budgets={"agreement_min": 0.7},
        stages=stages,
    )  # fmt: skip
    return write_recipe(tmp_path / "unlabeled.toml", recipe)


def test_unlabeled_images_distill_and_prune_gated_by_agreement(tmp_path, teacher):
    path = _unlabeled_recipe(tmp_path, teacher, [DISTILL, PRUNE, {"type": "export"}])

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    stages = {s["name"]: s for s in run.report["stages"]}
    assert list(stages) == ["input", "distill", "prune", "export"]
    assert all(s["metrics"]["accuracy"] is None for s in stages.values())
    for name in ("distill", "prune", "export"):  # test split, against the teacher
        assert stages[name]["metrics"]["agreement"] >= 0.7, name
    training = stages["distill"]["details"]["training"]
    history = training["history"]
    assert all(m["val_accuracy"] is None and 0 <= m["val_agreement"] <= 1 for m in history)
    assert training["best_val_agreement"] == max(m["val_agreement"] for m in history)
    assert history[-1]["val_kd_loss"] < history[0]["val_kd_loss"]  # it learned the teacher
    pruned = stages["prune"]["details"]
    assert pruned["steps"][-1]["ratio"] == pytest.approx(0.3)
    recalibrations = pruned["bn_recalibration"]
    assert len(recalibrations) == 4  # after pruning and after the fine-tune, 2 steps
    assert all(r["metric"] == "val_agreement" for r in recalibrations)
    assert stages["prune"]["metrics"]["params"] < stages["distill"]["metrics"]["params"]


@pytest.mark.parametrize(
    ("stages", "key"),
    [
        ([{**DISTILL, "alpha": 0.9}], "stages[0].alpha"),
        ([{"type": "train", "epochs": 1}], "stages[0].type"),
        ([{**DISTILL, "early_stopping": {"monitor": "val_accuracy"}}],
         "stages[0].early_stopping.monitor"),
        ([{**PRUNE, "finetune": {"epochs": 1}}], "stages[0].finetune.distill"),
        ([{**PRUNE, "finetune": {**PRUNE["finetune"], "alpha": 0.5}}],
         "stages[0].finetune.alpha"),
    ],
    ids=["alpha", "train", "monitor", "finetune-labels", "finetune-alpha"],
)  # fmt: skip
def test_label_reading_parts_are_exit_2_naming_the_key(tmp_path, stages, key):
    path = _unlabeled_recipe(tmp_path, "mine.safetensors", stages)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 2, run.output
    assert f"{key} (" in run.output and "data.labeled = false has none" in run.output
