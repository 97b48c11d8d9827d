"""The one training loop, shared by train, distill and every fine-tune.

It validates after every epoch, keeps the best epoch's weights (restored at the
end, whether or not early stopping is configured), stops at once on a
non-finite loss, and distils from a frozen teacher when given one.
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

from compress.data.bundle import DataBundle, Split
from compress.distributed.session import Session
from compress.errors import AgreedStop, StageError
from compress.models.checkpoint import ModelSpec
from compress.recipe.schema import EarlyStoppingConfig, TrainingConfig
from compress.recipe.stages import DistillConfig
from compress.training.checkpoint import EpochCheckpoint, fingerprint
from compress.training.losses import distillation_loss
from compress.training.optim import build_optimizer, build_schedule

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class FitResult:
    """What a call to `fit` did: per-epoch history, the epoch kept and why it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "completed all epochs"
    resumed_from_epoch: int | None = None  # set when an epoch checkpoint was picked up

    def summary(self) -> dict[str, Any]:
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best.get("val_accuracy"),
            "best_val_loss": self.best.get("val_loss"),
            "stop_reason": self.stop_reason,
            "resumed_from_epoch": self.resumed_from_epoch,
            "history": self.history,
        }


class EarlyStopping:
    """Tracks the monitored metric: improvement, patience and divergence (Lightning-style).

    Args:
        config: the recipe's early_stopping table; None keeps the best epoch by
            val_accuracy and never stops early.
    """

    def __init__(self, config: EarlyStoppingConfig | None):
        self.config = config
        self.monitor = config.monitor if config else "val_accuracy"
        self.mode = config.resolved_mode if config else "max"
        self.best: float | None = None
        self.best_loss = math.inf
        self.bad_epochs = 0

    def improved(self, value: float, val_loss: float | None = None) -> bool:
        """Record `value`; True if it beats the best so far by more than min_delta.

        When accuracy is monitored, an equal accuracy with a lower validation
        loss also counts: on small validation sets accuracy ties are common and
        the loss is the better tie-breaker.
        """
        min_delta = self.config.min_delta if self.config else 0.0
        if self.best is None:
            better = True
        elif self.mode == "max":
            better = value > self.best + min_delta
            if not better and self.monitor == "val_accuracy" and value >= self.best:
                better = val_loss is not None and val_loss < self.best_loss
        else:
            better = value < self.best - min_delta
        if better:
            self.best, self.bad_epochs = value, 0
            self.best_loss = val_loss if val_loss is not None else math.inf
        else:
            self.bad_epochs += 1
        return better

    def stop_reason(self, value: float) -> str | None:
        """Why to stop after this epoch, or None to go on."""
        if not math.isfinite(value):
            return f"{self.monitor} is {value}"
        if self.config is None:
            return None
        threshold = self.config.divergence_threshold
        if threshold is not None:
            diverged = value < threshold if self.mode == "max" else value > threshold
            if diverged:
                return f"{self.monitor} = {value:.4g} crossed divergence threshold {threshold}"
        if self.bad_epochs >= max(self.config.patience, 1):
            return (
                f"no {self.monitor} improvement > {self.config.min_delta} "
                f"for {self.bad_epochs} epochs (patience {self.config.patience})"
            )
        return None


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (zero padded) and, for crop-flip, h-flips."""
    if kind == "none" or x.ndim != 4:
        return x
    pad = 2
    padded = F.pad(x, (pad, pad, pad, pad))
    height, width = x.shape[2], x.shape[3]
    offsets = torch.randint(0, 2 * pad + 1, (x.shape[0], 2), generator=generator)
    out = torch.empty_like(x)
    for dy in range(2 * pad + 1):  # group samples by offset: 25 slices, not one per sample
        for dx in range(2 * pad + 1):
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
            if len(rows):
                out[rows] = padded[rows, :, dy : dy + height, dx : dx + width]
    if kind == "crop-flip":
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).nonzero().flatten()
        out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` in eval mode over `x`, batched."""
    was_training = model.training
    model.eval()
    outputs = [model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


class TeacherLogits:
    """A frozen teacher's logits over fixed training inputs, computed once per run.

    Distillation, each pruning step's fine-tune and QAT distil from the same teacher
    over the same un-augmented inputs; on Fashion-MNIST each recomputation was ~25 s of
    teacher inference. Keyed by the teacher's structure and weights and by the input
    tensor itself (held, so its id cannot be reused while the entry lives).
    """

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self.entries: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
        key = (fingerprint(teacher, repr(teacher)), id(x))
        if key in self.entries:  # the entry holds x, so no other tensor can have its id
            return self.entries[key][1]
        if x.ndim == 4:  # a copy in NHWC: 1.2-1.7x faster convolutions, the teacher untouched
            teacher = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
        logits = predict_logits(teacher, x)
        if len(self.entries) >= self.capacity:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (x, logits)
        return logits


teacher_logits_memo = TeacherLogits()


def evaluate(model: nn.Module, split: Split) -> dict[str, float]:
    """Accuracy and cross-entropy of `model` on a split (torch, eval mode)."""
    logits = predict_logits(model, split.x)
    return {
        "accuracy": float((logits.argmax(1) == split.y).float().mean()),
        "loss": float(F.cross_entropy(logits, split.y)),
    }


class LocalEngine:
    """One process: the plain forward/backward every single-process run uses."""

    def __init__(self, model: nn.Module):
        self.model = model

    def usable(self, batch: int, batch_size: int) -> bool:
        return batch >= 2  # BatchNorm cannot train on one sample

    def forward_backward(self, x, y, target, loss_fn) -> float:
        loss = loss_fn(self.model(x), y, target)
        value = loss.item()
        if not math.isfinite(value):
            raise StageError(
                f"training loss became {value} (non-finite); lower the learning rate "
                "or add grad_clip"
            )
        loss.backward()
        return value

    def clip_grads(self, max_norm: float) -> None:
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    def end_epoch(self) -> None:
        pass

    def close(self) -> None:
        pass


def fit(
    model: nn.Module,
    data: DataBundle,
    config: TrainingConfig,
    *,
    seed: int,
    augment: str = "none",
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
    on_epoch_end: EpochCallback | None = None,
    spec: ModelSpec | None = None,
    teacher_spec: ModelSpec | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> FitResult:
    """Train `model` in place on `data.train`, validating on `data.val` each epoch.

    In a distributed run (`compress run --nproc N`, or under torchrun) rank 0 first
    sends the other ranks this job, then every rank trains together.

    Args:
        model: trained in place; holds the best epoch's weights on return.
        data: the splits; `data.test` is never touched.
        config: epochs, batch size, optimizer, schedule, early stopping, clipping.
        seed: seeds batch order, augmentation and dropout.
        augment: the recipe-wide augmentation; `config.augment` overrides it.
        teacher: a frozen teacher for distillation (`distill` must be given too).
        distill: temperature and alpha of the distillation loss.
        on_epoch_end: called with (epoch, metrics) after each epoch.
        spec, teacher_spec: how to rebuild model and teacher on the other ranks
            (needed only in a distributed run).
        checkpoint: where to keep per-epoch state, so a killed run resumes from its
            last epoch (single-process runs only).

    Raises:
        StageError: when the training loss becomes NaN or infinite.

    Example:
        >>> result = fit(model, data, TrainingConfig(epochs=2), seed=0)  # doctest: +SKIP
    """
    from compress.distributed import session as distributed

    session = distributed.current()
    if session is None or session.world_size == 1:
        return train_on(
            model, data, config, seed, augment, teacher, distill, on_epoch_end,
            checkpoint=checkpoint,
        )  # fmt: skip
    from compress.distributed.jobs import send_job

    send_job(
        session,
        model=model,
        spec=spec,
        config=config,
        seed=seed,
        augment=augment,
        teacher=teacher,
        teacher_spec=teacher_spec,
        distill=distill,
    )
    try:
        return train_on(model, data, config, seed, augment, teacher, distill, on_epoch_end, session)
    except AgreedStop:
        raise  # every rank stopped at the same step: they can take the next job
    except BaseException:
        session.failed = True  # the other ranks may be mid-collective: never talk again
        raise


def train_on(
    model: nn.Module,
    data: DataBundle,
    config: TrainingConfig,
    seed: int,
    augment: str = "none",
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
    on_epoch_end: EpochCallback | None = None,
    session: Session | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> FitResult:
    """The loop `fit` runs on every rank (see `fit` for the arguments).

    Every rank draws the same global batches from the same seeded generator; the
    engine decides which part of each batch (or of the model) this rank computes.
    Rank 0 evaluates and shares the validation metrics, so early stopping and the
    best-epoch choice are the same decision on every rank.
    """
    augment = config.augment or augment
    identity = (
        fingerprint(model, config.model_dump(mode="json"), seed, augment) if checkpoint else ""
    )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    train = data.train
    steps_per_epoch = max(math.ceil(len(train) / config.batch_size), 1)
    # oneDNN's convolutions are faster on NHWC than on NCHW, forward and backward. Only in
    # one process: the parallel engines send activations between ranks, which needs them
    # contiguous in the default layout.
    layout = (
        torch.channels_last
        if config.channels_last and session is None and train.x.ndim == 4
        else None
    )
    if layout is not None:
        model.to(memory_format=layout)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    schedule = build_schedule(optimizer, config.schedule, config.epochs, steps_per_epoch)
    stopper = EarlyStopping(config.early_stopping)
    teacher_logits = None
    if teacher is not None:
        teacher.eval()  # frozen: only ever run under no_grad below
        if augment == "none":  # fixed inputs: the teacher's answers never change, compute once
            teacher_logits = teacher_logits_memo.get(teacher, train.x)
    is_driver = session is None or session.is_driver

    def loss_fn(logits, y, target):
        if target is not None and distill is not None:
            return distillation_loss(logits, target, y, distill.temperature, distill.alpha)
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
    if session is None:
        engine = LocalEngine(model)
    else:
        from compress.distributed.parallel import make_engine

        engine = make_engine(model, session, tuple(train.x.shape[1:]), config.batch_size)
    try:
        for epoch in range(first_epoch, config.epochs + 1):
            model.train()
            order = torch.randperm(len(train), generator=generator)
            total_loss, seen = 0.0, 0
            for start in range(0, len(order), config.batch_size):
                index = order[start : start + config.batch_size]
                if not engine.usable(len(index), config.batch_size) and len(order) > 1:
                    continue
                x = augment_batch(train.x[index], augment, generator)
                if layout is not None:
                    x = x.contiguous(memory_format=layout)
                y = train.y[index]
                target = None
                if teacher is not None and distill is not None:
                    if teacher_logits is not None:
                        target = teacher_logits[index]
                    else:
                        with torch.no_grad():
                            target = teacher(x)
                optimizer.zero_grad(set_to_none=True)
                try:
                    loss = engine.forward_backward(x, y, target, loss_fn)
                except StageError as exc:
                    raise type(exc)(f"epoch {epoch}: {exc}") from None
                if config.grad_clip is not None:
                    engine.clip_grads(config.grad_clip)
                optimizer.step()
                schedule.step_batch()
                total_loss += loss * len(index)
                seen += len(index)
            lr = optimizer.param_groups[0]["lr"]
            schedule.step_epoch()
            engine.end_epoch()

            val = evaluate(model, data.val) if is_driver else {"loss": 0.0, "accuracy": 0.0}
            if session is not None:  # one decision for all ranks: rank 0's numbers
                from compress.distributed.parallel import share_from_driver

                val["loss"], val["accuracy"] = share_from_driver([val["loss"], val["accuracy"]])
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
        if layout is not None:  # hand back the layout every exporter and pruner expects
            model.to(memory_format=torch.contiguous_format)

    model.load_state_dict(best_state)
    model.eval()
    if not result.best:  # no finite epoch at all
        raise AgreedStop(f"no epoch produced a finite {stopper.monitor}")
    return result
