"""A data source added from outside the package through `register_data_source` alone:
its own `[data]` keys validate (a typo names the key path), the loader hands it its
config, and a recipe trains and exports on what it returns."""

from __future__ import annotations

import json
from contextlib import ExitStack

import numpy as np
import pytest
from pydantic import Field

from compress.data import DATA_SOURCES, RawData, load_data, register_data_source
from compress.errors import RecipeError
from compress.recipe import validate_recipe
from compress.recipe.schema import DATA_CONFIGS, DataConfig
from compress.runner import Runner
from compress.testing import tiny_recipe_dict

pytestmark = pytest.mark.unit

TRAIN = {"type": "train", "epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}


class StripesConfig(DataConfig):
    """`source = "toy-stripes"`: 8x8 images of one bright row; the class is the row."""

    rows: int = Field(4, ge=2, le=8, description="Classes: which of the first `rows` rows.")
    samples: int = Field(400, ge=50, description="Images drawn.")


def load_stripes(config: StripesConfig) -> RawData:
    generator = np.random.default_rng(config.samples)
    labels = generator.integers(0, config.rows, config.samples)
    images = generator.normal(0.0, 0.3, (config.samples, 1, 8, 8)).astype(np.float32)
    images[np.arange(config.samples), 0, labels, :] += 2.0
    return RawData(
        x_train=images,
        y_train=labels.astype(np.int64),
        scale=1.0,
        description=f"toy stripes, {config.rows} classes",
        origin="toy-stripes",
    )


@pytest.fixture
def stripes():
    """Register the toy source; the registries are restored afterwards."""
    with ExitStack() as stack:
        for registry in (DATA_SOURCES, DATA_CONFIGS):
            stack.enter_context(registry.scoped())
        register_data_source("toy-stripes", config_class=StripesConfig)(load_stripes)
        yield


def _recipe(**data) -> dict:
    return tiny_recipe_dict(data={"source": "toy-stripes", **data}, stages=[TRAIN])


def test_a_registered_source_validates_its_own_keys(stripes):
    recipe = validate_recipe(_recipe(rows=3), "t.toml")

    assert isinstance(recipe.data, StripesConfig)
    assert recipe.data.rows == 3
    with pytest.raises(RecipeError) as typo:
        validate_recipe(_recipe(rowz=3), "t.toml")
    assert str(typo.value) == "t.toml: data.rowz: unknown key, got 3"
    with pytest.raises(RecipeError) as bound:
        validate_recipe(_recipe(rows=9), "t.toml")
    assert str(bound.value).startswith("t.toml: data.rows: ")


def test_an_unregistered_source_is_refused_with_the_allowed_names():
    with pytest.raises(RecipeError) as info:
        validate_recipe(_recipe(), "t.toml")

    message = str(info.value)
    assert message.startswith("t.toml: data.source: unknown data source 'toy-stripes'")
    assert "sklearn-digits" in message and "package.module:function" in message


def test_the_loader_gets_its_own_config(stripes):
    recipe = validate_recipe(_recipe(rows=3, samples=300), "t.toml")

    bundle = load_data(recipe.data, seed=0)

    assert bundle.num_classes == 3
    assert bundle.train.x.shape[1:] == (1, 8, 8)


def test_a_recipe_trains_and_exports_on_a_registered_source(stripes, tmp_path):
    raw = tiny_recipe_dict(data={"source": "toy-stripes"}, stages=[TRAIN, {"type": "export"}])
    recipe = validate_recipe(raw, "t.toml")

    outcome = Runner(recipe, tmp_path / "run", use_cache=False).run()

    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert outcome.exit_code == 0, report
    # one bright row out of four: a model that learnt anything is far above 25%
    assert report["stages"][-1]["metrics"]["accuracy"] > 0.9
    resolved = (tmp_path / "run" / "recipe.resolved.toml").read_text()
    assert 'source = "toy-stripes"' in resolved and "rows = 4" in resolved
