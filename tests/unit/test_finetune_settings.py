"""A prune stage's fine-tune without its own optimizer continues the model's last
training: the optimizer and last learning rate of the run's previous fit."""

from __future__ import annotations

import pytest

from compress.recipe.stages import FinetuneConfig
from compress.stages.finetune_settings import PRETRAINED_FINETUNE, finetune_settings
from compress.testing import tiny_run_context

pytestmark = pytest.mark.unit

ADAMW = {"name": "adamw", "lr": 5e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01}


def _fit_record(name: str, last_lr: float, peak_lr: float, optimizer=ADAMW) -> dict:
    training = {"optimizer": optimizer, "last_lr": last_lr, "peak_lr": peak_lr}
    return {"name": name, "type": "train", "details": {"training": training}}


def test_the_last_fit_gives_its_optimizer_and_last_learning_rate(tmp_path):
    ctx = tiny_run_context(tmp_path)
    ctx.history = [_fit_record("train", last_lr=1.25e-4, peak_lr=5e-4)]

    config, used = finetune_settings(ctx, FinetuneConfig())

    assert config.optimizer.name == "adamw" and config.optimizer.weight_decay == 0.01
    assert config.optimizer.lr == 1.25e-4
    assert config.schedule.name == "none" and config.epochs == 1  # the stage's own
    assert used["source"] == "stage 'train': its optimizer at its last epoch's lr 0.000125"
    assert used["optimizer"]["lr"] == 1.25e-4


def test_a_schedule_that_decayed_to_zero_leaves_a_tenth_of_its_peak(tmp_path):
    ctx = tiny_run_context(tmp_path)
    ctx.history = [_fit_record("train", last_lr=1e-6, peak_lr=5e-4)]

    config, used = finetune_settings(ctx, FinetuneConfig())

    assert config.optimizer.lr == pytest.approx(5e-5)
    assert "0.1 x its peak; its last epoch's was 1e-06" in used["source"]


def test_the_newest_fit_wins_and_a_prune_stage_fine_tune_counts(tmp_path):
    ctx = tiny_run_context(tmp_path)
    sgd = {"name": "sgd", "lr": 0.05, "momentum": 0.9}
    finetuned = {"optimizer": sgd, "last_lr": 0.02, "peak_lr": 0.02}
    ctx.history = [
        _fit_record("train", last_lr=1e-4, peak_lr=5e-4),
        {"name": "prune", "type": "prune", "details": {"steps": [{}, {"finetune": finetuned}]}},
        {"name": "quantize", "type": "quantize", "details": {}},
    ]

    config, used = finetune_settings(ctx, FinetuneConfig())

    assert (config.optimizer.name, config.optimizer.lr) == ("sgd", 0.02)
    assert used["source"].startswith("stage 'prune'")


def test_an_explicit_optimizer_is_kept(tmp_path):
    ctx = tiny_run_context(tmp_path)
    ctx.history = [_fit_record("train", last_lr=1e-4, peak_lr=5e-4)]
    finetune = FinetuneConfig.model_validate({"optimizer": {"name": "sgd", "lr": 0.1}})

    config, used = finetune_settings(ctx, finetune)

    assert config is finetune and used["source"] == "the stage's finetune.optimizer"


def test_a_model_that_arrived_with_weights_gets_the_documented_default(tmp_path):
    ctx = tiny_run_context(tmp_path)
    ctx.history = [{"name": "input", "type": "input", "details": {"weights": "w.safetensors"}}]

    config, used = finetune_settings(ctx, FinetuneConfig())

    assert config.optimizer == PRETRAINED_FINETUNE
    assert used["source"] == "default for a model that arrived with weights"


def test_an_untrained_model_keeps_the_finetune_defaults(tmp_path):
    ctx = tiny_run_context(tmp_path)

    config, used = finetune_settings(ctx, FinetuneConfig())

    assert (config.optimizer.name, config.optimizer.lr) == ("adam", 1e-3)
    assert used["source"] == "default (the model was not trained in this run)"


def test_inheriting_survives_the_resolved_recipe_and_a_tune_trial():
    # recipe.resolved.toml and every tune trial revalidate the recipe's dump: a fine-tune
    # that sets no optimizer must still continue the last training after that
    import tomllib

    from compress.recipe.loader import validate_recipe
    from compress.testing import tiny_recipe_dict
    from compress.tuning.trial import apply_params

    train = {"type": "train", "epochs": 1, "optimizer": {"name": "adamw", "lr": 5e-4}}
    prune = {"type": "prune", "ratio": 0.3, "finetune": {"epochs": 1}}
    recipe = validate_recipe(tiny_recipe_dict(stages=[train, prune]), "t.toml")

    again = validate_recipe(tomllib.loads(recipe.to_toml()), "recipe.resolved.toml")
    trial = apply_params(recipe, {"stages[1].ratio": 0.4}, "trial 1")

    for resolved in (recipe, again, trial):
        assert resolved.stages[1].finetune.optimizer is None
    set_here = {**prune, "finetune": {"epochs": 1, "optimizer": {"name": "sgd", "lr": 0.01}}}
    explicit = validate_recipe(tiny_recipe_dict(stages=[train, set_here]), "t.toml")
    assert explicit.stages[1].finetune.optimizer.name == "sgd"
