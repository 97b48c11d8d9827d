"""Suite-wide settings and the guard that keeps tests from writing outside tmp_path."""

from __future__ import annotations

import os

# One intra-op thread: on 2-core machines a second thread competing with another
# process makes torch eager orders of magnitude slower (see FIELD-NOTES.md).
# Set before torch is imported; subprocesses (the CLI tests) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

from tests.properties import PROFILES, profile  # noqa: E402

torch.set_num_threads(1)

# Hypothesis keeps caches in ./.hypothesis even with database=None: keep them out of
# the working directory too.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "compress-tests-hypothesis")

# `ci` (the default) and `nightly` differ in the counts each test asks for through
# tests.properties.examples; the profiles carry what every property test shares.
for _name in PROFILES:
    settings.register_profile(_name, database=None, deadline=None, print_blob=True)
settings.load_profile(profile())

# Caches written by pytest and linters (possibly running beside the
# suite), not by the code under test.
_IGNORED = {
    ".pytest_cache",
    "__pycache__",
    ".ruff_cache",
    ".mypy_cache",
    ".coverage",
}


@pytest.fixture(autouse=True)
def _no_new_files_in_cwd():
    """Fail a test that leaves new files in the working directory (use tmp_path)."""
    cwd = Path.cwd()
    before = set(os.listdir(cwd))
    yield
    new = sorted(set(os.listdir(cwd)) - before - _IGNORED)
    if new:
        pytest.fail(
            f"the test left new files in the working directory {cwd}: {', '.join(new)}; "
            "tests must write only under tmp_path",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def digits_bundle():
    """sklearn-digits split with the default DataConfig and seed 0 (loaded once)."""
    from compress.data import load_data
    from compress.recipe.schema import DataConfig

    return load_data(DataConfig(), seed=0)
