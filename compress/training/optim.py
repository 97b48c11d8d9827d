"""Optimizers and LR schedules by recipe name: dispatch tables over the torch classes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim import lr_scheduler

from compress.recipe.schema import (
    AdagradConfig,
    AdamConfig,
    ConstantSchedule,
    CosineSchedule,
    ExponentialSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    RMSPropConfig,
    SGDConfig,
    StepSchedule,
    WarmupSchedule,
)


def _sgd(params, c: SGDConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params,
        lr=c.lr,
        momentum=c.momentum,
        nesterov=c.nesterov,
        dampening=c.dampening,
        weight_decay=c.weight_decay,
    )


def _adam(params, c: AdamConfig) -> torch.optim.Optimizer:
    cls = torch.optim.AdamW if c.name == "adamw" else torch.optim.Adam
    return cls(params, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay)


def _rmsprop(params, c: RMSPropConfig) -> torch.optim.Optimizer:
    return torch.optim.RMSprop(
        params,
        lr=c.lr,
        alpha=c.alpha,
        eps=c.eps,
        momentum=c.momentum,
        centered=c.centered,
        weight_decay=c.weight_decay,
    )


def _adagrad(params, c: AdagradConfig) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(
        params, lr=c.lr, lr_decay=c.lr_decay, eps=c.eps, weight_decay=c.weight_decay
    )


OPTIMIZERS: dict[type, Callable[..., torch.optim.Optimizer]] = {
    SGDConfig: _sgd,
    AdamConfig: _adam,
    RMSPropConfig: _rmsprop,
    AdagradConfig: _adagrad,
}


def build_optimizer(params: Iterable[torch.nn.Parameter], config) -> torch.optim.Optimizer:
    """The torch optimizer a recipe's `optimizer` table names.

    Example:
        >>> opt = build_optimizer(model.parameters(), SGDConfig(name="nesterov"))  # doctest: +SKIP
    """
    return OPTIMIZERS[type(config)](params, config)


@dataclass
class Schedule:
    """A torch LR scheduler and whether it steps after each batch or each epoch."""

    scheduler: lr_scheduler.LRScheduler | None
    per_batch: bool

    def step_batch(self) -> None:
        if self.scheduler is not None and self.per_batch:
            self.scheduler.step()

    def step_epoch(self) -> None:
        if self.scheduler is not None and not self.per_batch:
            self.scheduler.step()


def _main_schedule(optimizer, config, epochs: int) -> lr_scheduler.LRScheduler | None:
    after_warmup = max(epochs - getattr(config, "warmup_epochs", 0), 1)
    table: dict[type, Callable[[], lr_scheduler.LRScheduler | None]] = {
        ConstantSchedule: lambda: None,
        StepSchedule: lambda: lr_scheduler.StepLR(optimizer, config.step_size, config.gamma),
        MultiStepSchedule: lambda: lr_scheduler.MultiStepLR(
            optimizer, config.milestones, config.gamma
        ),
        ExponentialSchedule: lambda: lr_scheduler.ExponentialLR(optimizer, config.gamma),
        CosineSchedule: lambda: lr_scheduler.CosineAnnealingLR(
            optimizer, after_warmup, config.eta_min
        ),
    }
    return table[type(config)]()


def build_schedule(optimizer, config, epochs: int, steps_per_epoch: int) -> Schedule:
    """The LR schedule a recipe's `schedule` table names, with optional linear warm-up.

    Per-epoch schedules (step, multistep, exponential, cosine) step after each epoch;
    onecycle and warmup step after each batch, as torch intends.
    """
    if isinstance(config, WarmupSchedule):
        return Schedule(warmup_linear(optimizer, config, epochs * steps_per_epoch), True)
    if isinstance(config, OneCycleSchedule):
        max_lr = config.max_lr or optimizer.param_groups[0]["lr"]
        scheduler = lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=max_lr,
            total_steps=max(epochs * steps_per_epoch, 2),
            pct_start=config.pct_start,
        )
        return Schedule(scheduler, per_batch=True)
    main = _main_schedule(optimizer, config, epochs)
    warmup = config.warmup_epochs
    if warmup == 0:
        return Schedule(main, per_batch=False)
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    if main is None:
        return Schedule(ramp, per_batch=False)
    return Schedule(
        lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup]), per_batch=False
    )


def warmup_linear(optimizer, config: WarmupSchedule, total: int) -> lr_scheduler.LambdaLR:
    """A ramp up to lr over the first `warmup` batches (never 0: batch 1 already
    learns), then a straight line down to 0 after batch `total`.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> s = warmup_linear(opt, WarmupSchedule(name="warmup", warmup_steps=2), 6)
        >>> used = []
        >>> for _ in range(6):
        ...     used.append(round(s.get_last_lr()[0], 2)); opt.step(); s.step()
        >>> used, s.get_last_lr()
        ([0.33, 0.67, 1.0, 0.75, 0.5, 0.25], [0.0])
    """
    total = max(total, 1)
    warmup = config.steps(total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1) if warmup else 1.0
        return max(total - step, 0) / max(total - warmup, 1)

    return lr_scheduler.LambdaLR(optimizer, factor)
