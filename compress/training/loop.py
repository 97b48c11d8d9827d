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
from compress.training.inference import evaluate, teacher_logits_memo
from compress.training.losses import distillation_loss
from compress.training.optim import build_optimizer, build_schedule
from compress.training.stopping import DivergenceGuard, EarlyStopping
from compress.training.strategy import SingleProcess, Strategy, TrainingJob

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    """What a call to `fit` did: per-epoch history, the epoch kept and why it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "completed all epochs"
    resumed_from_epoch: int | None = None  # set when an epoch checkpoint was picked up
    optimizer: dict[str, Any] = field(default_factory=dict)  # the optimizer table used
    batch_norm: dict[str, Any] | None = None  # the closing BatchNorm recalibration

    @property
    def last_lr(self) -> float | None:
        """The learning rate of the last epoch trained."""
        return self.history[-1]["lr"] if self.history else None

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best.get("val_accuracy"),
            "best_val_loss": self.best.get("val_loss"),
            "stop_reason": self.stop_reason,
            "resumed_from_epoch": self.resumed_from_epoch,
            "optimizer": self.optimizer,
            "last_lr": self.last_lr,
            "peak_lr": max((m["lr"] for m in self.history), default=None),
            "history": self.history,
        }


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
    then re-estimate its BatchNorm statistics (`config.batch_norm`; kept unless
    validation accuracy falls, `FitResult.batch_norm` says what changed).

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
    try:
        result = _train(
            model, data, config, seed, strategy, augment, teacher, distill, on_epoch_end,
            checkpoint,
        )  # fmt: skip
        result.optimizer = config.optimizer.model_dump(mode="json")
        # every rank recalibrates its share of the rows; the statistics are averaged
        result.batch_norm = recalibrate_checked_(
            model, data, config.batch_norm, where="after training",
            batch_size=config.batch_size, seed=seed, strategy=strategy,
        )  # fmt: skip
        return result
    except AgreedStop:
        raise  # every rank stopped at the same step: they can take the next job
    except BaseException:
        strategy.abort()  # the other ranks may be mid-collective: never talk again
        raise


class _Epochs:
    """What every epoch of one fit uses, built once: the layout and device, optimizer,
    schedule, divergence guard, distillation targets and the engine; `run` trains one
    epoch, `close` hands the model back as exporters and pruners expect it."""

    def __init__(self, model, data, config, strategy, augment, teacher, distill, generator):
        self.model, self.config, self.strategy = model, config, strategy
        self.train, self.augment, self.generator = data.train, augment, generator
        self.teacher, self.distill = teacher, distill
        shapes = self.train.input_shapes
        self.images = len(shapes) == 1 and len(shapes[0]) == 3
        steps_per_epoch = max(math.ceil(len(self.train) / config.batch_size), 1)
        # oneDNN's convolutions are faster on NHWC than on NCHW, forward and backward.
        wanted = config.channels_last and strategy.channels_last and self.images
        self.layout = torch.channels_last if wanted else None
        if self.layout is not None:
            model.to(memory_format=self.layout)
        self.device = strategy.placement.device  # the CPU unless [training] says cuda
        model.to(self.device)
        self.optimizer = build_optimizer(model.parameters(), config.optimizer)
        self.schedule = build_schedule(
            self.optimizer, config.schedule, config.epochs, steps_per_epoch
        )
        self.guard = DivergenceGuard(config, data.num_classes)
        self.teacher_logits = None
        self.features = None  # hidden-state distillation: the teacher runs on every batch
        if teacher is not None and distill is not None and getattr(distill, "feature_layers", None):
            self.features = FeatureDistiller(
                model, teacher, distill.feature_layers, distill.feature_weight
            )
        if teacher is not None:
            teacher.to(self.device).eval()  # frozen: only ever run under no_grad below
            if augment == "none" and self.features is None:  # fixed inputs: answers once
                # computed chunk by chunk: a lazy split is never decoded whole
                self.teacher_logits = teacher_logits_memo.get(teacher, self.train)
        self.engine = None  # started by `start`, after any checkpoint was restored

    def start(self) -> None:
        """The engine (DDP broadcasts rank 0's weights now: after a resume's restore)."""
        shape = self.train.input_shapes[0]
        self.engine = self.strategy.engine(self.model, shape, self.config.batch_size)

    def loss(self, logits, y, target):
        distill = self.distill
        if target is not None and distill is not None:
            loss = distillation_loss(logits, target, y, distill.temperature, distill.alpha)
            return loss + self.features.loss() if self.features is not None else loss
        return F.cross_entropy(logits, y, label_smoothing=self.config.label_smoothing)

    def _inputs(self, inputs):
        if self.images:
            inputs = (augment_batch(inputs[0], self.augment, self.generator),)
            if self.layout is not None:
                inputs = (inputs[0].contiguous(memory_format=self.layout),)
        return tuple(t.to(self.device) for t in inputs)

    def _target(self, index, inputs):
        if self.teacher is None or self.distill is None:
            return None
        if self.features is not None:
            return self.features.teacher_forward(inputs)
        if self.teacher_logits is not None:
            return self.teacher_logits[index].to(self.device)
        with torch.no_grad():
            return self.teacher(*inputs)

    def run(self, epoch: int) -> tuple[float, float]:
        """Train one epoch; (mean training loss, the epoch's learning rate)."""
        config, engine, train = self.config, self.engine, self.train
        self.model.train()
        total_loss, seen = 0.0, 0
        plan = [  # batches an engine cannot take are skipped, before any draw
            index
            for index in batch_plan(train, config.batch_size, self.generator)
            if engine.usable(len(index), config.batch_size) or len(train) <= 1
        ]
        for index, inputs in epoch_batches(train, plan):
            inputs = self._inputs(inputs)
            y = train.y[index].to(self.device)
            target = self._target(index, inputs)
            self.optimizer.zero_grad(set_to_none=True)
            try:
                loss = engine.forward_backward(inputs, y, target, self.loss)
            except StageError as exc:
                raise type(exc)(f"epoch {epoch}: {exc}") from None
            if config.grad_clip is not None:
                engine.clip_grads(config.grad_clip, self.optimizer)
            engine.step(self.optimizer)
            self.schedule.step_batch()
            self.guard.start(loss)
            total_loss += loss * len(index)
            seen += len(index)
        lr = self.optimizer.param_groups[0]["lr"]
        self.schedule.step_epoch()
        engine.end_epoch()
        return total_loss / max(seen, 1), lr

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.features is not None:
            self.features.close()
        if self.layout is not None:  # hand back the layout every exporter and pruner expects
            self.model.to(memory_format=torch.contiguous_format)
        if self.device.type != "cpu":  # export, ONNX evaluation, checkpoints read CPU weights
            self.model.to("cpu")
            if self.teacher is not None:
                self.teacher.to("cpu")


def _epoch_metrics(model, data, strategy, epoch, train_loss, lr, epochs) -> dict[str, float]:
    """The epoch's history row; validation is the driver's, shared with every rank so
    they all take the same decisions."""
    driver = strategy.is_driver
    val = evaluate(model, data.val) if driver else {"loss": 0.0, "accuracy": 0.0}
    val["loss"], val["accuracy"] = strategy.share([val["loss"], val["accuracy"]])
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "lr": lr,
        "epochs": epochs,
    }


def _train(
    model: nn.Module,
    data: DataBundle,
    config: TrainingConfig,
    seed: int,
    strategy: Strategy,
    augment: str,
    teacher: nn.Module | None,
    distill: DistillConfig | None,
    on_epoch_end: EpochCallback | None,
    checkpoint: EpochCheckpoint | None,
) -> FitResult:
    """The loop `fit` runs on every rank (see `fit` for the arguments).

    Every rank draws the same global batches from the same seeded generator; the
    engine decides which part of each batch (or of the model) this rank computes.
    The driver evaluates and the strategy shares its validation metrics, so early
    stopping and the best-epoch choice are the same decision on every rank.
    """
    augment = config.augment or augment
    identity = (
        fingerprint(model, config.model_dump(mode="json"), seed, augment) if checkpoint else ""
    )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    if not data.labeled:
        raise StageError(
            "the data has no labels (data.labeled = false): training needs labelled images"
        )
    epochs = _Epochs(model, data, config, strategy, augment, teacher, distill, generator)
    stopper = EarlyStopping(config.early_stopping)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    first_epoch = 1
    saved = checkpoint.load(identity) if checkpoint else None
    if saved is not None:
        first_epoch, best_state = checkpoint.restore(
            saved, model=model, optimizer=epochs.optimizer, schedule=epochs.schedule,
            generator=generator, stopper=stopper, result=result,
        )  # fmt: skip
        if result.stop_reason.startswith("stopped early"):
            first_epoch = config.epochs + 1  # it had already stopped: nothing left to run
        epochs.guard.resume(result.history)
    try:
        epochs.start()
        for epoch in range(first_epoch, config.epochs + 1):
            train_loss, lr = epochs.run(epoch)
            metrics = _epoch_metrics(model, data, strategy, epoch, train_loss, lr, config.epochs)
            result.history.append(metrics)
            monitored = metrics[stopper.monitor]
            if math.isfinite(monitored) and stopper.improved(monitored, metrics["val_loss"]):
                result.best_epoch, result.best = epoch, dict(metrics)
                best_state = copy.deepcopy(model.state_dict())
            if on_epoch_end is not None and strategy.is_driver:
                on_epoch_end(epoch, metrics)
            failure = epochs.guard.check(epoch, train_loss, metrics["val_accuracy"])
            if failure is not None:  # every rank sees the same global loss and shared accuracy
                raise AgreedStop(failure)
            reason = stopper.stop_reason(monitored)
            if reason is not None:
                result.stop_reason = f"stopped early at epoch {epoch}: {reason}"
            if checkpoint is not None:
                checkpoint.save(
                    epoch, identity, model=model, optimizer=epochs.optimizer,
                    schedule=epochs.schedule, generator=generator, stopper=stopper,
                    result=result, best_state=best_state,
                )  # fmt: skip
            if reason is not None:
                break
    finally:
        epochs.close()

    model.load_state_dict(best_state)
    model.eval()
    if not result.best:  # no finite epoch at all
        raise AgreedStop(f"no epoch produced a finite {stopper.monitor}")
    return result
