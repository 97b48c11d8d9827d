"""A name -> object registry, used for stages, architectures and data sources.

Registering a name twice is an error that names both places, so two plugins can
never silently shadow each other.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from compress.errors import RecipeError

T = TypeVar("T")


def _where(obj: Any) -> str:
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (TypeError, OSError):
        return repr(obj)


class Registry(Generic[T]):
    """Maps recipe names to classes or functions.

    Args:
        kind: what is registered, for error messages ("stage", "architecture").

    Example:
        >>> MODELS = Registry("architecture")
        >>> @MODELS.register("mlp")
        ... def build_mlp(config): ...
        >>> MODELS.get("mlp") is build_mlp
        True
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"{self.kind} {name!r} registered twice: at {_where(self._entries[name])} "
                    f"and at {_where(obj)}"
                )
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            allowed = ", ".join(sorted(self._entries))
            raise RecipeError(f"unknown {self.kind} {name!r}; allowed: {allowed}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)


def import_callable(spec: str, key: str) -> Callable[..., Any]:
    """Import `package.module:function` named by recipe key `key`."""
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RecipeError(f"{key}: cannot import module {module_name!r} ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise RecipeError(f"{key}: {module_name!r} has no callable {attribute!r}")
    return function
