"""Per-layer recipe tables and lists: which setting each layer (or graph node) gets.

Several recipe keys name layers: a prune stage's `layer_ratios` (table) and
`ignored_layers` (list), a quantize stage's `layers` (table) and `exclude` (list).
Each entry is an exact name or a `re:` pattern, and they all resolve the same way:

- An exact name beats a `re:` pattern, and a pattern beats the default.
- A pattern must match the whole name (`re.fullmatch`): `re:features\\.1` is
  `features.1`, not `features.10`.
- Among patterns, the first listed that matches a name wins.
- An exact name the model does not have, or a pattern matching no name, is a
  `RecipeError` naming the key, the entry and the names there are: a typo must
  never silently leave a layer the user meant to protect unprotected.

Example:
    >>> resolve_per_layer(["a.0", "a.1", "b"], {"a.1": 8, "re:a\\\\..*": 2}, 4, "layers")
    {'a.0': 2, 'a.1': 8, 'b': 4}
    >>> match_names(["b", "re:a\\\\..*"], ["a.0", "a.1", "b"], "ignored_layers")
    ['b', 'a.0', 'a.1']
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TypeVar

from compress.errors import RecipeError

V = TypeVar("V")

PATTERN_PREFIX = "re:"
LISTED_NAMES = 20
"""An error lists at most this many of the names there are."""


def _listing(names: Sequence[str], what: str) -> str:
    if not names:
        return f"the model has no {what}s"
    if len(names) <= LISTED_NAMES:
        return f"allowed: {', '.join(names)}"
    shown = ", ".join(names[:LISTED_NAMES])
    return f"allowed (first {LISTED_NAMES} of {len(names)}): {shown}, ..."


def _pattern(entry: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(entry[len(PATTERN_PREFIX) :])
    except re.error as exc:
        raise RecipeError(
            f"{key} entry '{entry}' is not a valid regular expression: {exc}"
        ) from exc


def _matches(entry: str, names: Sequence[str], key: str, what: str) -> list[str]:
    """The names `entry` selects, in `names` order; none is a RecipeError."""
    if entry.startswith(PATTERN_PREFIX):
        pattern = _pattern(entry, key)
        found = [name for name in names if pattern.fullmatch(name)]
        reason = "the pattern fully matches none of them"
    else:
        found = [entry] if entry in names else []
        reason = f"no {what} has that exact name"
    if not found:
        raise RecipeError(
            f"{key} entry '{entry}' matches no {what} ({reason}); {_listing(names, what)}"
        )
    return found


def resolve_per_layer(
    names: Iterable[str],
    overrides: dict[str, V],
    default: V,
    key: str,
    what: str = "layer",
) -> dict[str, V]:
    """The setting of every name in `names`, by the precedence in the module docstring.

    Args:
        names: the model's layer (or node) names, in model order.
        overrides: the recipe table, `{exact name or "re:pattern": setting}`.
        default: the setting of a name no entry selects.
        key: the recipe key, for errors (e.g. "layer_ratios").
        what: what a name is, for errors ("layer", "module", "node").

    Returns:
        {name: setting} for every name, in `names` order.

    Raises:
        RecipeError: an entry selects no name, or a pattern is not a valid regex.
    """
    names = list(names)
    exact: dict[str, V] = {}
    patterns: list[tuple[re.Pattern[str], V]] = []
    for entry, value in overrides.items():
        _matches(entry, names, key, what)  # every entry must select something
        if entry.startswith(PATTERN_PREFIX):
            patterns.append((_pattern(entry, key), value))
        else:
            exact[entry] = value
    settings: dict[str, V] = {}
    for name in names:
        if name in exact:
            settings[name] = exact[name]
        else:
            settings[name] = next((v for p, v in patterns if p.fullmatch(name)), default)
    return settings


def match_names(
    entries: Iterable[str], names: Iterable[str], key: str, what: str = "layer"
) -> list[str]:
    """The list form (`ignored_layers`, `exclude`): the names the entries select.

    Entry by entry, in order; a pattern's matches come in `names` order. A name that
    two entries select appears twice. An entry selecting nothing is a RecipeError.
    """
    names = list(names)
    return [name for entry in entries for name in _matches(entry, names, key, what)]
