"""`compress.testing.run_cli`: in this process, with what the command sets put back,
and the same exit code and output as a real `python -m compress`."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings

import pytest
import torch

from compress.data import DATA_SOURCES
from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.unit

# A user model whose import and build change every piece of process state a command
# may touch, prints through Python and through file descriptor 2, registers an
# architecture, then fails its build (the run stops with exit 3 before training).
MISCHIEF = """
import logging, os, signal, sys, warnings
import torch
from compress.data import DATA_SOURCES

print("imported {tag}")
os.write(2, b"fd-level {tag}\\n")

@DATA_SOURCES.register("mischief-{tag}")
def registered(config):
    raise RuntimeError("never loaded")

def build(num_classes, input_shape):
    torch.set_num_threads(3)
    torch.manual_seed(12345)
    os.environ["COMPRESS_RUN_CLI_LEAK"] = "{tag}"
    logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("torch.onnx").setLevel(logging.CRITICAL)
    warnings.simplefilter("error")
    os.umask(0o077)
    signal.signal(signal.SIGTERM, lambda *_: None)
    sys.path.append("/nonexistent-{tag}")
    raise RuntimeError("build failed on purpose ({tag})")
"""


def _mischief_run(tmp_path, tag: str):
    (tmp_path / "mischief.py").write_text(MISCHIEF.format(tag=tag), encoding="utf-8")
    recipe = tiny_recipe_dict()
    recipe["model"] = {"architecture": "mischief:build"}
    path = write_recipe(tmp_path / "t.toml", recipe)
    return run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")


def _state() -> dict:
    root = logging.getLogger()
    return {
        "cwd": os.getcwd(),
        "argv": sys.argv[:],
        "path": sys.path[:],
        "env": dict(os.environ),
        "threads": torch.get_num_threads(),
        "rng": torch.get_rng_state(),
        "handlers": root.handlers[:],
        "onnx_level": logging.getLogger("torch.onnx").level,
        "filters": warnings.filters[:],
        "sigterm": signal.getsignal(signal.SIGTERM),
        "umask": os.umask(os.umask(0o022)),
        "data sources": DATA_SOURCES.names(),
    }


def test_a_command_in_this_process_leaves_the_process_as_it_found_it(tmp_path):
    before = _state()

    run = _mischief_run(tmp_path, "a")

    assert run.returncode == 3, run.output
    assert "build failed on purpose (a)" in run.stderr
    assert "imported a" in run.stdout  # Python-level output is caught
    assert "fd-level a" in run.stderr  # and what C++ writes to descriptor 2
    after = _state()
    assert torch.equal(after.pop("rng"), before.pop("rng"))
    assert after == before
    assert "mischief" not in sys.modules


def test_the_next_test_imports_its_own_user_module_of_the_same_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    first = _mischief_run(tmp_path / "a", "first")
    second = _mischief_run(tmp_path / "b", "second")

    # the second module is imported and registers its architecture anew: no stale
    # module from the first folder, no "registered twice"
    assert "imported second" in second.stdout and "imported first" not in second.stdout
    assert "build failed on purpose (second)" in second.stderr, second.output
    assert first.returncode == second.returncode == 3


def test_an_exception_that_escapes_the_command_is_exit_1_with_a_traceback(tmp_path, monkeypatch):
    from compress.cli import main

    def explode(**_):
        raise RuntimeError("escaped")

    monkeypatch.setattr(main.commands["validate"], "callback", explode)
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("validate", path, cwd=tmp_path)

    assert run.returncode == 1
    assert "Traceback" in run.stderr and "RuntimeError: escaped" in run.stderr


def test_warnings_reach_the_commands_stderr_as_in_a_fresh_process(tmp_path, monkeypatch):
    from compress.cli import main

    def warn(**_):
        warnings.warn("careful", UserWarning, stacklevel=1)
        warnings.warn("old", DeprecationWarning, stacklevel=1)  # hidden by default

    monkeypatch.setattr(main.commands["validate"], "callback", warn)
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("validate", path, cwd=tmp_path)

    assert run.returncode == 0
    assert "UserWarning: careful" in run.stderr  # printed, not recorded by pytest
    assert "old" not in run.stderr


# subprocess: compares the in-process result with a real process's
@pytest.mark.subprocess
@pytest.mark.parametrize("epochs", [3, -3], ids=["valid", "invalid"])
def test_in_process_and_subprocess_give_the_same_exit_code_and_output(tmp_path, epochs):
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())
    args = ("validate", path, "--set", f"stages[0].epochs={epochs}")

    here = run_cli(*args, cwd=tmp_path)
    there = run_cli(*args, cwd=tmp_path, subprocess=True)

    assert (here.returncode, here.stdout, here.stderr) == (
        there.returncode,
        there.stdout,
        there.stderr,
    )
    assert here.returncode == (0 if epochs > 0 else 2)
