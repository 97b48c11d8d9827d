"""TOML recipe -> validated `Recipe`, with errors that name the file and key path.

Precedence: the recipe file, then each `--set key.path=value` override in order.
Rules that span stages live in `check_stage_order`, run after field validation.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, Field, ValidationError

from compress.errors import RecipeError
from compress.recipe.schema import (
    CALLABLE_PATTERN,
    Budgets,
    CallableModelConfig,
    CNNConfig,
    DataConfig,
    DistributedConfig,
    ModelConfig,
    OnnxModelConfig,
    RuntimeConfig,
    StrictModel,
    TrackingConfig,
    TrainingPlacementConfig,
)
from compress.recipe.stages import StageConfig
from compress.recipe.tune import CategoricalParam, TuneConfig


class Recipe(StrictModel):
    """A whole recipe: data, starting model, runtime, final budgets and ordered stages."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (folder name).")
    description: str = Field("", description="Free text shown in the report.")
    seed: int = Field(0, ge=0, description="Seed for splits, initialisation and training.")
    data: DataConfig = Field(default_factory=DataConfig, description="The data table.")
    model: ModelConfig = Field(default_factory=CNNConfig, description="The starting model.")
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig, description="Measurement.")
    budgets: Budgets = Field(default_factory=Budgets, description="Budgets of the final model.")
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="Multi-process training."
    )
    training: TrainingPlacementConfig = Field(
        default_factory=TrainingPlacementConfig,
        description="Device and precision of every training use.",
    )
    stages: list[StageConfig] = Field(min_length=1, description="Stages, run in this order.")
    tune: TuneConfig | None = Field(None, description="Hyperparameter search (compress tune).")
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking (MLflow); off by default."
    )

    def stage_names(self) -> list[str]:
        """Unique stage names: the explicit `name`, else the type, numbered if repeated."""
        counts: dict[str, int] = {}
        for stage in self.stages:
            counts[stage.type] = counts.get(stage.type, 0) + 1
        seen: dict[str, int] = {}
        names = []
        for stage in self.stages:
            if stage.name:
                names.append(stage.name)
                continue
            seen[stage.type] = seen.get(stage.type, 0) + 1
            names.append(
                stage.type if counts[stage.type] == 1 else f"{stage.type}{seen[stage.type]}"
            )
        return names

    def to_toml(self) -> str:
        """The resolved recipe (defaults filled in) as TOML that validates again."""
        return tomli_w.dumps(self.model_dump(mode="json", exclude_none=True))


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


def _user_location(loc: tuple[Any, ...], raw: Any) -> list[str | int]:
    """Drop the union tags pydantic inserts into error locations (e.g. 'train').

    Walk the raw data alongside the location: an element that is neither a key
    present in the current table nor a list index, and is not the last element,
    is a tag and is skipped.
    """
    parts: list[str | int] = []
    node = raw
    for position, element in enumerate(loc):
        is_last = position == len(loc) - 1
        if isinstance(element, int) and isinstance(node, list) and element < len(node):
            parts.append(element)
            node = node[element]
        elif isinstance(node, dict) and element in node:
            parts.append(element)
            node = node[element]
        elif not is_last and isinstance(element, str):
            continue
        else:
            parts.append(element)
            node = None
    return parts


# Shorter wording for the commonest pydantic errors, keyed by error type.
_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "literal_error": "must be one of {expected}",
    "too_short": "needs at least {min_length} item(s)",
}


def _describe(error: dict[str, Any], raw: Any, file_label: str) -> str:
    parts = _user_location(error["loc"], raw)
    kind = error["type"]
    message = error["msg"]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        # name the discriminating key itself (stages[0].optimizer.name), not its table
        context = error.get("ctx", {})
        key = str(context.get("discriminator", "type")).strip("'")
        parts = [*parts, key]
        if kind == "union_tag_not_found":
            return f"{file_label}: {format_key_path(parts)}: required key is missing"
        allowed = str(context.get("expected_tags", "")).replace("'", "")
        got = context.get("tag")
        return f"{file_label}: {format_key_path(parts)}: must be one of {allowed}, got {got!r}"
    where = format_key_path(parts) or "(top level)"
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind].format(**error.get("ctx", {}))
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind not in ("missing",) and "input" in error and not isinstance(error["input"], dict):
        message += f", got {error['input']!r}"
    return f"{file_label}: {where}: {message}"


def check_stage_order(recipe: Recipe, file_label: str) -> None:
    """Rules that span stages. Raises RecipeError quoting the stage order seen."""
    types = [stage.type for stage in recipe.stages]
    order = " -> ".join(types)
    problems = []
    names = recipe.stage_names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"stage names must be unique, repeated: {', '.join(duplicates)}")
    if "export" in types and types.index("export") != len(types) - 1:
        problems.append("export must be the last stage")
    if types.count("export") > 1:
        problems.append("at most one export stage")
    if "quantize" in types:
        after = types[types.index("quantize") + 1 :]
        if any(t != "export" for t in after):
            problems.append("only export may follow quantize (its output is an int8 ONNX model)")
    if types.count("quantize") > 1:
        problems.append("at most one quantize stage")
    onnx_input = isinstance(recipe.model, OnnxModelConfig)
    if onnx_input:
        problems += _torch_stage_problems(recipe)
    elif types[0] != "train" and recipe.model.weights is None:
        problems.append(
            f"the first stage is {types[0]!r} but the model is untrained: start with a "
            "train stage or set model.weights"
        )
    problems.extend(_unlabeled_problems(recipe))
    lines = [f"{file_label}: stages: {problem} (stage order: {order})" for problem in problems]
    lines.extend(f"{file_label}: {problem}" for problem in _profile_problems(recipe))
    if recipe.tune is not None:
        lines.extend(f"{file_label}: {problem}" for problem in _tune_problems(recipe, names))
    if lines:
        raise RecipeError("\n".join(lines))


def _unlabeled_problems(recipe: Recipe) -> list[str]:
    """Images without labels (`data.labeled = false`) calibrate and export; nothing
    that trains on labels can run on them."""
    if getattr(recipe.data, "labeled", True):
        return []
    out = []
    for index, stage in enumerate(recipe.stages):
        finetune = getattr(getattr(stage, "finetune", None), "epochs", 0)
        if stage.type in ("train", "distill") or finetune or getattr(stage, "mode", "") == "qat":
            out.append(
                f"stages[{index}] ({stage.type}) trains on labels, and data.labeled = false "
                "has none (unlabeled images only calibrate and export a trained model)"
            )
    tables = [("budgets", recipe.budgets)] + [
        (f"stages[{index}].budgets", stage.budgets) for index, stage in enumerate(recipe.stages)
    ]
    for where, budgets in tables:
        for key in ("accuracy_min", "accuracy_drop_max"):
            if getattr(budgets, key) is not None:
                out.append(
                    f"{where}.{key} reads accuracy, which needs labels, and data.labeled = "
                    "false has none (agreement_min measures fidelity to the baseline without them)"
                )
    return out


def _torch_stage_problems(recipe: Recipe) -> list[str]:
    """An ONNX file has no torch model to train, distill, prune or fake-quantize."""
    torch_only = []
    for index, stage in enumerate(recipe.stages):
        if stage.type in ("train", "distill", "prune"):
            torch_only.append(f"stages[{index}] ({stage.type})")
        elif stage.type == "quantize" and getattr(stage, "mode", None) == "qat":
            torch_only.append(f"stages[{index}] (quantize, mode = 'qat')")
    if not torch_only:
        return []
    return [
        f"{', '.join(torch_only)} need a torch model, and model.onnx = "
        f"{recipe.model.onnx!r} is an ONNX file: its recipes run ONNX stages only "
        "(quantize: static, dynamic, int4, format = 'auto' or 'placement', fallback, "
        "kmeans/pow2 codebooks; then export). To train or prune, start from the torch "
        "model and its weights (model.architecture + model.weights)"
    ]


def _profile_problems(recipe: Recipe) -> list[str]:
    """Budgets that read a deployment profile must name one the runtime measures."""
    labels = [profile.label for profile in recipe.runtime.deployment_profiles()]
    tables = [("budgets", recipe.budgets)] + [
        (f"stages[{index}].budgets", stage.budgets) for index, stage in enumerate(recipe.stages)
    ]
    return [
        f"{where}.profile: {budgets.profile!r} is not a runtime profile "
        f"(profiles: {', '.join(labels)})"
        for where, budgets in tables
        if budgets.profile is not None and budgets.profile not in labels
    ]


def _tune_problems(recipe: Recipe, names: list[str]) -> list[str]:
    tune = recipe.tune
    problems = []
    if isinstance(tune.stage, int) and not 0 <= tune.stage < len(names):
        problems.append(f"tune.stage: index {tune.stage} is out of range (0-{len(names) - 1})")
    elif isinstance(tune.stage, str) and tune.stage not in names:
        problems.append(f"tune.stage: {tune.stage!r} is not a stage name ({', '.join(names)})")
    for path in tune.space:
        try:
            parse_key_path(path)
        except RecipeError:
            problems.append(f"tune.space: {path!r} is not a key path")
    return problems


# Every key whose value may name code for compress to import: (table, key). A value
# there that matches CALLABLE_PATTERN is imported and called when the recipe runs;
# a tune choice that matches it would be set into such a key by a trial.
USER_CODE_KEYS = ((CallableModelConfig, "architecture"), (DataConfig, "source"))


def user_code_keys(recipe: Recipe) -> list[tuple[str, str]]:
    """(key path, value) of every `package.module:function` the recipe names.

    Nothing is imported: this reads the validated tables (the model, a distill
    stage's student, the data source, tune choices, wherever they sit).

    Example:
        >>> user_code_keys(validate_recipe(tiny_recipe_dict()))  # doctest: +SKIP
        []
    """
    found: list[tuple[str, str]] = []

    def walk(node: Any, parts: list[str | int]) -> None:
        if isinstance(node, BaseModel):
            for table, key in USER_CODE_KEYS:
                value = getattr(node, key, None) if isinstance(node, table) else None
                if isinstance(value, str) and CALLABLE_PATTERN.match(value):
                    found.append((format_key_path([*parts, key]), value))
            if isinstance(node, CategoricalParam):
                for index, choice in enumerate(node.choices):
                    if isinstance(choice, str) and CALLABLE_PATTERN.match(choice):
                        found.append((format_key_path([*parts, "choices", index]), choice))
            for name in type(node).model_fields:
                walk(getattr(node, name), [*parts, name])
        elif isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                walk(item, [*parts, index])
        elif isinstance(node, dict):
            for key, item in node.items():
                walk(item, [*parts, key if re.fullmatch(r"\w+", str(key)) else f'"{key}"'])

    walk(recipe, [])
    return found


def refuse_user_code(recipe: Recipe, file_label: str) -> None:
    """Raise RecipeError naming every key that names code (for --no-user-code)."""
    found = user_code_keys(recipe)
    if found:
        raise RecipeError(
            "\n".join(
                f"{file_label}: {where}: {value!r} is code the recipe would import and run; "
                "refused by --no-user-code"
                for where, value in found
            )
        )


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, user_code: bool = True
) -> Recipe:
    """Read, override, validate and cross-check a TOML recipe.

    Args:
        path: the recipe file.
        overrides: `key.path=value` strings applied in order before validation.
        user_code: False refuses (RecipeError) a recipe that names any
            `package.module:function`, before anything imports it.

    Example:
        >>> recipe = load_recipe("recipes/digits.toml", ["stages[0].epochs=2"])  # doctest: +SKIP
    """
    path = Path(path)
    label = path.name
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{label}: not UTF-8 text ({exc.reason})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{label}: TOML syntax error: {exc}") from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate_recipe(raw, label, user_code=user_code)


def validate_recipe(
    raw: dict[str, Any], file_label: str = "<recipe>", *, user_code: bool = True
) -> Recipe:
    """Validate an already-parsed recipe dict (see `load_recipe`)."""
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        lines = [_describe(error, raw, file_label) for error in exc.errors()]
        raise RecipeError("\n".join(lines)) from None
    if not user_code:
        refuse_user_code(recipe, file_label)
    check_stage_order(recipe, file_label)
    return recipe
