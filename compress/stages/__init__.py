"""Stages, one module per recipe `type`; importing this package registers them all."""

from compress.stages import (  # noqa: F401  (registers them)
    distill,
    export,
    prune,
    prune_decoder,
    quantize,
    train,
)
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import STAGES, register_stage

__all__ = ["STAGES", "RunContext", "Stage", "StageResult", "register_stage"]
