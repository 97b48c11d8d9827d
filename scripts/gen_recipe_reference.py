"""Write docs/recipe-reference.md from the config classes and the registries.

The field descriptions are the single source of truth, and what a recipe may hold is
read from the schema itself: the `Recipe` table's fields, every table they lead to, the
stage types registered in `STAGE_CONFIGS`, the quantization methods in
`QUANTIZE_METHOD_CONFIGS` and the data sources in `DATA_SOURCES`, so a registered
plugin appears without editing this script. tests/unit/test_recipe_reference.py fails
when the committed file differs from a fresh one.

Run: python scripts/gen_recipe_reference.py
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

TARGET = Path(__file__).resolve().parent.parent / "docs" / "recipe-reference.md"


def _registered(annotation) -> tuple[str, list[tuple[str, type]]] | None:
    """(key, [(name, class)]) when the annotation is a `registered_table`."""
    for meta in getattr(annotation, "__metadata__", ()):
        registry = getattr(getattr(meta, "func", None), "registry", None)
        if registry is not None:  # `others`: tables told apart by another key (onnx)
            return meta.func.key, registry.items() + list(getattr(meta.func, "others", ()))
    for arg in typing.get_args(annotation):
        found = _registered(arg)
        if found:
            return found
    return None


def _is_annotated(annotation) -> bool:
    return typing.get_origin(annotation) is typing.Annotated


def _annotation(field):
    """A field's type with its metadata: pydantic moves a top-level `Annotated`'s validators
    into `field.metadata`, where `_registered` must still find them (`[model]`)."""
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def _tables(annotation) -> list[type[BaseModel]]:
    """The config classes an annotation may hold (a table, a union of them, a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out = []
    for arg in typing.get_args(annotation):
        out += [table for table in _tables(arg) if table not in out]
    return out


def _type_name(annotation) -> str:
    if _registered(annotation) is not None or len(_tables(annotation)) > 1:
        return "list of tables" if typing.get_origin(annotation) is list else "table (one of below)"
    if _tables(annotation):
        return "table" + (" \\| None" if type(None) in typing.get_args(annotation) else "")
    text = str(annotation).replace("typing.", "")
    text = re.sub(r"compress\.[\w.]+\.", "", text)
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
        return "-" if isinstance(value, BaseModel) else f"`{value!r}`"
    if field.default_factory is not None:
        value = field.default_factory()
        return "(table)" if isinstance(value, BaseModel) else f"`{value!r}`"
    return "**required**"


def _tag(model: type[BaseModel]) -> str:
    """How a member of a union is told apart: its first one-valued key (`name = "adam"`)."""
    for name, field in model.model_fields.items():
        if typing.get_origin(field.annotation) is typing.Literal:
            return f"{name} = " + " / ".join(f'"{v}"' for v in typing.get_args(field.annotation))
    name, field = next((n, f) for n, f in model.model_fields.items() if f.is_required())
    return f"{name} = {(field.description or model.__name__).split(';')[0]}"


class Reference:
    """The Markdown document, one section per table, each table once."""

    def __init__(self):
        self.lines: list[str] = []
        self.seen: set[type] = set()

    def section(
        self, title: str, model: type[BaseModel], skip=(), note: str = "", path: str = ""
    ) -> None:
        """A table's keys, then the tables they lead to (`path.key`)."""
        self.seen.add(model)
        doc = (model.__doc__ or "").strip().splitlines() or [""]
        self.lines += [f"## {title}", "", doc[0], ""] + ([note, ""] if note else [])
        self.lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            origin = typing.get_origin(field.annotation)
            if name in skip or (origin is typing.Literal and len(field.annotation.__args__) == 1):
                continue  # the discriminator (type/name/architecture) is in the title
            meaning = (field.description or "").replace("|", "\\|")
            self.lines.append(
                f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |"
            )
        self.lines.append("")
        for name, field in model.model_fields.items():
            if name not in skip:
                self.nested(path, name, _annotation(field))

    def nested(self, path: str, key: str, annotation) -> None:
        registered = _registered(annotation)
        if registered is not None:
            tag, entries = registered
            bare = typing.get_args(annotation)[0] if _is_annotated(annotation) else annotation
            table = f"[[{key}]]" if typing.get_origin(bare) is list else f"[{key}]"
            if path:  # a registry listed at the top (a distill student is any [model])
                self.lines += [
                    f"## {path}.{key}",
                    "",
                    f"A table of any `[{key}]` kind: the `[model]` sections above.",
                    "",
                ]
                return
            for name, config in entries:
                value = f'{tag} = "{name}"' if name != "onnx" else 'onnx = "model.onnx"'
                self.plugin(f"{table} {value}", name, config)
            return
        tables = [table for table in _tables(annotation) if table not in self.seen]
        for table in tables:
            suffix = f": {_tag(table)}" if len(_tables(annotation)) > 1 else ""
            self.section(f"{path}.{key}{suffix}", table, path=f"{path}.{key}")

    def plugin(self, title: str, name: str, config: type[BaseModel]) -> None:
        from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, QuantizeStageConfig

        self.section(title, config, skip=("budgets",), path=name)
        if config is not QuantizeStageConfig:
            return
        common = set(QuantizeStageConfig.model_fields)
        for method, method_config in QUANTIZE_METHOD_CONFIGS.items():
            self.section(
                f"{title}, {method_config.method_label(method)}",
                method_config,
                skip=common,
                note=f"Quantization method `{method}`: the keys it takes besides the above.",
                path=name,
            )


def data_source_sections(doc: Reference) -> None:
    """A section per data source with a config class of its own: the keys it adds or
    redefines (the others of `[data]` keep their defaults there)."""
    from compress.recipe.schema import DATA_CONFIGS, DataConfig

    base = DataConfig.model_fields
    for name, config in DATA_CONFIGS.items():
        if config is DataConfig or config in doc.seen:
            continue
        same = [
            key
            for key, field in config.model_fields.items()
            if key in base
            and (field.description, field.default, field.annotation)
            == (base[key].description, base[key].default, base[key].annotation)
        ]
        note = "Its own keys and those it redefines; no other `[data]` key applies to it."
        doc.section(f'[data] source = "{name}"', config, skip=same, note=note, path="data")


def render() -> str:
    from compress.data import DATA_SOURCES
    from compress.recipe.loader import Recipe
    from compress.recipe.schema.models import architecture_names

    architecture_names()  # the built-in families register their configs on first use

    doc = Reference()
    doc.lines += [
        "# Recipe reference",
        "",
        "Generated by `scripts/gen_recipe_reference.py` from the config classes and the",
        "registries of stages, quantization methods and data sources; do not edit.",
        "Unknown keys are errors. Fractions are fractions (`0.95` = 95 %).",
        "",
        f"Data sources (`[data] source`): {', '.join(DATA_SOURCES.names())}, or",
        "'package.module:function'.",
        "",
    ]
    tables_below = [n for n, f in Recipe.model_fields.items() if _tables(f.annotation)]
    doc.section("Top level", Recipe, skip=tables_below, note="Each table has a section below.")
    for name, field in Recipe.model_fields.items():
        tables = _tables(field.annotation)
        if not tables:
            continue
        if _registered(_annotation(field)) is not None:
            doc.nested("", name, _annotation(field))
        elif len(tables) == 1:
            doc.section(f"[{name}]", tables[0], path=name)
            if name == "data":
                data_source_sections(doc)
        else:
            for table in tables:
                doc.section(f"[{name}] {_tag(table)}", table, path=name)
    return "\n".join(doc.lines)


if __name__ == "__main__":
    TARGET.write_text(render(), encoding="utf-8")
    print(f"wrote {TARGET}")
