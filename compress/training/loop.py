"""The one training loop, shared by train, distill and every fine-tune.

It validates after every epoch, keeps the best epoch's weights (restored at the
end, whether or not early stopping is configured), stops at once on a
non-finite loss, fails a fit whose loss diverges or whose validation accuracy stays
at chance (`DivergenceGuard`), and distils from a frozen teacher when given one.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from compress.data.bundle import DataBundle
from compress.errors import AgreedStop, StageError
from compress.recipe.schema import TrainingConfig
from compress.recipe.stages import DistillConfig
from compress.training.augment import augment_batch
from compress.training.batches import batch_plan, epoch_batches
from compress.training.batchnorm import recalibrate_checked_
from compress.training.checkpoint import EpochCheckpoint, fingerprint
from compress.training.features import FeatureDistiller
from compress.training.fit_result import FitResult
from compress.training.inference import teacher_logits_memo
from compress.training.losses import distillation_loss
from compress.training.optim import build_optimizer, build_schedule
from compress.training.stopping import DivergenceGuard, EarlyStopping
from compress.training.strategy import SingleProcess, Strategy, TrainingJob
from compress.training.validation import shared_validation_metrics, teacher_val_logits

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitJob:
    """The arguments of one `fit` call (see `fit`), handed on as one object."""

    model: nn.Module
    data: DataBundle
    config: TrainingConfig
    seed: int
    strategy: Strategy
    augment: str = "none"
    teacher: nn.Module | None = None
    distill: DistillConfig | None = None
    on_epoch_end: EpochCallback | None = None
    checkpoint: EpochCheckpoint | None = None


def fit(
    model: nn.Module,
    data: DataBundle,
    config: TrainingConfig,
    *,
    seed: int,
    strategy: Strategy | None = None,
    augment: str = "none",
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
    on_epoch_end: EpochCallback | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> FitResult:
    """Train `model` in place on `data.train`, validating on `data.val` each epoch,
    then re-estimate its BatchNorm statistics (`config.batch_norm`; kept only when
    they measurably help on validation, `FitResult.batch_norm` says what changed).

    The strategy decides where the job runs: in this process (the default), or on
    every rank of a distributed run, where the driver first hands the job to the
    other ranks and every rank then trains together.

    Args:
        model: trained in place; holds the best epoch's weights on return.
        data: the splits; `data.test` is never touched.
        config: epochs, batch size, optimizer, schedule, early stopping, clipping.
        seed: seeds batch order, augmentation and dropout.
        strategy: where and how to train (`SingleProcess` when None).
        augment: the recipe-wide augmentation; `config.augment` overrides it.
        teacher: a frozen teacher for distillation (`distill` must be given too).
        distill: temperature and alpha of the distillation loss.
        on_epoch_end: called with (epoch, metrics) after each epoch, on the driver.
        checkpoint: where to keep per-epoch state, so a killed run resumes from its
            last epoch (`Strategy.checkpoint_for` built it: one folder per rank
            under torch.distributed).

    Raises:
        StageError: when the training loss becomes NaN or infinite, exceeds
            `config.divergence_factor` times its starting value, or validation accuracy
            stays at chance for `config.chance_patience_epochs` epochs.

    Example:
        >>> result = fit(model, data, TrainingConfig(epochs=2), seed=0)  # doctest: +SKIP
    """
    strategy = strategy or SingleProcess()
    folder = str(checkpoint.folder) if checkpoint is not None else None
    strategy.launch(TrainingJob(model, config, seed, augment, teacher, distill, folder))
    job = FitJob(model, data, config, seed, strategy, augment, teacher, distill, on_epoch_end,
                 checkpoint)  # fmt: skip
    try:
        result = _train(job)
        result.optimizer = config.optimizer.model_dump(mode="json")
        # every rank recalibrates its share of the rows; the statistics are averaged.
        # Without labels they are judged by agreement with the teacher (memoised logits)
        reference = None
        if not data.val.labeled and teacher is not None:
            reference = teacher_logits_memo.get(teacher, data.val).argmax(1)
        result.batch_norm = recalibrate_checked_(
            model, data, config.batch_norm, where="after training",
            batch_size=config.batch_size, seed=seed, strategy=strategy, reference=reference,
        )  # fmt: skip
        return result
    except AgreedStop:
        raise  # every rank stopped at the same step: they can take the next job
    except BaseException:
        strategy.abort()  # the other ranks may be mid-collective: never talk again
        raise


@dataclass
class _Loop:
    """What every epoch of one fit reads and updates, built once by `_prepare`."""

    job: FitJob
    augment: str
    identity: str  # the fit's fingerprint: which epoch checkpoints are its own
    generator: torch.Generator
    images: bool  # one image tensor per sample: augmentation and NHWC apply
    layout: torch.memory_format | None
    device: torch.device
    optimizer: torch.optim.Optimizer
    schedule: Any
    stopper: EarlyStopping
    guard: DivergenceGuard
    features: FeatureDistiller | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_val: torch.Tensor | None = None  # what val_agreement compares with
    engine: Any = None
    result: FitResult = field(default_factory=FitResult)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: list[int] = field(default_factory=list)  # sizes of the batches left out

    def loss(self, logits, y, target):
        distill = self.job.distill
        if target is not None and distill is not None:
            loss = distillation_loss(logits, target, y, distill.temperature, distill.alpha)
            return loss + self.features.loss() if self.features is not None else loss
        return F.cross_entropy(logits, y, label_smoothing=self.job.config.label_smoothing)


def _train(job: FitJob) -> FitResult:
    """The loop `fit` runs on every rank.

    Every rank draws the same global batches from the same seeded generator; the
    engine decides which part of each batch (or of the model) this rank computes.
    The driver evaluates and the strategy shares its validation metrics, so early
    stopping and the best-epoch choice are the same decision on every rank.
    """
    loop = _prepare(job)
    first_epoch = _resume(loop)
    loop.engine = job.strategy.engine(job.model, job.data.train.input_shapes[0],
                                      job.config.batch_size)  # fmt: skip
    try:
        for epoch in range(first_epoch, job.config.epochs + 1):
            train_loss, lr = _train_epoch(loop, epoch)
            if _end_epoch(loop, epoch, train_loss, lr):
                break
    finally:
        _release(loop)
    job.model.load_state_dict(loop.best_state)
    job.model.eval()
    if not loop.result.best:  # no finite epoch at all
        raise AgreedStop(f"no epoch produced a finite {loop.stopper.monitor}")
    loop.result.warnings += _fallbacks(loop)
    return loop.result


def _prepare(job: FitJob) -> _Loop:
    """Seed, place the model (device, NHWC layout), build the optimizer, schedule,
    stopping rules and the teacher's targets."""
    model, config, train = job.model, job.config, job.data.train
    augment = config.augment or job.augment
    identity = (
        fingerprint(model, config.model_dump(mode="json"), job.seed, augment)
        if job.checkpoint
        else ""
    )
    torch.manual_seed(job.seed)
    generator = torch.Generator().manual_seed(job.seed)
    if not job.data.labeled and (job.distill is None or job.distill.alpha < 1):
        raise StageError(
            "the data has no labels (data.labeled = false): training on them needs "
            "distillation with alpha = 1 (the teacher's outputs only)"
        )
    images = len(train.input_shapes) == 1 and len(train.input_shapes[0]) == 3
    steps_per_epoch = max(math.ceil(len(train) / config.batch_size), 1)
    # oneDNN's convolutions are faster on NHWC than on NCHW, forward and backward.
    nhwc = config.channels_last and job.strategy.channels_last and images
    layout = torch.channels_last if nhwc else None
    if layout is not None:
        model.to(memory_format=layout)
    device = job.strategy.placement.device  # the CPU unless the recipe's [training] says cuda
    model.to(device)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    loop = _Loop(
        job, augment, identity, generator, images, layout, device, optimizer,
        build_schedule(optimizer, config.schedule, config.epochs, steps_per_epoch),
        EarlyStopping(config.early_stopping, job.data.val.labeled),
        DivergenceGuard(config, job.data.num_classes),
    )  # fmt: skip
    # before the hidden-state hooks: only the teacher's logits are wanted here
    loop.teacher_val = teacher_val_logits(job.data, job.teacher, loop.stopper.monitor)
    _prepare_teacher(loop)
    return loop


def _prepare_teacher(loop: _Loop) -> None:
    """Hidden-state distillation hooks, or the teacher's logits computed once."""
    job = loop.job
    teacher, distill = job.teacher, job.distill
    if teacher is not None and distill is not None and getattr(distill, "feature_layers", None):
        # hidden-state distillation: the teacher then runs on every batch
        loop.features = FeatureDistiller(
            job.model, teacher, distill.feature_layers, distill.feature_weight
        )
    if teacher is not None:
        teacher.to(loop.device).eval()  # frozen: only ever run under no_grad below
        if loop.augment == "none" and loop.features is None:  # fixed inputs: answers once
            # computed chunk by chunk: a lazy split is never decoded whole
            loop.teacher_logits = teacher_logits_memo.get(teacher, job.data.train)


def _resume(loop: _Loop) -> int:
    """The best weights so far and the first epoch to run: 1, or the one after the
    epoch checkpoint this fit left when it was killed."""
    job = loop.job
    loop.best_state = copy.deepcopy(job.model.state_dict())
    saved = job.checkpoint.load(loop.identity) if job.checkpoint else None
    if saved is None:
        return 1
    first_epoch, loop.best_state = job.checkpoint.restore(
        saved, model=job.model, optimizer=loop.optimizer, schedule=loop.schedule,
        generator=loop.generator, stopper=loop.stopper, result=loop.result,
    )  # fmt: skip
    if loop.result.stop_reason.startswith("stopped early"):
        first_epoch = job.config.epochs + 1  # it had already stopped: nothing left to run
    loop.guard.resume(loop.result.history)
    return first_epoch


def _epoch_plan(loop: _Loop) -> list[torch.Tensor]:
    """This epoch's batches; those the engine cannot take are left out (and counted),
    before any draw, so every rank skips the same ones."""
    train, batch_size = loop.job.data.train, loop.job.config.batch_size
    plan = []
    for index in batch_plan(train, batch_size, loop.generator):
        if loop.engine.usable(len(index), batch_size) or len(train) <= 1:
            plan.append(index)
        else:
            loop.dropped.append(len(index))
    return plan


def _train_epoch(loop: _Loop, epoch: int) -> tuple[float, float]:
    """One pass over the training split; returns (mean training loss, learning rate)."""
    job, engine, optimizer = loop.job, loop.engine, loop.optimizer
    train = job.data.train
    job.model.train()
    total_loss, seen = 0.0, 0
    for index, inputs in epoch_batches(train, _epoch_plan(loop)):
        if loop.images:
            inputs = (augment_batch(inputs[0], loop.augment, loop.generator),)
            if loop.layout is not None:
                inputs = (inputs[0].contiguous(memory_format=loop.layout),)
        inputs = tuple(t.to(loop.device) for t in inputs)
        y = train.y[index].to(loop.device)
        target = _target(loop, index, inputs)
        optimizer.zero_grad(set_to_none=True)
        try:
            loss = engine.forward_backward(inputs, y, target, loop.loss)
        except StageError as exc:
            raise type(exc)(f"epoch {epoch}: {exc}") from None
        if job.config.grad_clip is not None:
            engine.clip_grads(job.config.grad_clip, optimizer)
        engine.step(optimizer)
        loop.schedule.step_batch()
        loop.guard.start(loss)
        total_loss += loss * len(index)
        seen += len(index)
    lr = optimizer.param_groups[0]["lr"]
    loop.schedule.step_epoch()
    engine.end_epoch()
    return total_loss / max(seen, 1), lr


def _target(loop: _Loop, index: torch.Tensor, inputs: tuple[torch.Tensor, ...]):
    """The teacher's answer for this batch (None without distillation)."""
    teacher = loop.job.teacher
    if teacher is None or loop.job.distill is None:
        return None
    if loop.features is not None:
        return loop.features.teacher_forward(inputs)
    if loop.teacher_logits is not None:
        return loop.teacher_logits[index].to(loop.device)
    with torch.no_grad():
        return teacher(*inputs)


def _end_epoch(loop: _Loop, epoch: int, train_loss: float, lr: float) -> bool:
    """Validate, keep the best weights, check the guards, save the epoch checkpoint;
    True when training stops here."""
    job, result, stopper = loop.job, loop.result, loop.stopper
    is_driver = job.strategy.is_driver
    temperature = job.distill.temperature if job.distill is not None else 1.0
    val = shared_validation_metrics(job.model, job.data, loop.teacher_val, temperature,
                                    job.strategy)  # fmt: skip
    metrics = {"epoch": epoch, "train_loss": train_loss, **val, "lr": lr,
               "epochs": job.config.epochs}  # fmt: skip
    result.history.append(metrics)
    monitored = metrics[stopper.monitor]
    tie_breaker = metrics.get(stopper.tie_breaker) if stopper.tie_breaker else None
    if math.isfinite(monitored) and stopper.improved(monitored, tie_breaker):
        result.best_epoch, result.best = epoch, dict(metrics)
        loop.best_state = copy.deepcopy(job.model.state_dict())
    if job.on_epoch_end is not None and is_driver:
        job.on_epoch_end(epoch, metrics)
    failure = loop.guard.check(epoch, metrics["train_loss"], metrics["val_accuracy"])
    if failure is not None:  # every rank sees the same global loss and shared accuracy
        raise AgreedStop(failure)
    reason = stopper.stop_reason(monitored)
    if reason is not None:
        result.stop_reason = f"stopped early at epoch {epoch}: {reason}"
    if job.checkpoint is not None:
        job.checkpoint.save(
            epoch, loop.identity, model=job.model, optimizer=loop.optimizer,
            schedule=loop.schedule, generator=loop.generator, stopper=stopper, result=result,
            best_state=loop.best_state,
        )  # fmt: skip
    return reason is not None


def _release(loop: _Loop) -> None:
    """Close the engine and hooks; hand the model back as exporters expect it."""
    job = loop.job
    if loop.engine is not None:
        loop.engine.close()
    if loop.features is not None:
        loop.features.close()
    if loop.layout is not None:  # hand back the layout every exporter and pruner expects
        job.model.to(memory_format=torch.contiguous_format)
    if loop.device.type != "cpu":  # export, ONNX evaluation and checkpoints read CPU weights
        job.model.to("cpu")
        if job.teacher is not None:
            job.teacher.to("cpu")


def _fallbacks(loop: _Loop) -> list[str]:
    """One line per fallback this fit took, for the stage's warnings."""
    lines = []
    if loop.dropped:
        takes = getattr(loop.engine, "takes", "the training engine cannot take them")
        epochs = len(loop.result.history)
        lines.append(
            f"{len(loop.dropped)} batch(es) of {sorted(set(loop.dropped))} rows "
            f"({sum(loop.dropped)} rows in all, over {epochs} epoch(s) of "
            f"{len(loop.job.data.train)} training rows) were left out of training: {takes}"
        )
    checkpoint = loop.job.checkpoint
    if checkpoint is not None and not checkpoint.usable:
        lines.append(
            f"epoch checkpoints were switched off for this fit ({checkpoint.off_reason}): "
            "a run killed during it starts the fit again from its first epoch"
        )
    return lines
