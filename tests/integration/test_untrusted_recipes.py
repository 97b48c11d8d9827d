"""--no-user-code: a recipe from a pull request is checked without running its code.

Every `package.module:function` the recipe names (model, student, data source, tune
choices), however it got there (file or --set), is refused with exit 2 naming its key
path, and the module is never imported.
"""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
import tomli_w
from click.testing import CliRunner

from compress.cli import main
from compress.recipe import validate_recipe
from compress.recipe.loader import user_code_keys
from compress.testing import tiny_recipe_dict

pytestmark = pytest.mark.integration


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """An importable module whose import leaves a marker file: (module name, marker)."""
    name = f"untrusted_{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "imported"
    source = f"""
        import pathlib
        import numpy as np
        from torch import nn

        pathlib.Path({str(marker)!r}).write_text("ran")

        def load():
            x = np.random.default_rng(0).normal(size=(60, 1, 8, 8)).astype(np.float32)
            return {{"x_train": x, "y_train": np.arange(60) % 3}}

        def build(num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
    """
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name, marker


def _invoke(tmp_path, recipe: dict, *args: str):
    path = tmp_path / "pr.toml"
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    command, *rest = args
    extra = ["--out", str(tmp_path / "run")] if command in ("run", "tune") else []
    return CliRunner().invoke(main, [command, str(path), *extra, *rest])


@pytest.mark.parametrize("command", ["validate", "run", "tune"])
def test_no_user_code_refuses_every_callable_naming_its_key_path(tmp_path, payload, command):
    name, marker = payload
    recipe = tiny_recipe_dict(
        data={"source": f"{name}:load"},
        model={"architecture": f"{name}:build"},
        stages=[
            {"type": "train", "epochs": 1},
            {"type": "distill", "epochs": 1, "student": {"architecture": f"{name}:build"}},
        ],
    )
    recipe["model"] = {"architecture": f"{name}:build"}  # a table of its own, no widths
    if command == "tune":
        epochs = {"type": "int", "low": 1, "high": 2}
        recipe["tune"] = {"stage": "train", "trials": 1, "space": {"stages[0].epochs": epochs}}

    result = _invoke(tmp_path, recipe, command, "--no-user-code")

    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: pr.toml: {where}: '{name}:{function}' is code the recipe would import and "
        "run; refused by --no-user-code"
        for where, function in (
            ("data.source", "load"),
            ("model.architecture", "build"),
            ("stages[1].student.architecture", "build"),
        )
    ]
    assert not marker.exists() and name not in sys.modules  # never imported
    assert not (tmp_path / "run").exists()  # nothing written either


def test_an_override_that_brings_code_is_refused_too(tmp_path, payload):
    name, marker = payload

    result = _invoke(
        tmp_path, tiny_recipe_dict(), "run", "--no-user-code", "--set", f"data.source={name}:load"
    )

    assert result.exit_code == 2, result.output
    assert f"data.source: '{name}:load' is code the recipe would import" in result.output
    assert not marker.exists()


def test_a_recipe_without_code_passes_and_runs_under_the_flag(tmp_path):
    result = _invoke(
        tmp_path, tiny_recipe_dict(stages=[{"type": "train", "epochs": 1}]), "run", "--no-user-code"
    )

    assert result.exit_code in (0, 1), result.output  # ran: budgets decide the rest
    assert (tmp_path / "run" / "train").is_dir()


def test_without_the_flag_the_same_recipe_imports_its_code(tmp_path, payload):
    name, marker = payload
    recipe = tiny_recipe_dict(
        data={"source": f"{name}:load"}, stages=[{"type": "train", "epochs": 1}]
    )

    validated = _invoke(tmp_path, recipe, "validate")
    imported_by_validate = marker.exists()
    ran = _invoke(tmp_path, recipe, "run")

    assert validated.exit_code == 0 and not imported_by_validate  # validate never imports
    assert ran.exit_code in (0, 1), ran.output
    assert marker.read_text() == "ran"  # the test above could fail


def test_tune_choices_that_name_code_are_found():
    recipe = validate_recipe(
        tiny_recipe_dict(
            tune={
                "space": {
                    "data.source": {"type": "categorical", "choices": ["npz", "evil:load"]},
                    "stages[0].epochs": {"type": "int", "low": 1, "high": 2},
                }
            }
        )
    )

    assert user_code_keys(recipe) == [('tune.space."data.source".choices[1]', "evil:load")]
    assert user_code_keys(validate_recipe(tiny_recipe_dict())) == []
