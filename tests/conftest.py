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


# Files whose tests share an xdist worker with other files' (`-n 2 --dist loadgroup`):
# the speed comparisons run one after another, and each server starts once. Every
# other file is a group of its own, so its module fixtures are built once. The table
# mirrors the files' `xdist_group` marks (tests/test_conftest.py checks it): with
# pytest 9, xdist's own loadgroup no longer sees the marks (it renames `item._nodeid`,
# which pytest 9's nodeid ignores), so the scheduler below reads this table instead.
XDIST_GROUPS = {
    "tests/integration/test_prune_speed.py": "timing",
    "tests/integration/test_speed_flags.py": "timing",
    "tests/integration/test_bench_and_providers.py": "timing",
    "tests/integration/test_tracking.py": "servers",
    "tests/integration/test_shared_study.py": "servers",
}


def xdist_scope(nodeid: str) -> str:
    """The xdist work unit of a test: its file's group, or its file."""
    path = nodeid.split("::", 1)[0]
    return XDIST_GROUPS.get(path, path)


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: unknown under -p no:xdist
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadgroup`: whole files (or groups of files) per worker."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FileOrGroupScheduling(config, log)


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
