"""How many cases the property-based (Hypothesis) tests draw: the `ci` or `nightly` profile.

`COMPRESS_HYPOTHESIS_PROFILE=nightly python -m pytest -q` draws what the suites drew
before they had to fit CI's 10 minutes (956 cases; about 3 minutes more on 2 cores);
unset, or `ci`, draws at least 300 in all, and fuzzes recipe validation through one
suite (test_hostile_recipes.py) instead of three. The profiles are registered in
tests/conftest.py; each test names its counts with `examples(ci=..., nightly=...)`.

Example:
    >>> @settings(max_examples=examples(ci=40, nightly=80))  # doctest: +SKIP
"""

from __future__ import annotations

import os

import pytest

PROFILE_ENV = "COMPRESS_HYPOTHESIS_PROFILE"
PROFILES = ("ci", "nightly")


def profile() -> str:
    """The profile this run uses (`ci` unless the environment names another)."""
    name = os.environ.get(PROFILE_ENV, "ci")
    if name not in PROFILES:
        raise ValueError(f"{PROFILE_ENV}={name!r}: the profiles are {', '.join(PROFILES)}")
    return name


def examples(ci: int, nightly: int) -> int:
    """`max_examples` for one test under the active profile."""
    return nightly if profile() == "nightly" else ci


# A second fuzzer of recipe validation: CI runs one (test_hostile_recipes.py), nightly all.
nightly_only = pytest.mark.skipif(
    profile() != "nightly",
    reason=f"recipe fuzzing runs once in CI (test_hostile_recipes.py); {PROFILE_ENV}=nightly "
    "runs this one too",
)
