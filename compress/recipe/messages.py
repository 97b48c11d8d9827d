"""Pydantic validation errors rewritten as one line each: the file, the TOML key path,
and a short message (allowed values when there are few)."""

from __future__ import annotations

from typing import Any

from compress.recipe.keys import format_key_path


def _is_label(element: Any) -> bool:
    # a registry-dispatched table's kind, put in the location by its validator:
    # '(quantize, mode = "static")' (compress/recipe/quantize_config.py)
    return isinstance(element, str) and element.startswith("(") and element.endswith(")")


def user_location(loc: tuple[Any, ...], raw: Any) -> tuple[list[str | int], str, list[str | int]]:
    """The key path of an error location, split at the table kind named in it, if any.

    Walk the raw data alongside the location: an element that is neither a key
    present in the current table nor a list index, and is not the last element,
    is a union tag pydantic inserted (e.g. 'train') and is skipped, unless it is a
    kind label, which is returned with the path before and after it.

    Example:
        >>> user_location(("stages", 0, '(quantize, mode = "static")', "bits"),
        ...               {"stages": [{"bits": 3}]})
        (['stages', 0], '(quantize, mode = "static")', ['bits'])
    """
    parts: list[str | int] = []
    before: list[str | int] | None = None
    label = ""
    node = raw
    for position, element in enumerate(loc):
        is_last = position == len(loc) - 1
        if isinstance(element, int) and isinstance(node, list) and element < len(node):
            parts.append(element)
            node = node[element]
        elif isinstance(node, dict) and element in node:
            parts.append(element)
            node = node[element]
        elif _is_label(element) and before is None:
            before, label, parts = parts, element, []
        elif not is_last and isinstance(element, str):
            continue
        else:
            parts.append(element)
            node = None
    return (parts, "", []) if before is None else (before, label, parts)


# Shorter wording for the commonest pydantic errors, keyed by error type.
_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "too_short": "needs at least {min_length} item(s)",
}


def describe_error(error: dict[str, Any], raw: Any, file_label: str) -> str:
    """One pydantic error as `file: key.path: message`.

    Inside a table whose kind is in the location (a quantize method), the kind
    follows the table's path: `t.toml: stages[1] (quantize, mode = "static"):
    unknown key 'bits' (a key of method = "kmeans", ...)`.
    """
    parts, label, inner = user_location(error["loc"], raw)
    kind = error["type"]
    path = inner if label else parts
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # name the discriminating key itself (stages[0].optimizer.name), not its table
        context = error.get("ctx", {})
        path = [*path, str(context.get("discriminator", "type")).strip("'")]
        if kind == "union_tag_not_found":
            message = "required key is missing"
        else:
            allowed = str(context.get("expected_tags", "")).replace("'", "")
            message = f"must be one of {allowed}, got {context.get('tag')!r}"
    elif kind == "extra_forbidden" and label and path:
        # inside a kind's table the unknown key is named in the message, after the kind
        if not error["msg"].startswith("unknown key"):
            error = {**error, "msg": f"unknown key {path[-1]!r}"}
        path, message = path[:-1], _message(error)
    else:
        message = _message(error)
    if not label:
        return f"{file_label}: {format_key_path(path) or '(top level)'}: {message}"
    where = f"{format_key_path(parts) or '(top level)'} {label}"
    return f"{file_label}: {where}: {format_key_path(path) + ': ' if path else ''}{message}"


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    message = error["msg"]
    if kind == "extra_forbidden":
        message = message if message.startswith("unknown key") else "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind].format(**error.get("ctx", {}))
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind not in ("missing",) and "input" in error and not isinstance(error["input"], dict):
        if not message.startswith("unknown key '"):  # it names the key, not its value
            message += f", got {error['input']!r}"
    return message
