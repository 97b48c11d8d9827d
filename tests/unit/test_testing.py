"""The test helpers themselves: the tiny recipe stays valid as the schema evolves."""

from __future__ import annotations

import pytest
import torch

from compress.recipe import load_recipe, validate_recipe
from compress.testing import (
    TinyCNN,
    TinyResNet,
    deep_merge,
    tiny_bundle,
    tiny_recipe_dict,
    write_recipe,
)

pytestmark = pytest.mark.unit


def test_tiny_recipe_is_valid_and_tiny():
    recipe = validate_recipe(tiny_recipe_dict(), "tiny")

    assert recipe.stage_names() == ["train", "export"]
    assert recipe.stages[0].epochs == 2
    assert recipe.model.widths == [8, 16]
    assert (recipe.runtime.warmup, recipe.runtime.repeats, recipe.runtime.rounds) == (2, 5, 2)


def test_tiny_recipe_overrides_merge_tables_and_replace_lists():
    raw = tiny_recipe_dict(runtime={"repeats": 7}, stages=[{"type": "train"}])

    assert raw["runtime"]["repeats"] == 7 and raw["runtime"]["rounds"] == 2
    assert raw["stages"] == [{"type": "train"}]
    assert tiny_recipe_dict()["runtime"]["repeats"] == 5  # the default is not mutated


def test_deep_merge_does_not_change_its_inputs():
    base, overrides = {"a": {"b": [1]}}, {"a": {"c": 2}}

    merged = deep_merge(base, overrides)

    assert merged == {"a": {"b": [1], "c": 2}}
    assert base == {"a": {"b": [1]}} and overrides == {"a": {"c": 2}}
    merged["a"]["b"].append(2)
    assert base["a"]["b"] == [1]


def test_write_recipe_round_trips(tmp_path):
    path = write_recipe(tmp_path / "sub" / "t.toml", tiny_recipe_dict(seed=3))

    assert load_recipe(path).seed == 3


@pytest.mark.parametrize("model_class", [TinyCNN, TinyResNet])
def test_tiny_models_run_their_example_inputs(model_class):
    model = model_class(num_classes=3).eval()

    (x,) = model.example_inputs(batch_size=4, seed=1)

    assert x.shape == (4, *model.input_shape)
    assert torch.equal(x, model.example_inputs(batch_size=4, seed=1)[0])
    assert model(x).shape == (4, 3)


def test_tiny_bundle_shapes_and_balance():
    bundle = tiny_bundle(num_classes=4, per_class=(5, 3, 2))

    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (20, 12, 8)
    assert torch.bincount(bundle.train.y).tolist() == [5, 5, 5, 5]
    assert bundle.train.x.shape[1:] == (1, 8, 8) and bundle.train.x.dtype == torch.float32
    assert torch.equal(tiny_bundle().train.x, tiny_bundle().train.x)
