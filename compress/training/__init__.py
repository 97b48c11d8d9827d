"""The one training loop and what it is made of.

`loop` (fit), `strategy` (where a job runs), `stopping` (early stopping),
`inference` (logits, validation, cached teacher logits), `augment`, `optim`
(optimizers and schedules), `losses` (distillation), `checkpoint` (epoch resume).
Nothing here imports `compress.distributed`: distributed strategies build on this.
"""

from compress.training.inference import evaluate, predict_logits
from compress.training.loop import FitResult, fit
from compress.training.losses import distillation_loss
from compress.training.optim import build_optimizer, build_schedule
from compress.training.stopping import EarlyStopping
from compress.training.strategy import SingleProcess, Strategy, TrainingJob

__all__ = [
    "EarlyStopping",
    "FitResult",
    "SingleProcess",
    "Strategy",
    "TrainingJob",
    "build_optimizer",
    "build_schedule",
    "distillation_loss",
    "evaluate",
    "fit",
    "predict_logits",
]
