"""Fixtures of the integration tests: the real servers (tests/servers.py) and one
finished run that the report, speed-flag and hostile-report tests share."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from compress.testing import CliRun, run_cli, tiny_recipe_dict, write_recipe
from tests.servers import mlflow_server, postgres_server, postgres_url  # noqa: F401

# Every stage type, one budget missed, and a stage known to be slower than its input:
# the distill stage's student has ~50x the teacher's MACs (1.2M vs 23k), more than
# any round-to-round drift, so it is flagged; prune and quantize then shrink it.
SHARED_RECIPE = tiny_recipe_dict(
    runtime={"rounds": 5, "repeats": 20},
    budgets={"accuracy_min": 0.5, "params_max": 10},  # params_max = 10 cannot hold: exit 1
    stages=[
        {"type": "train", "epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
        {
            "type": "distill",
            "epochs": 1,
            "batch_size": 64,
            "student": {"architecture": "cnn", "widths": [64, 128]},
        },
        {"type": "prune", "ratio": 0.5, "finetune": {"epochs": 1}},
        {"type": "quantize", "calibration": {"samples": 64}},
        {"type": "export"},
    ],
)


@dataclass(frozen=True)
class SharedRun:
    """A finished `compress run` of SHARED_RECIPE with `--junit`; read it, never change it
    (`copy` gives a test its own).

    Attributes:
        root: the folder holding recipe, run folder and JUnit file.
        recipe: the recipe file (`t.toml`).
        out: the run folder.
        junit: the JUnit file the run wrote.
        cli: the command's exit code and output.
    """

    root: Path
    recipe: Path
    out: Path
    junit: Path
    cli: CliRun

    def copy(self, folder: Path) -> Path:
        """A copy of the run folder at `folder`/run, the test's to change."""
        target = folder / "run"
        shutil.copytree(self.out, target)
        return target


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory) -> SharedRun:
    """train -> distill -> prune -> quantize -> export on digits, run once per session
    (per xdist worker) instead of once per test file."""
    root = tmp_path_factory.mktemp("shared-run")
    recipe = write_recipe(root / "t.toml", SHARED_RECIPE)
    out, junit = root / "run", root / "junit.xml"
    cli = run_cli("run", recipe, "--out", out, "--junit", junit, cwd=root, out=out)
    assert cli.returncode == 1, cli.output  # the one missed budget, nothing else
    return SharedRun(root, recipe, out, junit, cli)
