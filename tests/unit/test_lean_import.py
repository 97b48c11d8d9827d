"""`import compress` stays light: heavy optional libraries load only where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# subprocess: what `import compress` loads shows only in a fresh interpreter
pytestmark = [pytest.mark.unit, pytest.mark.subprocess]

HEAVY = ("onnxruntime", "onnx", "onnxscript", "torch_pruning", "optuna", "mlflow", "psycopg")

_PROBE = """
import json, sys
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(%r))))
"""


def _probe(code: str, *args: str) -> list[str]:
    """What `code` prints (JSON) when run in a fresh interpreter with `args`."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _heavy_modules_after_importing(*modules: str) -> list[str]:
    return _probe(_PROBE % (HEAVY,), *modules)


def test_importing_the_package_cli_and_recipe_loads_no_heavy_library():
    loaded = _heavy_modules_after_importing("compress", "compress.cli", "compress.recipe")

    assert loaded == []


@pytest.mark.parametrize("module", ["compress.stages", "compress.runner", "compress.tracking"])
def test_importing_stages_and_runner_loads_no_heavy_library(module):
    assert _heavy_modules_after_importing(module) == []


def test_the_probe_sees_a_heavy_import():
    # The checks above can fail: a heavy module that is imported is reported.
    assert _heavy_modules_after_importing("compress", "onnx") == ["onnx"]


_LAYER_PROBE = """
import json, sys
__import__(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.startswith(sys.argv[2]))))
"""


def _loaded_under(module: str, prefix: str) -> list[str]:
    return _probe(_LAYER_PROBE, module, prefix)


@pytest.mark.parametrize("module", ["compress.training", "compress.stages"])
def test_training_and_stages_do_not_import_the_distributed_package(module):
    # The training loop knows strategies, not launchers: compress.distributed builds on
    # compress.training, never the other way round (docs/architecture.md).
    assert _loaded_under(module, "compress.distributed") == []


def test_the_layer_probe_sees_the_distributed_package():
    assert "compress.distributed.strategy" in _loaded_under(
        "compress.distributed.strategy", "compress.distributed"
    )
