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
    train = data.train
    if not data.labeled:
        raise StageError(
            "the data has no labels (data.labeled = false): training needs labelled images"
        )
    images = len(train.input_shapes) == 1 and len(train.input_shapes[0]) == 3
    steps_per_epoch = max(math.ceil(len(train) / config.batch_size), 1)
    # oneDNN's convolutions are faster on NHWC than on NCHW, forward and backward.
    layout = (
        torch.channels_last if config.channels_last and strategy.channels_last and images else None
    )
    if layout is not None:
        model.to(memory_format=layout)
    device = strategy.placement.device  # the CPU unless the recipe's [training] says cuda
    model.to(device)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    schedule = build_schedule(optimizer, config.schedule, config.epochs, steps_per_epoch)
    stopper = EarlyStopping(config.early_stopping)
    guard = DivergenceGuard(config, data.num_classes)
    teacher_logits = None
    features = None  # hidden-state distillation: the teacher then runs on every batch
    if teacher is not None and distill is not None and getattr(distill, "feature_layers", None):
        features = FeatureDistiller(model, teacher, distill.feature_layers, distill.feature_weight)
    if teacher is not None:
        teacher.to(device).eval()  # frozen: only ever run under no_grad below
        if augment == "none" and features is None:  # fixed inputs: compute the answers once
            # computed chunk by chunk: a lazy split is never decoded whole
            teacher_logits = teacher_logits_memo.get(teacher, train)
    is_driver = strategy.is_driver

    def loss_fn(logits, y, target):
        if target is not None and distill is not None:
            loss = distillation_loss(logits, target, y, distill.temperature, distill.alpha)
            return loss + features.loss() if features is not None else loss
        return F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)

    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    first_epoch = 1
    saved = checkpoint.load(identity) if checkpoint else None
    if saved is not None:
        first_epoch, best_state = checkpoint.restore(
            saved, model=model, optimizer=optimizer, schedule=schedule,
            generator=generator, stopper=stopper, result=result,
        )  # fmt: skip
        if result.stop_reason.startswith("stopped early"):
            first_epoch = config.epochs + 1  # it had already stopped: nothing left to run
        guard.resume(result.history)
    engine = strategy.engine(model, train.input_shapes[0], config.batch_size)
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            model.train()
            total_loss, seen = 0.0, 0
            plan = [  # batches an engine cannot take are skipped, before any draw
                index
                for index in batch_plan(train, config.batch_size, generator)
                if engine.usable(len(index), config.batch_size) or len(train) <= 1
            ]
            for index, inputs in epoch_batches(train, plan):
                if images:
                    inputs = (augment_batch(inputs[0], augment, generator),)
                    if layout is not None:
                        inputs = (inputs[0].contiguous(memory_format=layout),)
                inputs = tuple(t.to(device) for t in inputs)
                y = train.y[index].to(device)
                target = None
                if teacher is not None and distill is not None:
                    if features is not None:
                        target = features.teacher_forward(inputs)
                    elif teacher_logits is not None:
                        target = teacher_logits[index].to(device)
                    else:
                        with torch.no_grad():
                            target = teacher(*inputs)
                optimizer.zero_grad(set_to_none=True)
                try:
                    loss = engine.forward_backward(inputs, y, target, loss_fn)
                except StageError as exc:
                    raise type(exc)(f"epoch {epoch}: {exc}") from None
                if config.grad_clip is not None:
                    engine.clip_grads(config.grad_clip, optimizer)
                engine.step(optimizer)
                schedule.step_batch()
                guard.start(loss)
                total_loss += loss * len(index)
                seen += len(index)
            lr = optimizer.param_groups[0]["lr"]
            schedule.step_epoch()
            engine.end_epoch()

            val = evaluate(model, data.val) if is_driver else {"loss": 0.0, "accuracy": 0.0}
            # one decision for all ranks: the driver's numbers
            val["loss"], val["accuracy"] = strategy.share([val["loss"], val["accuracy"]])
            metrics = {
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "lr": lr,
                "epochs": config.epochs,
            }
            result.history.append(metrics)
            monitored = metrics[stopper.monitor]
            if math.isfinite(monitored) and stopper.improved(monitored, metrics["val_loss"]):
                result.best_epoch, result.best = epoch, dict(metrics)
                best_state = copy.deepcopy(model.state_dict())
            if on_epoch_end is not None and is_driver:
                on_epoch_end(epoch, metrics)
            failure = guard.check(epoch, metrics["train_loss"], metrics["val_accuracy"])
            if failure is not None:  # every rank sees the same global loss and shared accuracy
                raise AgreedStop(failure)
            reason = stopper.stop_reason(monitored)
            if reason is not None:
                result.stop_reason = f"stopped early at epoch {epoch}: {reason}"
            if checkpoint is not None:
                checkpoint.save(
                    epoch, identity, model=model, optimizer=optimizer, schedule=schedule,
                    generator=generator, stopper=stopper, result=result, best_state=best_state,
                )  # fmt: skip
            if reason is not None:
                break
    finally:
        engine.close()
        if features is not None:
            features.close()
        if layout is not None:  # hand back the layout every exporter and pruner expects
            model.to(memory_format=torch.contiguous_format)
        if device.type != "cpu":  # export, ONNX evaluation and checkpoints read CPU weights
            model.to("cpu")
            if teacher is not None:
                teacher.to("cpu")

    model.load_state_dict(best_state)
    model.eval()
    if not result.best:  # no finite epoch at all
        raise AgreedStop(f"no epoch produced a finite {stopper.monitor}")
    return result
