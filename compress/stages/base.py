"""The stage interface: a stage transforms the current model and reports what it did.

A stage never evaluates the deployed model, checks budgets or writes the report:
the runner does all three after every stage, the same way for every stage.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from compress.data.bundle import DataBundle
from compress.models.checkpoint import ModelSpec
from compress.recipe.loader import Recipe
from compress.training.strategy import SingleProcess, Strategy


@dataclass
class RunContext:
    """Everything a stage may read: the recipe, data, current model, teacher, folder.

    The runner's own bookkeeping (the baseline's metrics, the cache, the report) stays
    in the runner. A stage may read the records of the stages accepted before it
    (`history`, e.g. the optimizer the model was last trained with) and never writes them.

    Attributes:
        model: the current float torch model (input of the next stage); None when the
            recipe starts from an ONNX file and has no torch model.
        spec: how to rebuild `model` (architecture, input signature, classes).
        strategy: where and how training runs (one process, DDP ranks, ...); stages
            hand it to `fit`.
        onnx_path: set once a stage's output exists only as ONNX (e.g. int8).
        teacher: the first stage's model, the baseline for drops and speed-ups.
        baseline_onnx: the first stage's deployed file (what fidelity is measured to).
        input_onnx: the last accepted stage's deployed file (what the next stage's
            output is timed against, beside the baseline).
        workdir: the running stage's folder inside the run directory.
        on_epoch_end: called with (epoch, metrics) after each training epoch.
        resume_dir: where the running stage keeps its epoch checkpoints (None: nowhere);
            read through `epoch_checkpoint`.
        history: the typed records (`report.records.StageRecord`) of the stages accepted
            so far, oldest first; the runner appends to it, stages only read it.
    """

    recipe: Recipe
    data: DataBundle
    model: nn.Module | None
    spec: ModelSpec
    workdir: Path
    seed: int
    strategy: Strategy = field(default_factory=SingleProcess)
    teacher: nn.Module | None = None
    teacher_spec: ModelSpec | None = None
    baseline_onnx: Path | None = None
    input_onnx: Path | None = None  # the deployed file of the last accepted stage
    onnx_path: Path | None = None
    debug: bool = False
    on_epoch_end: Any = None
    resume_dir: Path | None = None  # the running stage's epoch checkpoints, if kept
    fits_started: int = 0
    history: list[Any] = field(default_factory=list)

    def epoch_checkpoint(self):
        """Where the stage's next `fit` call keeps its per-epoch state (None: nowhere).

        Numbered per stage: a prune stage fine-tunes once per step, and on a resumed
        run step k finds step k's checkpoint (checked against its starting weights).
        """
        self.fits_started += 1
        if self.resume_dir is None:
            return None
        return self.strategy.checkpoint_for(self.resume_dir / f"fit-{self.fits_started}")

    def accept(self, result: StageResult, onnx_path: Path | None = None) -> bool:
        """Make a stage's output the input of the next stage; True when it became the
        baseline.

        The first accepted result is the baseline: its model the teacher, its deployed
        file (`onnx_path`, when measured) what later stages are compared with. This is
        the one place that decides it (the runner keeps the baseline's metrics when
        this returns True).
        """
        import copy

        first = self.teacher_spec is None  # (an ONNX file has no torch teacher)
        if first:
            self.teacher = None if result.model is None else copy.deepcopy(result.model).eval()
            self.teacher_spec = result.spec
            # a trial accepts results unmeasured: an ONNX stage's own file is its model
            self.baseline_onnx = onnx_path or result.onnx_path
        self.model, self.spec = result.model, result.spec
        if onnx_path is not None:
            self.input_onnx = onnx_path
        if result.onnx_path is not None:
            self.onnx_path = result.onnx_path
        return first


@dataclass
class StageResult:
    """What a stage produced.

    Attributes:
        model: the new float torch model (may be the input, changed in place); None
            for a stage of an ONNX-input recipe (its `onnx_path` is the model).
        spec: its rebuild spec (a distilled student has a new architecture).
        onnx_path: the stage's own deployable ONNX file, when the model exists
            only as ONNX (quantize) or the stage is the export itself; else the
            runner exports `model` for evaluation.
        details: stage-specific facts for the report (fit history, pruning
            steps, quantization types, parity figures).
        exported: an export of `model` the stage made anyway (prune times its last
            step's file), in the stage folder: the runner deploys it after the usual
            parity check instead of exporting the same model again.
        warnings: one line for each fallback or surprise a person should know about
            (ORT pre-processing failed, epoch checkpoints switched off); the runner puts
            them in the stage record and on the console.
    """

    model: nn.Module | None
    spec: ModelSpec | None
    onnx_path: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)
    exported: Path | None = None
    warnings: list[str] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a stage is repeatable on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Stage:
    """Base of all stages: `run` is the template, subclasses implement `_run`.

    Subclasses set `config_class` to their pydantic config and register with
    `@register_stage("type")`.

    Example:
        >>> @register_stage("noop")  # doctest: +SKIP
        ... class NoopStage(Stage):
        ...     def _run(self, ctx):
        ...         return StageResult(ctx.model, ctx.spec)
    """

    config_class: ClassVar[type]

    def __init__(self, config: Any, name: str):
        self.config = config
        self.name = name

    def run(self, ctx: RunContext) -> StageResult:
        """Seed, run the stage, and hand its result to the runner."""
        seed_everything(ctx.seed)
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        result = self._run(ctx)
        if result.model is not None:  # None: the model is an ONNX file (`[model] onnx`)
            result.model.eval()
        return result

    def _run(self, ctx: RunContext) -> StageResult:
        raise NotImplementedError
