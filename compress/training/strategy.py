"""Where and how a training job runs: one object handed to `fit`.

The loop reads the same with one process or eight: the strategy gives it the
engine that runs a step, tells it which rank is the driver (evaluates, reports,
checkpoints), shares the driver's validation numbers, starts the job on the other
ranks and aborts it when this rank fails. `SingleProcess` is the plain case;
`compress.distributed.strategy` adds the ranks (Lightning's `Strategy`,
llm-compressor's `State.hardware`). A new way to run is one subclass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from compress.errors import StageError
from compress.recipe.schema import TrainingConfig
from compress.training.checkpoint import EpochCheckpoint
from compress.training.device import CPU, Placement

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class TrainingJob:
    """One `fit` call as the other ranks need it: the model, its config and teacher.

    The model and teacher carry their `ModelSpec` (`compress.models.spec_of`), which
    is how a strategy rebuilds them elsewhere; no caller passes a spec.
    """

    model: nn.Module
    config: TrainingConfig
    seed: int
    augment: str
    teacher: nn.Module | None = None
    distill: Any = None  # DistillConfig: temperature and alpha
    checkpoint_dir: str | None = None  # the driver's epoch-checkpoint folder, if kept


class LocalEngine:
    """One process: the plain forward/backward of a single-process run, on the
    placement's device, under autocast when its precision is bf16 or fp16."""

    takes = "a batch of one row cannot train BatchNorm"  # why `usable` refuses a batch

    def __init__(self, model: nn.Module, placement: Placement = CPU):
        self.model = model
        self.placement = placement
        self.scaler = placement.grad_scaler()

    def usable(self, batch: int, batch_size: int) -> bool:
        return batch >= 2  # BatchNorm cannot train on one sample

    def forward_backward(self, inputs: tuple[torch.Tensor, ...], y, target, loss_fn) -> float:
        with self.placement.autocast():
            loss = loss_fn(self.model(*inputs), y, target)
        value = loss.item()
        if not math.isfinite(value):
            raise StageError(
                f"training loss became {value} (non-finite); lower the learning rate "
                "or add grad_clip"
            )
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        return value

    def clip_grads(self, max_norm: float, optimizer=None) -> None:
        if self.scaler is not None and optimizer is not None:
            self.scaler.unscale_(optimizer)  # clip the true gradients, not scaled ones
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def step(self, optimizer) -> None:
        """The optimizer step (through the gradient scaler in fp16)."""
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def end_epoch(self) -> None:
        pass

    def close(self) -> None:
        pass


class Strategy:
    """Base of every strategy; its defaults are one process on this machine.

    Attributes:
        name: recorded in reports and the stage cache key.
        world_size: processes taking part in each job.
    """

    name = "single"
    world_size = 1
    placement: Placement = CPU

    @property
    def is_driver(self) -> bool:
        """This process evaluates, reports and keeps checkpoints."""
        return True

    @property
    def channels_last(self) -> bool:
        """Whether image models may train in NHWC (oneDNN's faster layout). The
        parallel engines send activations between ranks and need the default one."""
        return True

    def checkpoint_for(self, folder: str | Path | None) -> EpochCheckpoint | None:
        """Where this process keeps the epoch state of a fit checkpointed in `folder`."""
        return EpochCheckpoint(folder) if folder is not None else None

    def launch(self, job: TrainingJob) -> None:
        """Driver: hand `job` to the other ranks before training it here."""

    def engine(self, model: nn.Module, sample_shape: tuple[int, ...], batch_size: int):
        """What runs a step: forward, backward, gradient clipping, the optimizer step."""
        return LocalEngine(model, self.placement)

    @property
    def rank(self) -> int:
        """This process's place among the `world_size` ranks (the driver is 0)."""
        return 0

    def share(self, values: list[float]) -> list[float]:
        """The driver's `values` on every rank (others pass placeholders)."""
        return values

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of `tensor` over all ranks, on every rank."""
        return tensor

    def abort(self) -> None:
        """This rank failed mid-job: never talk to the others again."""

    def identity(self) -> dict[str, Any] | None:
        """What changes the trained weights (cache key, report); None for one process."""
        return None


class SingleProcess(Strategy):
    """Train in this process: on the CPU threads, or on one GPU.

    Args:
        placement: device and precision (`compress.training.device.resolve_placement`).
    """

    def __init__(self, placement: Placement = CPU):
        self.placement = placement
