"""docs/recipe-reference.md is what scripts/gen_recipe_reference.py writes from the
registries now: a key, stage or method added without regenerating it fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "recipe-reference.md"


def _fresh() -> str:
    # a fresh interpreter: a plugin a test registered in this process is not a recipe key
    code = "import sys; from scripts.gen_recipe_reference import render; sys.stdout.write(render())"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_committed_recipe_reference_is_fresh():
    assert DOC.read_text(encoding="utf-8") == _fresh(), (
        "docs/recipe-reference.md is stale: run python scripts/gen_recipe_reference.py"
    )


def test_the_reference_lists_every_registered_stage_and_method():
    from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, STAGE_CONFIGS

    text = DOC.read_text(encoding="utf-8")

    for name in STAGE_CONFIGS.names():
        assert f'## [[stages]] type = "{name}"' in text
    for name, config in QUANTIZE_METHOD_CONFIGS.items():
        assert f'## [[stages]] type = "quantize", {config.method_label(name)}\n' in text
