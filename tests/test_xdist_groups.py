"""The xdist scheduling table in tests/conftest.py matches the files' `xdist_group` marks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import XDIST_GROUPS, xdist_scope

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_every_xdist_group_mark_is_in_the_scheduling_table_and_back():
    marked = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        groups = set(re.findall(r"xdist_group\(\"(\w+)\"\)", path.read_text(encoding="utf-8")))
        if groups:
            assert len(groups) == 1, f"{path}: one xdist group per file, found {groups}"
            marked[path.relative_to(ROOT).as_posix()] = groups.pop()

    assert marked == XDIST_GROUPS


def test_a_grouped_file_shares_its_worker_and_any_other_file_keeps_its_own():
    prune = xdist_scope("tests/integration/test_prune_speed.py::test_a[x]")
    flags = xdist_scope("tests/integration/test_speed_flags.py::test_b")

    assert prune == flags == "timing"
    assert xdist_scope("tests/unit/test_data.py::test_c[1]") == "tests/unit/test_data.py"
