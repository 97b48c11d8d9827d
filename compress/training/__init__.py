"""The shared training loop, its optimizers, schedules, early stopping and losses."""

from compress.training.loop import EarlyStopping, FitResult, evaluate, fit, predict_logits
from compress.training.losses import distillation_loss
from compress.training.optim import build_optimizer, build_schedule

__all__ = [
    "EarlyStopping",
    "FitResult",
    "build_optimizer",
    "build_schedule",
    "distillation_loss",
    "evaluate",
    "fit",
    "predict_logits",
]
