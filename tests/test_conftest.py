"""The suite's own guard: a test that leaves files in the working directory fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# subprocess: the guard is checked by running pytest on an inner test file
pytestmark = [pytest.mark.unit, pytest.mark.subprocess]

ROOT = Path(__file__).resolve().parents[1]

_INNER_TESTS = """
from pathlib import Path


def test_writes_into_cwd():
    Path("stray.txt").write_text("x")


def test_writes_into_tmp_path(tmp_path):
    (tmp_path / "fine.txt").write_text("x")
"""


def test_guard_fails_a_test_that_writes_into_the_working_directory(tmp_path):
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_inner.py").write_text(_INNER_TESTS, encoding="utf-8")

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"],
        cwd=tmp_path,
        # the copied conftest imports the repository's `tests` package (tests/properties.py)
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1, result.stdout
    assert "ERROR at teardown of test_writes_into_cwd" in result.stdout
    assert "left new files in the working directory" in result.stdout
    assert "stray.txt" in result.stdout
    # The body of the offending test passed; its teardown (the guard) is the error.
    assert "2 passed, 1 error" in result.stdout
    assert "test_writes_into_tmp_path" not in result.stdout
