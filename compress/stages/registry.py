"""Recipe stage `type` -> Stage class."""

from __future__ import annotations

from compress.registry import Registry

STAGES: Registry[type] = Registry("stage")


def register_stage(name: str):
    """Class decorator registering a Stage under its recipe `type`.

    Example:
        >>> @register_stage("train")  # doctest: +SKIP
        ... class TrainStage(Stage): ...
    """
    return STAGES.register(name)
