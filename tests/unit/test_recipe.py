"""Recipe loading: errors that name the file and key path, cross-stage rules, overrides."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.errors import RecipeError
from compress.recipe import apply_override, load_recipe, validate_recipe
from compress.recipe.loader import format_key_path, parse_key_path
from compress.recipe.schema import AdamConfig, EarlyStoppingConfig, SGDConfig
from compress.testing import tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.unit

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _stage(**fields):
    return {"type": "train", **fields}


def _load_error(tmp_path: Path, recipe: dict, overrides=()) -> str:
    path = write_recipe(tmp_path / "t.toml", recipe)
    with pytest.raises(RecipeError) as info:
        load_recipe(path, overrides)
    return str(info.value)


# --------------------------------------------------------------------------- field errors


def test_unknown_key_names_file_and_key_path(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(optimizr={"name": "adam"}), {"type": "export"}])

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: stages[0].optimizr: unknown key"


def test_unknown_key_in_nested_table_names_full_path(tmp_path):
    recipe = tiny_recipe_dict(
        stages=[_stage(optimizer={"name": "adam", "lrr": 0.1}), {"type": "export"}]
    )

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: stages[0].optimizer.lrr: unknown key, got 0.1"


def test_unknown_top_level_key(tmp_path):
    recipe = tiny_recipe_dict(budget={"accuracy_min": 0.9})

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: budget: unknown key"


def test_out_of_range_value_names_bound_and_value(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(epochs=-3), {"type": "export"}])

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: stages[0].epochs: must be > 0, got -3"


def test_fraction_budget_out_of_range(tmp_path):
    recipe = tiny_recipe_dict(budgets={"accuracy_min": 95})

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: budgets.accuracy_min: must be <= 1.0, got 95"


def test_wrong_type_names_path_expected_type_and_value(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(epochs="many"), {"type": "export"}])

    message = _load_error(tmp_path, recipe)

    assert message.startswith("t.toml: stages[0].epochs: ")
    assert "valid integer" in message
    assert message.endswith("got 'many'")


def test_every_error_is_reported_one_per_line(tmp_path):
    recipe = tiny_recipe_dict(seed=-1, stages=[_stage(epochs=0, batch_size=0), {"type": "export"}])

    message = _load_error(tmp_path, recipe)

    assert message.splitlines() == [
        "t.toml: seed: must be >= 0, got -1",
        "t.toml: stages[0].epochs: must be > 0, got 0",
        "t.toml: stages[0].batch_size: must be > 0, got 0",
    ]


def test_unknown_stage_type_lists_allowed_types(tmp_path):
    recipe = tiny_recipe_dict(stages=[{"type": "prunee"}])

    message = _load_error(tmp_path, recipe)

    assert message.startswith("t.toml: stages[0].type: must be one of ")
    assert "'prunee'" in message
    for allowed in ("train", "distill", "prune", "quantize", "export"):
        assert allowed in message


def test_unknown_optimizer_lists_allowed_names(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(optimizer={"name": "lion"})])

    message = _load_error(tmp_path, recipe)

    assert message.startswith("t.toml: stages[0].optimizer.name: must be one of ")
    assert message.endswith("got 'lion'")
    for allowed in ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"):
        assert allowed in message


def test_literal_choice_error_lists_allowed_values(tmp_path):
    recipe = tiny_recipe_dict(data={"augment": "rotate"})

    message = _load_error(tmp_path, recipe)

    assert message == (
        "t.toml: data.augment: must be one of 'none', 'crop' or 'crop-flip', got 'rotate'"
    )


def test_missing_required_key(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(schedule={"name": "step"})])

    message = _load_error(tmp_path, recipe)

    assert message == "t.toml: stages[0].schedule.step_size: required key is missing"


def test_unknown_data_source_lists_builtins(tmp_path):
    recipe = tiny_recipe_dict(data={"source": "mnist"})

    message = _load_error(tmp_path, recipe)

    assert message.startswith("t.toml: data.source: unknown data source 'mnist'; allowed: ")
    assert "sklearn-digits, fashion-mnist, npz" in message


def test_toml_syntax_error_names_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "x"\n[[stages]\ntype = "train"\n', encoding="utf-8")

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    assert str(info.value).startswith("broken.toml: TOML syntax error: ")
    assert "line 2" in str(info.value)


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.toml"

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    assert str(info.value) == f"{path}: recipe file not found"


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))

    with pytest.raises(RecipeError) as info:
        load_recipe(path)

    assert str(info.value).startswith("latin.toml: not UTF-8 text")


# --------------------------------------------------------------------------- cross-stage rules


def _order_error(tmp_path: Path, stages: list[dict], **extra) -> str:
    return _load_error(tmp_path, tiny_recipe_dict(stages=stages, **extra))


def test_export_must_be_last(tmp_path):
    message = _order_error(tmp_path, [_stage(), {"type": "export"}, _stage(name="again")])

    assert message == (
        "t.toml: stages: export must be the last stage (stage order: train -> export -> train)"
    )


def test_only_export_may_follow_quantize(tmp_path):
    stages = [_stage(), {"type": "quantize"}, _stage(name="again"), {"type": "export"}]

    message = _order_error(tmp_path, stages)

    assert message == (
        "t.toml: stages: only export may follow quantize (its output is an int8 ONNX model) "
        "(stage order: train -> quantize -> train -> export)"
    )


def test_quantize_then_export_is_allowed(tmp_path):
    recipe = tiny_recipe_dict(stages=[_stage(), {"type": "quantize"}, {"type": "export"}])

    loaded = load_recipe(write_recipe(tmp_path / "t.toml", recipe))

    assert [stage.type for stage in loaded.stages] == ["train", "quantize", "export"]


def test_first_stage_must_train_an_untrained_model(tmp_path):
    message = _order_error(tmp_path, [{"type": "prune", "ratio": 0.5}, {"type": "export"}])

    assert message == (
        "t.toml: stages: the first stage is 'prune' but the model is untrained: start with "
        "a train stage or set model.weights (stage order: prune -> export)"
    )


def test_first_stage_may_skip_training_with_weights(tmp_path):
    recipe = tiny_recipe_dict(
        model={"weights": "runs/tiny/train/model.safetensors"},
        stages=[{"type": "prune", "ratio": 0.5}, {"type": "export"}],
    )

    loaded = load_recipe(write_recipe(tmp_path / "t.toml", recipe))

    assert loaded.model.weights == "runs/tiny/train/model.safetensors"
    assert loaded.stage_names() == ["prune", "export"]


def test_all_cross_stage_problems_reported_together(tmp_path):
    stages = [{"type": "export", "name": "x"}, _stage(name="x"), {"type": "export"}]

    message = _order_error(tmp_path, stages)

    order = "(stage order: export -> train -> export)"
    assert message.splitlines() == [
        f"t.toml: stages: stage names must be unique, repeated: x {order}",
        f"t.toml: stages: export must be the last stage {order}",
        f"t.toml: stages: at most one export stage {order}",
        "t.toml: stages: the first stage is 'export' but the model is untrained: start with "
        f"a train stage or set model.weights {order}",
    ]


def test_stage_names_number_repeated_types():
    recipe = validate_recipe(
        tiny_recipe_dict(stages=[_stage(), _stage(), _stage(name="polish"), {"type": "export"}])
    )

    assert recipe.stage_names() == ["train1", "train2", "polish", "export"]


# --------------------------------------------------------------------------- --set overrides


def test_override_sets_stage_field(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    recipe = load_recipe(path, ["stages[0].epochs=3"])

    assert recipe.stages[0].epochs == 3


def test_overrides_apply_in_order_and_parse_toml_literals(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    recipe = load_recipe(
        path,
        [
            "stages[0].epochs=3",
            "stages.0.epochs=4",
            "stages[0].optimizer.lr=0.25",
            "model.widths=[4, 6]",
            "data.source=npz",
            'description="quoted text"',
            "model.batch_norm=false",
        ],
    )

    assert recipe.stages[0].epochs == 4
    assert recipe.stages[0].optimizer.lr == 0.25
    assert recipe.model.widths == [4, 6]
    assert recipe.model.batch_norm is False
    assert recipe.data.source == "npz"
    assert recipe.description == "quoted text"


def test_override_creates_missing_nested_tables(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    recipe = load_recipe(
        path, ["stages[0].early_stopping.patience=2", "stages[0].budgets.params_max=5000"]
    )

    assert recipe.stages[0].early_stopping == EarlyStoppingConfig(patience=2)
    assert recipe.stages[0].budgets.params_max == 5000


def test_override_can_switch_a_discriminated_table(tmp_path):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    recipe = load_recipe(path, ["stages[0].optimizer={name = 'nesterov', lr = 0.1}"])

    assert recipe.stages[0].optimizer == SGDConfig(name="nesterov", lr=0.1)
    assert recipe.stages[0].optimizer.momentum == 0.9


def test_override_value_is_validated_like_the_file(tmp_path):
    recipe = tiny_recipe_dict()

    message = _load_error(tmp_path, recipe, ["stages[0].epochs=-3"])

    assert message == "t.toml: stages[0].epochs: must be > 0, got -3"


def test_override_of_unknown_key_is_an_unknown_key(tmp_path):
    message = _load_error(tmp_path, tiny_recipe_dict(), ["stages[0].epoch=3"])

    assert message == "t.toml: stages[0].epoch: unknown key, got 3"


@pytest.mark.parametrize(
    ("assignment", "expected"),
    [
        ("stages[5].epochs=3", "--set stages[5].epochs: no list item stages[5]"),
        ("stages[2]=3", "--set stages[2]: no list item stages[2]"),
        ("name.first=3", "--set name.first: name is not a table"),
        ("stages.epochs=3", "--set stages.epochs: stages is not a table"),
        ("stages[0].epochs", "--set: expected key.path=value, got 'stages[0].epochs'"),
        ("stages..epochs=3", "invalid key path 'stages..epochs'"),
        ("stages[x].epochs=3", "invalid key path 'stages[x].epochs'"),
    ],
)
def test_invalid_override_paths(assignment, expected):
    raw = tiny_recipe_dict()

    with pytest.raises(RecipeError) as info:
        apply_override(raw, assignment)

    assert str(info.value) == expected


def test_parse_and_format_key_path_are_inverse():
    parts = parse_key_path("stages[1].finetune.optimizer.lr")

    assert parts == ["stages", 1, "finetune", "optimizer", "lr"]
    assert format_key_path(parts) == "stages[1].finetune.optimizer.lr"
    assert parse_key_path("stages.1.lr") == ["stages", 1, "lr"]
    assert parse_key_path("a[0][2].b") == ["a", 0, 2, "b"]


_KEYS = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
_PARTS = st.lists(st.one_of(_KEYS, st.integers(0, 20)), min_size=1, max_size=6).filter(
    lambda parts: isinstance(parts[0], str)
)


@settings(database=None, max_examples=60, deadline=None)
@given(_PARTS)
def test_key_paths_round_trip(parts):
    text = format_key_path(parts)

    assert parse_key_path(text) == parts
    assert format_key_path(parse_key_path(text)) == text


# --------------------------------------------------------------------------- resolved recipe


_EVERY_STAGE = tiny_recipe_dict(
    model={"architecture": "resnet", "widths": [4, 8], "blocks_per_stage": 2},
    budgets={"accuracy_min": 0.5, "accuracy_drop_max": 0.1, "speedup_min": 1.5},
    stages=[
        _stage(
            epochs=3,
            optimizer={"name": "nesterov", "lr": 0.1, "weight_decay": 1e-4},
            schedule={"name": "multistep", "milestones": [1, 2], "warmup_epochs": 1},
            early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 0.01},
            grad_clip=1.0,
            budgets={"latency_p90_ms_max": 2.5},
        ),
        {
            "type": "distill",
            "student": {"architecture": "mlp", "hidden": [16]},
            "optimizer": {"name": "adamw", "betas": [0.8, 0.9]},
            "schedule": {"name": "onecycle", "max_lr": 0.01},
        },
        {
            "type": "prune",
            "ratio": 0.3,
            "steps": 2,
            "schedule": "agp",
            "ignored_layers": ["stem.0"],
            "finetune": {"epochs": 0, "optimizer": {"name": "rmsprop"}},
        },
        {"type": "quantize", "calibration": {"method": "percentile", "samples": 32}},
        {"type": "export", "parity_batch_sizes": [1, 3, 5]},
    ],
)


@pytest.mark.parametrize(
    "raw",
    [tiny_recipe_dict(), _EVERY_STAGE],
    ids=["tiny", "every-stage-type"],
)
def test_resolved_recipe_round_trips(raw):
    recipe = validate_recipe(raw, "t.toml")

    again = validate_recipe(tomllib.loads(recipe.to_toml()), "resolved.toml")

    assert again == recipe
    assert again.to_toml() == recipe.to_toml()


def test_resolved_recipe_fills_in_defaults():
    recipe = validate_recipe(tiny_recipe_dict())

    resolved = tomllib.loads(recipe.to_toml())

    assert resolved["data"]["val_fraction"] == 0.15
    assert resolved["stages"][0]["optimizer"] == {
        "name": "adam",
        "lr": 0.01,
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "weight_decay": 0.0,
    }
    assert resolved["stages"][1]["parity_batch_sizes"] == [1, 7]
    assert recipe.stages[0].optimizer == AdamConfig(name="adam", lr=0.01)


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_recipes_round_trip(path):
    recipe = load_recipe(path)

    again = validate_recipe(tomllib.loads(recipe.to_toml()), path.name)

    assert again == recipe
    assert re.fullmatch(r"[A-Za-z0-9_.-]+", recipe.name)
