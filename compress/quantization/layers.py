"""Per-layer settings from a recipe table: exact name, then `re:` pattern, then default."""

from __future__ import annotations

import re
from typing import TypeVar

from compress.errors import StageError

V = TypeVar("V")


def resolve_per_layer(
    names: list[str], overrides: dict[str, V], default: V, key: str
) -> dict[str, V]:
    """The setting of every name in `names`.

    An exact name beats a `re:` pattern (full match), a pattern beats `default`;
    among patterns the first listed that matches wins. An exact name the model does
    not have, or a pattern matching nothing, is an error naming `key`: a typo must not
    silently quantize a layer the user meant to protect.

    Example:
        >>> resolve_per_layer(["a.0", "a.1", "b"], {"a.1": 8, "re:a\\\\..*": 2}, 4, "layers")
        {'a.0': 2, 'a.1': 8, 'b': 4}
    """
    exact = {k: v for k, v in overrides.items() if not k.startswith("re:")}
    patterns = [(re.compile(k[3:]), v) for k, v in overrides.items() if k.startswith("re:")]
    for name in exact:
        if name not in names:
            raise StageError(f"{key} names {name!r}, which is not one of: {', '.join(names)}")
    for pattern, _ in patterns:
        if not any(pattern.fullmatch(name) for name in names):
            raise StageError(f"{key} pattern 're:{pattern.pattern}' matches nothing")
    settings = {}
    for name in names:
        if name in exact:
            settings[name] = exact[name]
        else:
            settings[name] = next((v for p, v in patterns if p.fullmatch(name)), default)
    return settings
