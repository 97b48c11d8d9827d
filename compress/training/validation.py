"""What a fit measures on the validation split after every epoch.

With labels: cross-entropy and accuracy. Without them (`data.labeled = false`, a
fit that distils with alpha = 1) the teacher is what the student is measured
against: `val_agreement`, the share of validation rows whose predicted class equals
the teacher's, and `val_kd_loss`, the distillation loss T^2 KL on the validation
rows. They are what early stopping, the best epoch and the BatchNorm keep rule read
there. The teacher's validation logits are computed once per fit.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.data.bundle import DataBundle
from compress.errors import StageError
from compress.training.inference import evaluate, split_logits, teacher_logits_memo
from compress.training.losses import kd_loss
from compress.training.strategy import Strategy

AGREEMENT_METRICS = ("val_agreement", "val_kd_loss")


def teacher_val_logits(
    data: DataBundle, teacher: nn.Module | None, monitor: str
) -> torch.Tensor | None:
    """The teacher's validation logits when the fit is measured against it (no labels,
    or an agreement metric monitored), else None.

    Raises:
        StageError: an agreement metric is monitored, or the data has no labels, and
            there is no teacher to agree with.
    """
    if data.val.labeled and monitor not in AGREEMENT_METRICS:
        return None
    if not data.val.labeled and monitor not in AGREEMENT_METRICS:
        raise StageError(
            f"early_stopping.monitor = {monitor!r} reads labels, and the data has none "
            "(data.labeled = false): monitor val_agreement or val_kd_loss"
        )
    if teacher is None:
        raise StageError(
            f"early_stopping.monitor = {monitor!r} compares the model with a teacher, "
            "and this training has none (distill, or a fine-tune with distill = true)"
            if data.val.labeled
            else "the data has no labels (data.labeled = false): training on them needs "
            "a teacher to learn from (distill, or a fine-tune with distill = true, alpha = 1)"
        )
    return teacher_logits_memo.get(teacher.eval(), data.val)


def validation_metrics(
    model: nn.Module, data: DataBundle, reference: torch.Tensor | None, temperature: float
) -> dict[str, float | None]:
    """val_loss and val_accuracy (None without labels), and with a teacher's
    `reference` logits val_agreement and val_kd_loss.

    Example:
        >>> metrics = validation_metrics(model, data, None, 4.0)  # doctest: +SKIP
        >>> sorted(metrics)  # doctest: +SKIP
        ['val_accuracy', 'val_loss']
    """
    metrics: dict[str, float | None] = {"val_loss": None, "val_accuracy": None}
    if data.val.labeled:
        scored = evaluate(model, data.val)
        metrics.update(val_loss=scored["loss"], val_accuracy=scored["accuracy"])
    if reference is not None:  # without labels (or monitored): against the teacher
        logits = split_logits(model, data.val)
        agree = (logits.argmax(1) == reference.argmax(1)).float().mean()
        metrics["val_agreement"] = float(agree)
        metrics["val_kd_loss"] = float(kd_loss(logits, reference, temperature))
    return metrics


def shared_validation_metrics(
    model: nn.Module,
    data: DataBundle,
    reference: torch.Tensor | None,
    temperature: float,
    strategy: Strategy,
) -> dict[str, float | None]:
    """`validation_metrics` on the driver, shared with every rank (the others pass
    placeholders of the same shape): one decision for all ranks."""
    names = ["val_loss", "val_accuracy"] + (
        list(AGREEMENT_METRICS) if reference is not None else []
    )
    if strategy.is_driver:
        metrics = validation_metrics(model, data, reference, temperature)
    else:
        labeled = data.val.labeled
        metrics = {n: 0.0 if labeled or n in AGREEMENT_METRICS else None for n in names}
    present = [name for name in names if metrics[name] is not None]
    for name, value in zip(present, strategy.share([metrics[name] for name in present])):
        metrics[name] = value
    return metrics
