"""Recipe stage `type` -> Stage class."""

from __future__ import annotations

from compress.recipe.stages import STAGE_CONFIGS
from compress.registry import Registry

STAGES: Registry[type] = Registry("stage")


def register_stage(name: str):
    """Class decorator registering a Stage under its recipe `type`.

    The stage's `config_class` joins the recipe layer's `STAGE_CONFIGS` under the same
    name (the built-in ones are there already), so recipes naming `type = name`
    validate with it, and the loader's cross-stage rules read what it declares
    (`StageConfigBase`: needs a torch model, trains on labels, must be last, ...).
    This decorator is all a stage from outside the package needs.

    Example:
        >>> @register_stage("train")  # doctest: +SKIP
        ... class TrainStage(Stage):
        ...     config_class = TrainStageConfig
    """

    def decorator(stage_class: type) -> type:
        STAGE_CONFIGS.ensure(name, stage_class.config_class)
        return STAGES.register(name)(stage_class)

    return decorator
