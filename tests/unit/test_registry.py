"""Registries: duplicate names, unknown names, and recipe types that match registrations."""

from __future__ import annotations

import inspect
import typing

import pytest

from compress.data import DATA_SOURCES
from compress.errors import RecipeError
from compress.models import FAMILIES
from compress.recipe.schema import MODEL_CONFIGS, DataConfig
from compress.recipe.schema.models import USER_ARCHITECTURE
from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, STAGE_CONFIGS
from compress.registry import Registry, import_callable
from compress.stages import STAGES
from compress.stages.quantize_methods import QUANTIZE_METHODS

pytestmark = pytest.mark.unit


def _first():
    return 1


def _second():
    return 2


def _stage_configs() -> dict[str, type]:
    """Recipe `type` -> config class, from the recipe layer's registry; each class's
    `type` literal must be the name it is registered under."""
    configs = {}
    for name, config in STAGE_CONFIGS.items():
        (literal,) = typing.get_args(config.model_fields["type"].annotation)
        assert literal == name
        configs[name] = config
    return configs


def test_registering_a_name_twice_names_both_places():
    registry = Registry("widget")
    registry.register("w")(_first)

    with pytest.raises(ValueError) as info:
        registry.register("w")(_second)

    here = inspect.getsourcefile(_first)
    first_line = inspect.getsourcelines(_first)[1]
    second_line = inspect.getsourcelines(_second)[1]
    assert str(info.value) == (
        f"widget 'w' registered twice: at {here}:{first_line} and at {here}:{second_line}"
    )
    assert registry.get("w") is _first


def test_unknown_name_lists_allowed_names():
    registry = Registry("widget")
    registry.register("beta")(_second)
    registry.register("alpha")(_first)

    with pytest.raises(RecipeError) as info:
        registry.get("gamma")

    assert str(info.value) == "unknown widget 'gamma'; allowed: alpha, beta"


def test_registry_lookup_and_listing():
    registry = Registry("widget")
    registry.register("b")(_second)
    registry.register("a")(_first)

    assert registry.get("a") is _first
    assert registry.names() == ["a", "b"]
    assert list(registry) == ["b", "a"]  # registration order
    assert "a" in registry and "c" not in registry


def test_unknown_stage_lists_registered_stages():
    with pytest.raises(RecipeError) as info:
        STAGES.get("nope")

    assert str(info.value) == f"unknown stage 'nope'; allowed: {', '.join(STAGES.names())}"


def test_every_stage_config_type_has_a_registered_stage_and_vice_versa():
    config_types = set(_stage_configs())

    assert config_types == set(STAGES.names())


@pytest.mark.parametrize("stage_type", sorted(STAGES.names()))
def test_registered_stage_uses_the_config_class_of_its_type(stage_type):
    configs = _stage_configs()

    stage_class = STAGES.get(stage_type)

    assert stage_type in configs, f"stage {stage_type!r} has no config in StageConfig"
    assert stage_class.config_class is configs[stage_type]


def test_builtin_families_are_registered_with_their_config_classes():
    builtin = ["cnn", "hf-encoder", "mlp", "mobilenet", "resnet", "transformer", USER_ARCHITECTURE]

    assert set(builtin) <= set(FAMILIES.names())
    assert FAMILIES.names() == MODEL_CONFIGS.names()
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        assert MODEL_CONFIGS.get(name) is family.config_class
        assert family.name == name
        if name != USER_ARCHITECTURE:  # a config's architecture literal is its family's name
            field = family.config_class.model_fields["architecture"]
            (literal,) = typing.get_args(field.annotation)
            assert literal == name


def test_every_quantize_method_config_has_a_registered_method_and_vice_versa():
    assert QUANTIZE_METHOD_CONFIGS.names() == QUANTIZE_METHODS.names()
    for name in QUANTIZE_METHODS.names():
        assert QUANTIZE_METHODS.get(name).config_class is QUANTIZE_METHOD_CONFIGS.get(name)


def test_registering_the_same_object_again_is_allowed_another_is_not():
    registry = Registry("widget")
    registry.ensure("w", _first)
    registry.ensure("w", _first)

    with pytest.raises(ValueError, match="registered twice"):
        registry.ensure("w", _second)


@pytest.mark.parametrize("name", DATA_SOURCES.names())
def test_every_registered_data_source_validates_in_a_recipe(name):
    # file sources (labelled texts, image folders) need their path (a missing one is a
    # recipe error)
    needs_file = {"csv": "reviews.csv", "jsonl": "reviews.jsonl", "image-folder": "images"}
    config = DataConfig(source=name, path=needs_file.get(name))

    assert config.source == name


def test_import_callable_finds_a_function():
    function = import_callable("compress.testing:tiny_recipe_dict", "data.source")

    assert function()["name"] == "tiny"


def test_import_callable_unknown_module_names_key_and_module():
    with pytest.raises(RecipeError) as info:
        import_callable("compress_no_such_module:f", "model.architecture")

    assert str(info.value).startswith(
        "model.architecture: cannot import module 'compress_no_such_module'"
    )


def test_import_callable_missing_attribute_names_key_and_attribute():
    with pytest.raises(RecipeError) as info:
        import_callable("compress.testing:no_such_function", "data.source")

    assert str(info.value) == "data.source: 'compress.testing' has no callable 'no_such_function'"
