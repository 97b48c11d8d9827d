"""Recipe key paths (`stages[1].optimizer.lr`) and `--set key.path=value` overrides."""

from __future__ import annotations

import re
import tomllib
from typing import Any

from compress.errors import RecipeError

_INDEX = re.compile(r"^(?P<key>[^\[\]]*)((\[(?P<index>\d+)\])*)$")


def parse_key_path(path: str) -> list[str | int]:
    """Split `stages[1].optimizer.lr` (or `stages.1.optimizer.lr`) into parts.

    Example:
        >>> parse_key_path("stages[1].optimizer.lr")
        ['stages', 1, 'optimizer', 'lr']
    """
    parts: list[str | int] = []
    for piece in path.split("."):
        match = _INDEX.match(piece)
        if not piece or match is None:
            raise RecipeError(f"invalid key path {path!r}")
        key = match.group("key")
        if key.isdigit():
            parts.append(int(key))
        elif key:
            parts.append(key)
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", piece))
    return parts


def format_key_path(parts: list[str | int] | tuple[str | int, ...]) -> str:
    """Inverse of `parse_key_path`: ['stages', 1, 'lr'] -> 'stages[1].lr'."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _parse_override_value(text: str) -> Any:
    # A TOML literal when it parses as one (3, 0.1, true, [1, 2], "x"), else a bare string.
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """Apply one `key.path=value` override to the raw recipe dict, in place.

    Missing tables are created; list indices must exist.
    """
    if "=" not in assignment:
        raise RecipeError(f"{source}: expected key.path=value, got {assignment!r}")
    path_text, value_text = assignment.split("=", 1)
    parts = parse_key_path(path_text.strip())
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        where = format_key_path(parts[: depth + 1])
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise RecipeError(f"{source} {path_text.strip()}: no list item {where}")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise RecipeError(f"{source} {path_text.strip()}: {where} is not a table")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise RecipeError(
                f"{source} {path_text.strip()}: no list item {format_key_path(parts)}"
            )
    elif not isinstance(node, dict):
        raise RecipeError(
            f"{source} {path_text.strip()}: {format_key_path(parts[:-1])} is not a table"
        )
    node[last] = _parse_override_value(value_text.strip())
