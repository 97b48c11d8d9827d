"""Early stopping (improvement, patience and divergence of a monitored metric) and the
guard that fails a fit whose loss diverges or whose accuracy stays at chance."""

from __future__ import annotations

import math

from compress.recipe.schema import EarlyStoppingConfig, TrainingConfig

# without labels the validation metrics compare the student with its teacher
DEFAULT_MONITOR = {True: "val_accuracy", False: "val_agreement"}
TIE_BREAKERS = {"val_accuracy": "val_loss", "val_agreement": "val_kd_loss"}


class EarlyStopping:
    """Tracks the monitored metric: improvement, patience and divergence (Lightning-style).

    Args:
        config: the recipe's early_stopping table; None keeps the best epoch by
            val_accuracy (without labels: val_agreement) and never stops early.
        labeled: whether the validation split has labels.
    """

    def __init__(self, config: EarlyStoppingConfig | None, labeled: bool = True):
        self.config = config
        self.monitor = config.monitor if config else DEFAULT_MONITOR[labeled]
        self.mode = config.resolved_mode if config else "max"
        # an accuracy tie is broken by the loss that goes with it
        self.tie_breaker = TIE_BREAKERS.get(self.monitor)
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
            if not better and self.tie_breaker is not None and value >= self.best:
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


CHANCE_MARGIN = 0.02
"""Validation accuracy up to 1/num_classes + this is "at chance": no better than guessing."""


class DivergenceGuard:
    """Fails a fit that is not learning, before the stages after it spend their time.

    Two rules, each set in the training table and each off at 0:
    - `divergence_factor`: an epoch's mean training loss over that multiple of the
      starting loss. The starting loss is the first batch's, but at least
      ln(num_classes) (a uniform guess), so a fine-tune starting from a trained model
      (loss near 0) is not stopped by ordinary noise.
    - `chance_patience_epochs`: validation accuracy at chance level
      (1/num_classes + CHANCE_MARGIN) that many epochs in a row.

    Non-finite losses are caught per batch by the engine, before this sees them.

    Args:
        config: the fit's training settings.
        num_classes: the data's class count (both rules are off below 2).

    Example:
        >>> guard = DivergenceGuard(TrainingConfig(), num_classes=10)
        >>> guard.start(2.3)
        >>> guard.check(1, train_loss=1.1, val_accuracy=0.6) is None
        True
    """

    def __init__(self, config: TrainingConfig, num_classes: int):
        usable = num_classes >= 2
        self.factor = config.divergence_factor if usable else 0.0
        self.patience = config.chance_patience_epochs if usable else 0
        self.num_classes = num_classes
        self.floor = math.log(num_classes) if usable else 0.0
        self.start_loss: float | None = None
        self.chance_epochs = 0

    @property
    def chance(self) -> float:
        """The accuracy of guessing: 1/num_classes."""
        return 1.0 / max(self.num_classes, 1)

    def start(self, loss: float) -> None:
        """Record the first batch's loss (later calls are ignored)."""
        if self.start_loss is None:
            self.start_loss = loss

    def resume(self, history: list[dict[str, float]]) -> None:
        """Pick up after an epoch checkpoint: the epochs at chance at the end of
        `history` and, standing in for the starting loss (the first batch's is not in
        the checkpoint), the largest epoch loss so far: near it in a fit that learns,
        and the ln(num_classes) floor still applies."""
        for metrics in history:
            self._count_chance(metrics.get("val_accuracy"))
        if history:
            self.start(max(metrics["train_loss"] for metrics in history))

    def _count_chance(self, accuracy: float | None) -> None:
        # without labels there is no accuracy: agreement with a teacher says nothing
        # about chance, so the check waits for labelled data
        at_chance = accuracy is not None and accuracy <= self.chance + CHANCE_MARGIN
        self.chance_epochs = self.chance_epochs + 1 if at_chance else 0

    def check(self, epoch: int, train_loss: float, val_accuracy: float | None) -> str | None:
        """Why this fit must fail after `epoch`, or None to go on."""
        self._count_chance(val_accuracy)
        if self.factor and self.start_loss is not None:
            reference = max(self.start_loss, self.floor)
            if train_loss > self.factor * reference:
                start = (
                    f"its starting value {reference:.4g}"
                    if reference == self.start_loss
                    else f"ln({self.num_classes}) = {reference:.4g}, a uniform guess's loss "
                    f"(it started at {self.start_loss:.4g})"
                )
                return (
                    f"epoch {epoch}: training loss {train_loss:.4g} is over "
                    f"{self.factor:g}x {start}: training diverged; lower the learning rate "
                    f"or add grad_clip (divergence_factor = {self.factor:g}; 0 turns this "
                    "check off)"
                )
        if self.patience and self.chance_epochs >= self.patience:
            return (
                f"epoch {epoch}: validation accuracy {val_accuracy:.2%} has been at chance "
                f"level (1/{self.num_classes} = {self.chance:.2%}, +{CHANCE_MARGIN * 100:g} "
                f"points) for {self.chance_epochs} epochs in a row: the model is not "
                "learning; check the labels and the learning rate "
                f"(chance_patience_epochs = {self.patience}; 0 turns this check off)"
            )
        return None
