"""The one per-layer resolver: exact name, then first matching `re:` pattern, then default."""

from __future__ import annotations

import re

import pytest

from compress.errors import CompressError, RecipeError
from compress.recipe.per_layer import LISTED_NAMES, match_names, resolve_per_layer

NAMES = ["features.0", "features.4", "features.10", "head.1", "classifier"]


def test_exact_beats_pattern_beats_default():
    overrides = {"re:features\\..*": 2, "features.4": 8}

    settings = resolve_per_layer(NAMES, overrides, 4, "layers")

    assert settings == {
        "features.0": 2,  # pattern
        "features.4": 8,  # exact, though the pattern (listed first) matches too
        "features.10": 2,
        "head.1": 4,  # default
        "classifier": 4,
    }
    assert list(settings) == NAMES  # every name, in model order


def test_first_listed_matching_pattern_wins():
    overrides = {"re:features\\.1.*": "a", "re:features\\..*": "b", "re:.*0": "c"}

    settings = resolve_per_layer(NAMES, overrides, "d", "layer_ratios")

    assert settings["features.10"] == "a"  # all three match: the first listed wins
    assert settings["features.0"] == "b"  # the second and third match
    assert settings["classifier"] == "d"


def test_patterns_match_the_whole_name():
    settings = resolve_per_layer(["features.1", "features.10"], {"re:features\\.1": 1}, 0, "layers")

    assert settings == {"features.1": 1, "features.10": 0}  # re.fullmatch, not re.match
    with pytest.raises(RecipeError):
        resolve_per_layer(["features.10"], {"re:features\\.1": 1}, 0, "layers")


def test_unknown_exact_name_is_a_recipe_error_naming_key_entry_and_names():
    with pytest.raises(RecipeError) as info:
        resolve_per_layer(NAMES, {"features.9": 0.5}, None, "layer_ratios", "module")

    message = str(info.value)
    assert message.startswith("layer_ratios entry 'features.9' matches no module")
    assert f"allowed: {', '.join(NAMES)}" in message
    assert info.value.exit_code == 2
    assert isinstance(info.value, CompressError)


def test_pattern_matching_nothing_is_a_recipe_error():
    entry = "re:blocks\\..*"
    with pytest.raises(RecipeError, match=re.escape(f"exclude entry '{entry}' matches no")):
        resolve_per_layer(NAMES, {entry: "float"}, "int8", "exclude")


def test_a_typo_among_valid_entries_still_fails():
    with pytest.raises(RecipeError, match="'head.2'"):
        resolve_per_layer(NAMES, {"re:head.*": 1, "head.2": 2}, 0, "layers")


def test_invalid_pattern_is_a_recipe_error():
    with pytest.raises(RecipeError, match=re.escape("layers entry 're:features[' is not a valid")):
        resolve_per_layer(NAMES, {"re:features[": 1}, 0, "layers")


def test_many_names_are_listed_up_to_a_limit_with_a_count():
    names = [f"block.{i}" for i in range(LISTED_NAMES + 5)]

    with pytest.raises(RecipeError) as info:
        match_names(["nope"], names, "ignored_layers")

    message = str(info.value)
    assert f"first {LISTED_NAMES} of {LISTED_NAMES + 5}" in message
    assert f"block.{LISTED_NAMES - 1}" in message
    assert f"block.{LISTED_NAMES}" not in message


def test_list_form_keeps_entry_order_and_pattern_matches_in_name_order():
    assert match_names(["classifier", "re:features\\.[04]"], NAMES, "ignored_layers") == [
        "classifier",
        "features.0",
        "features.4",
    ]
    assert match_names([], NAMES, "ignored_layers") == []


def test_list_form_rejects_an_entry_matching_nothing():
    with pytest.raises(RecipeError, match="ignored_layers entry 'nope' matches no layer"):
        match_names(["classifier", "nope"], NAMES, "ignored_layers")
    with pytest.raises(RecipeError, match="ignored_layers entry 're:nope.*'"):
        match_names(["re:nope.*"], NAMES, "ignored_layers")


def test_quantization_and_pruning_share_the_resolver():
    from compress.pruning import structured
    from compress.quantization.layers import resolve_per_layer as quantization_resolver

    assert quantization_resolver is resolve_per_layer
    assert structured.resolve_per_layer is resolve_per_layer
    assert structured.match_names is match_names
