"""A quantize table validates with its method's config class; errors name the method."""

from __future__ import annotations

import pytest

from compress.errors import RecipeError
from compress.recipe import validate_recipe
from compress.recipe.quantize_methods import (
    AutoConfig,
    FallbackMethodConfig,
    KMeansConfig,
    QATMethodConfig,
    StaticConfig,
)
from compress.recipe.stages import QuantizeStageConfig, method_name
from compress.testing import tiny_recipe_dict

pytestmark = pytest.mark.unit

TRAIN = {"type": "train", "epochs": 1}


def _error(quantize: object) -> str:
    raw = tiny_recipe_dict(stages=[TRAIN, quantize, {"type": "export"}])
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "digits.toml")
    return str(info.value)


@pytest.mark.parametrize(
    ("table", "config"),
    [
        ({}, StaticConfig),
        ({"fallback": {}}, FallbackMethodConfig),
        ({"mode": "qat"}, QATMethodConfig),
        ({"method": "kmeans"}, KMeansConfig),
        ({"format": "auto", "method": "uniform"}, AutoConfig),
    ],
)
def test_the_table_names_its_method(table, config):
    validated = QuantizeStageConfig.model_validate({"type": "quantize", **table})

    assert type(validated) is config
    assert method_name(validated.model_dump()) == method_name(table)


def test_a_key_of_another_method_names_both_methods():
    message = _error({"type": "quantize", "mode": "static", "blocks": 3, "bits": 3})

    assert message.splitlines() == [
        "digits.toml: stages[1] (quantize, mode = \"static\"): unknown key 'blocks'",
        "digits.toml: stages[1] (quantize, mode = \"static\"): unknown key 'bits' "
        '(a key of method = "kmeans", method = "pow2")',
    ]


def test_an_unknown_method_lists_the_methods_of_its_key():
    assert _error({"type": "quantize", "mode": "statc"}) == (
        "digits.toml: stages[1].mode: must be one of 'static', 'dynamic', 'qat', 'int4', "
        "got 'statc'"
    )
    assert _error({"type": "quantize", "format": ["auto"]}) == (
        "digits.toml: stages[1].format: must be one of 'qdq', 'auto', 'placement', got ['auto']"
    )


def test_a_nested_error_follows_the_method():
    message = _error({"type": "quantize", "mode": "qat", "qat": {"epochs": 0}})

    assert (
        message == 'digits.toml: stages[1] (quantize, mode = "qat"): qat.epochs: must be > 0, got 0'
    )


def test_a_method_rule_names_the_method():
    message = _error({"type": "quantize", "mode": "int4", "block_size": 48})

    assert message == (
        'digits.toml: stages[1] (quantize, mode = "int4"): block_size must be a power of 2, got 48'
    )


def test_qat_declares_what_the_loader_reads():
    qat = QuantizeStageConfig.model_validate({"type": "quantize", "mode": "qat"})
    static = QuantizeStageConfig.model_validate({"type": "quantize"})

    assert (qat.needs_torch(), qat.needs_labels()) == (True, True)
    assert (static.needs_torch(), static.needs_labels()) == (False, False)
    assert qat.followers == static.followers == ("export",)
