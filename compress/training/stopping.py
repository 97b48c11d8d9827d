"""Early stopping: improvement, patience and divergence of a monitored metric."""

from __future__ import annotations

import math

from compress.recipe.schema import EarlyStoppingConfig


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
