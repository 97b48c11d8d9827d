"""TOML recipe -> validated `Recipe`, with errors that name the file and key path.

Precedence: the recipe file, then each `--set key.path=value` override in order.
Rules that span stages live in `check_stage_order`, run after field validation; they
read what each stage's config class declares (`StageConfigBase`), never a stage type,
so a stage registered from outside the package is held to them like a built-in one.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import BaseModel, Field, ValidationError

from compress.errors import RecipeError
from compress.recipe.keys import (  # noqa: F401 (re-exported: the loader's public names)
    apply_override,
    format_key_path,
    parse_key_path,
)
from compress.recipe.messages import describe_error
from compress.recipe.schema import (
    CALLABLE_PATTERN,
    Budgets,
    CallableModelConfig,
    CNNConfig,
    DataConfig,
    DataTable,
    DistributedConfig,
    ModelConfig,
    OnnxModelConfig,
    RuntimeConfig,
    StrictModel,
    TrackingConfig,
    TrainingPlacementConfig,
)
from compress.recipe.stages import STAGE_CONFIGS, StageConfig
from compress.recipe.tasks import task_problems
from compress.recipe.tune import CategoricalParam, TuneConfig


class Recipe(StrictModel):
    """A whole recipe: data, starting model, runtime, final budgets and ordered stages."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Run name (folder name).")
    description: str = Field("", description="Free text shown in the report.")
    seed: int = Field(0, ge=0, description="Seed for splits, initialisation and training.")
    data: DataTable = Field(default_factory=DataConfig, description="The data table.")
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


def check_stage_order(recipe: Recipe, file_label: str) -> None:
    """Rules that span stages. Raises RecipeError quoting the stage order seen."""
    order = " -> ".join(stage.type for stage in recipe.stages)
    names = recipe.stage_names()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    problems = []
    if duplicates:
        problems.append(f"stage names must be unique, repeated: {', '.join(duplicates)}")
    problems += _order_problems(recipe.stages)
    if isinstance(recipe.model, OnnxModelConfig):
        problems += _torch_stage_problems(recipe)
    elif recipe.model.pretrained_source() is None and not recipe.stages[0].trains_from_scratch:
        starters = [name for name, config in STAGE_CONFIGS.items() if config.trains_from_scratch]
        problems.append(
            f"the first stage is {recipe.stages[0].type!r} but the model is untrained: start "
            f"with a {' or '.join(starters)} stage or set model.weights"
        )
    problems.extend(_unlabeled_problems(recipe))
    problems.extend(task_problems(recipe))
    lines = [f"{file_label}: stages: {problem} (stage order: {order})" for problem in problems]
    lines.extend(f"{file_label}: {problem}" for problem in _profile_problems(recipe))
    if recipe.tune is not None:
        lines.extend(f"{file_label}: {problem}" for problem in _tune_problems(recipe, names))
    if lines:
        raise RecipeError("\n".join(lines))


def _order_problems(stages: list) -> list[str]:
    """What each stage declares about its place: last, its followers, at most one."""
    types = [stage.type for stage in stages]
    problems = []
    for index, stage in enumerate(stages):
        first = types.index(stage.type) == index
        if stage.must_be_last and index != len(stages) - 1 and first:
            problems.append(f"{stage.type} must be the last stage")
        allowed = stage.followers
        if allowed is not None and first and any(t not in allowed for t in types[index + 1 :]):
            problems.append(
                f"only {' or '.join(allowed) or 'nothing'} may follow {stage.type}"
                f"{stage.followers_reason}"
            )
    for index, stage in enumerate(stages):
        once = stage.must_be_last or (
            stage.followers is not None and stage.type not in stage.followers
        )
        if once and types.count(stage.type) > 1 and types.index(stage.type) == index:
            problems.append(f"at most one {stage.type} stage")
    return problems


def _unlabeled_problems(recipe: Recipe) -> list[str]:
    """Data without labels (`data.labeled = false`) calibrates, exports, distils and
    fine-tunes a pruned model from a teacher's outputs (alpha = 1); each part of a
    stage that reads labels (`StageConfigBase.label_readers`) is named by its key."""
    if getattr(recipe.data, "labeled", True):
        return []
    out = [
        f"stages[{index}].{key} ({stage.label()}): {why}, and data.labeled = false has "
        "none (unlabeled data distils from a teacher with alpha = 1, calibrates and exports)"
        for index, stage in enumerate(recipe.stages)
        for key, why in stage.label_readers()
    ]
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
    """An ONNX file has no torch model for the stages that declare they need one."""
    torch_only = [
        f"stages[{index}] ({stage.label()})"
        for index, stage in enumerate(recipe.stages)
        if stage.needs_torch()
    ]
    if not torch_only:
        return []
    onnx_ready = [form for name, kind in STAGE_CONFIGS.items() for form in kind.onnx_forms(name)]
    return [
        f"{', '.join(torch_only)} need a torch model, and model.onnx = "
        f"{recipe.model.onnx!r} is an ONNX file: its recipes run ONNX stages only "
        f"({'; '.join(onnx_ready)}). To train or prune, start from the torch "
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
        lines = [describe_error(error, raw, file_label) for error in exc.errors()]
        raise RecipeError("\n".join(lines)) from None
    if not user_code:
        refuse_user_code(recipe, file_label)
    check_stage_order(recipe, file_label)
    return recipe
