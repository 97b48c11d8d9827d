"""A name -> object registry, used for stages, quantization methods, architectures
and data sources, and `registered_table`: a recipe table validated by the config class
registered under one of its keys.

Registering a name twice is an error that names both places, so two plugins can
never silently shadow each other.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, WrapValidator
from pydantic_core import PydanticCustomError

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

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs in registration order (messages list them so)."""
        return list(self._entries.items())

    def ensure(self, name: str, obj: T) -> T:
        """Register `obj` under `name` unless this very object already is (a plugin's
        config class, registered by the recipe layer and again by its stage)."""
        if self._entries.get(name) is not obj:
            self.register(name)(obj)
        return obj

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Registrations made inside the block are undone after it (a test's plugin).

        Example:
            >>> with STAGES.scoped():  # doctest: +SKIP
            ...     register_stage("toy")(ToyStage)
        """
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved

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


def registered_table(registry: Registry[type[BaseModel]], key: str = "type") -> WrapValidator:
    """Pydantic validator: a table validated by the config class registered under its `key`.

    The registry is read when a recipe is validated, not when the schema is built, so a
    plugin registered later (from a test module, say) validates its own keys. Errors keep
    pydantic's shape: a missing or unknown `key` is `union_tag_not_found` /
    `union_tag_invalid` (allowed values in registration order), and the class's own
    errors carry their location inside the table, so the recipe loader names the file
    and key path as for any table.

    Args:
        registry: name -> config class (a pydantic model).
        key: the table's key whose value names the class.

    Example:
        >>> from typing import Annotated
        >>> STAGE_CONFIGS = Registry("stage type")
        >>> StageConfig = Annotated[BaseModel, registered_table(STAGE_CONFIGS)]
    """

    def validate(value: Any, handler: Any) -> BaseModel:
        if isinstance(value, BaseModel):  # built in Python, already validated
            return value
        if not isinstance(value, dict):
            raise PydanticCustomError("model_type", "must be a table")
        tags = ", ".join(repr(name) for name in registry)
        if key not in value:
            raise PydanticCustomError(
                "union_tag_not_found", "required key is missing", {"discriminator": repr(key)}
            )
        name = value[key]
        if not isinstance(name, str) or name not in registry:
            raise PydanticCustomError(
                "union_tag_invalid",
                "must be one of {expected_tags}",
                {"discriminator": repr(key), "tag": name, "expected_tags": tags},
            )
        return registry.get(name).model_validate(value)

    # what the table may be, for readers of the schema (scripts/gen_recipe_reference.py)
    validate.registry, validate.key = registry, key  # type: ignore[attr-defined]
    return WrapValidator(validate)
