"""`import compress` stays light: heavy optional libraries load only where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

HEAVY = ("onnxruntime", "onnx", "onnxscript", "torch_pruning", "optuna")

_PROBE = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
"""


def _heavy_modules_after_importing(*modules: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE % (HEAVY,), *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_importing_the_package_cli_and_recipe_loads_no_heavy_library():
    loaded = _heavy_modules_after_importing("compress", "compress.cli", "compress.recipe")

    assert loaded == []


@pytest.mark.parametrize("module", ["compress.stages", "compress.runner"])
def test_importing_stages_and_runner_loads_no_heavy_library(module):
    assert _heavy_modules_after_importing(module) == []


def test_the_probe_sees_a_heavy_import():
    # The checks above can fail: a heavy module that is imported is reported.
    assert _heavy_modules_after_importing("compress", "onnx") == ["onnx"]
