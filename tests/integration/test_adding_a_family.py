"""A model family added from a test module through the public registration alone
(`tests/integration/pixel_mixer.py`, the guide's example) runs the whole pipeline:
train -> prune -> quantize -> export, validated, saved, reloaded and shipped."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.errors import RecipeError
from compress.models import FAMILIES, load_model
from compress.recipe.loader import load_recipe
from compress.testing import tiny_recipe_dict, write_recipe
from tests.integration import pixel_mixer
from tests.integration.pixel_mixer import PixelMixer, PixelMixerConfig

pytestmark = pytest.mark.integration

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-model-family.md"
STAGES = [
    {"type": "train", "epochs": 3, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
    {"type": "prune", "ratio": 0.5, "steps": 1, "round_to": 1, "finetune": {"epochs": 1}},
    {"type": "quantize", "calibration": {"samples": 32}},
    {"type": "export"},
]


def _recipe(tmp_path: Path, **model) -> Path:
    recipe = tiny_recipe_dict(stages=STAGES)
    recipe["model"] = {"architecture": "pixel-mixer", **model}
    return write_recipe(tmp_path / "family.toml", recipe)


def test_the_registration_puts_the_family_and_its_config_in_place():
    family = FAMILIES.get("pixel-mixer")

    assert family.config_class is PixelMixerConfig
    assert family.attention == ()  # the default: nothing for the attention adapters


def test_a_family_from_a_test_module_runs_train_prune_quantize_export(tmp_path):
    card = tmp_path / "CARD.md"
    card.write_text("pixel mixer: a worked example\n", encoding="utf-8")
    path = _recipe(tmp_path, channels=4, hidden=24, card=str(card))
    out = tmp_path / "run"

    result = CliRunner().invoke(main, ["run", str(path), "--out", str(out)])

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    stages = {stage["name"]: stage for stage in report["stages"]}
    assert list(stages) == ["train", "prune", "quantize", "export"]
    resolved = tomllib.loads((out / "recipe.resolved.toml").read_text(encoding="utf-8"))
    assert resolved["model"] == {
        "architecture": "pixel-mixer", "channels": 4, "hidden": 24, "card": str(card)
    }  # fmt: skip
    assert stages["train"]["metrics"]["accuracy"] > 0.8  # digits: it learned
    assert stages["prune"]["metrics"]["params"] < stages["train"]["metrics"]["params"]
    pruned, spec = load_model(out / "prune")  # model.json rebuilds it through the registry
    assert isinstance(pruned, PixelMixer) and isinstance(spec.config, PixelMixerConfig)
    assert pruned.hidden[0].out_features < 24
    assert (out / "final" / "model.onnx").is_file()
    assert (out / "final" / "CARD.md").read_text(encoding="utf-8") == card.read_text("utf-8")


def test_a_wrong_key_in_the_family_table_names_the_file_and_the_key_path(tmp_path):
    path = _recipe(tmp_path, chanels=4)

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    assert str(info.value) == "family.toml: model.chanels: unknown key, got 4"


def test_a_value_the_family_config_refuses_names_its_key_path(tmp_path):
    path = _recipe(tmp_path, hidden=0)

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    assert str(info.value) == "family.toml: model.hidden: must be > 0, got 0"


def test_an_unknown_architecture_lists_the_registered_family(tmp_path):
    path = _recipe(tmp_path)
    raw = path.read_text(encoding="utf-8").replace('"pixel-mixer"', '"pixel-mixr"')
    path.write_text(raw, encoding="utf-8")

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    message = str(info.value)
    assert message.startswith("family.toml: model.architecture: unknown architecture 'pixel-mixr'")
    assert "pixel-mixer" in message.split("allowed: ")[1]


def test_registering_the_name_again_names_both_places():
    class Another(pixel_mixer.PixelMixerFamily):
        pass

    with pytest.raises(ValueError) as info:
        pixel_mixer.register_family("pixel-mixer")(Another)

    message = str(info.value)
    assert message.startswith("architecture 'pixel-mixer' registered twice: at ")
    assert message.count("pixel_mixer.py:") == 1 and "test_adding_a_family.py:" in message
    assert FAMILIES.get("pixel-mixer") is pixel_mixer.PixelMixerFamily


def test_the_guide_shows_the_example_module_as_it_is():
    source = Path(pixel_mixer.__file__).read_text(encoding="utf-8")

    assert source in GUIDE.read_text(encoding="utf-8")
