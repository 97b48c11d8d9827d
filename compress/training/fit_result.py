"""What one call to `fit` did: the record every training stage reports and passes on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FitResult:
    """What a call to `fit` did: per-epoch history, the epoch kept and why it stopped.

    `warnings` holds the fallbacks the fit took (batches the engine could not take,
    epoch checkpoints switched off); the stage hands them to its `StageResult`.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best: dict[str, float] = field(default_factory=dict)
    stop_reason: str = "completed all epochs"
    resumed_from_epoch: int | None = None  # set when an epoch checkpoint was picked up
    warnings: list[str] = field(default_factory=list)
    optimizer: dict[str, Any] = field(default_factory=dict)  # the optimizer table used
    batch_norm: dict[str, Any] | None = None  # the closing BatchNorm recalibration

    @property
    def last_lr(self) -> float | None:
        """The learning rate of the last epoch trained."""
        return self.history[-1]["lr"] if self.history else None

    def summary(self) -> dict[str, Any]:
        # without labels the best epoch is judged against the teacher (validation.py)
        agreement = {
            f"best_{name}": self.best[name]
            for name in ("val_agreement", "val_kd_loss")
            if name in self.best
        }
        return {
            "epochs_run": len(self.history),
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best.get("val_accuracy"),
            "best_val_loss": self.best.get("val_loss"),
            **agreement,
            "stop_reason": self.stop_reason,
            "resumed_from_epoch": self.resumed_from_epoch,
            "optimizer": self.optimizer,
            "last_lr": self.last_lr,
            "peak_lr": max((m["lr"] for m in self.history), default=None),
            "history": self.history,
        }
