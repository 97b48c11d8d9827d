"""Training keys (train, distill, prune.finetune): optimizer, schedule, early stopping."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from compress.recipe.schema.base import StrictModel


class SGDConfig(StrictModel):
    """SGD; `momentum` and `nesterov` are SGD with momentum 0.9 (and Nesterov)."""

    name: Literal["sgd", "momentum", "nesterov"] = "sgd"
    lr: float = Field(0.05, gt=0, description="Learning rate.")
    momentum: float | None = Field(
        None, ge=0, lt=1, description="Momentum (default 0 for sgd, 0.9 otherwise)."
    )
    nesterov: bool | None = Field(None, description="Nesterov momentum.")
    dampening: float = Field(0.0, ge=0, lt=1, description="Dampening for momentum.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")

    @model_validator(mode="after")
    def _defaults_by_name(self) -> SGDConfig:
        if self.momentum is None:
            object.__setattr__(self, "momentum", 0.0 if self.name == "sgd" else 0.9)
        if self.nesterov is None:
            object.__setattr__(self, "nesterov", self.name == "nesterov")
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        return self


class AdamConfig(StrictModel):
    """Adam, or AdamW (decoupled weight decay)."""

    name: Literal["adam", "adamw"]
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Moment decay rates.")
    eps: float = Field(1e-8, gt=0, description="Denominator epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")


class RMSPropConfig(StrictModel):
    """RMSProp."""

    name: Literal["rmsprop"]
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    alpha: float = Field(0.99, gt=0, lt=1, description="Smoothing constant.")
    eps: float = Field(1e-8, gt=0, description="Denominator epsilon.")
    momentum: float = Field(0.0, ge=0, lt=1, description="Momentum.")
    centered: bool = Field(False, description="Normalise by the gradient's variance.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")


class AdagradConfig(StrictModel):
    """Adagrad."""

    name: Literal["adagrad"]
    lr: float = Field(1e-2, gt=0, description="Learning rate.")
    lr_decay: float = Field(0.0, ge=0, description="Learning-rate decay.")
    eps: float = Field(1e-10, gt=0, description="Denominator epsilon.")
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty.")


OptimizerConfig = Annotated[
    Union[SGDConfig, AdamConfig, RMSPropConfig, AdagradConfig], Field(discriminator="name")
]


class _ScheduleBase(StrictModel):
    warmup_epochs: int = Field(
        0, ge=0, description="Epochs of linear warm-up from lr/10 before the schedule."
    )


class ConstantSchedule(_ScheduleBase):
    """A constant learning rate."""

    name: Literal["none"] = "none"


class StepSchedule(_ScheduleBase):
    """Multiply the LR by `gamma` every `step_size` epochs (torch StepLR)."""

    name: Literal["step"]
    step_size: int = Field(gt=0, description="Epochs between decays.")
    gamma: float = Field(0.1, gt=0, le=1, description="Decay factor.")


class MultiStepSchedule(_ScheduleBase):
    """Multiply the LR by `gamma` at each milestone epoch (torch MultiStepLR)."""

    name: Literal["multistep"]
    milestones: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, description="Epochs.")
    gamma: float = Field(0.1, gt=0, le=1, description="Decay factor.")


class ExponentialSchedule(_ScheduleBase):
    """Multiply the LR by `gamma` every epoch (torch ExponentialLR)."""

    name: Literal["exponential"]
    gamma: float = Field(gt=0, le=1, description="Decay factor per epoch.")


class CosineSchedule(_ScheduleBase):
    """Cosine annealing to `eta_min` over the epochs after warm-up (torch CosineAnnealingLR)."""

    name: Literal["cosine"]
    eta_min: float = Field(0.0, ge=0, description="Final learning rate.")


class OneCycleSchedule(StrictModel):
    """One-cycle policy, stepped per batch (torch OneCycleLR); has its own warm-up."""

    name: Literal["onecycle"]
    max_lr: float | None = Field(None, gt=0, description="Peak LR (default: optimizer lr).")
    pct_start: float = Field(0.25, gt=0, lt=1, description="Share of steps spent rising.")


class WarmupSchedule(StrictModel):
    """Linear warm-up to the optimizer's lr, then linear decay to 0; stepped per batch.

    The usual schedule for fine-tuning a pretrained encoder."""

    name: Literal["warmup"]
    warmup_steps: int | None = Field(
        None, ge=0, description="Batches of warm-up (overrides warmup_fraction)."
    )
    warmup_fraction: float = Field(
        0.1, ge=0, lt=1, description="Share of all training batches spent warming up."
    )

    def steps(self, total: int) -> int:
        """Warm-up batches out of `total`."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total)
        return int(round(self.warmup_fraction * total))


ScheduleConfig = Annotated[
    Union[
        ConstantSchedule,
        StepSchedule,
        MultiStepSchedule,
        ExponentialSchedule,
        CosineSchedule,
        OneCycleSchedule,
        WarmupSchedule,
    ],
    Field(discriminator="name"),
]


class EarlyStoppingConfig(StrictModel):
    """Stop when the monitored validation metric stops improving; keep the best epoch."""

    monitor: Literal["val_accuracy", "val_loss", "val_agreement", "val_kd_loss"] = Field(
        "val_accuracy",
        description="Validation metric to watch. val_agreement (share of validation "
        "predictions equal to the teacher's) and val_kd_loss (T^2 KL to the teacher's "
        "outputs) need a teacher (distill, a fine-tune with distill = true) and no labels: "
        "what unlabeled data (data.labeled = false) monitors.",
    )
    mode: Literal["auto", "max", "min"] = Field(
        "auto", description="Whether larger is better ('auto': by metric)."
    )
    patience: int = Field(3, ge=0, description="Epochs without improvement before stopping.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as improvement.")
    divergence_threshold: float | None = Field(
        None, description="Stop at once if the metric crosses this value the wrong way."
    )

    @property
    def resolved_mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "max" if self.monitor in ("val_accuracy", "val_agreement") else "min"


class BatchNormConfig(StrictModel):
    """Re-estimating BatchNorm running statistics once the weights changed.

    Pruning changes what each BatchNorm sees, and a fine-tune with a small BatchNorm
    momentum (0.01, TensorFlow's 0.99) moves the stored statistics 1% a batch: eval
    mode then normalises by statistics of another model. At the end of every training
    (and after each pruning step) they are reset and re-estimated over `samples`
    training rows in train mode, without gradients, as a cumulative average; the new
    statistics are kept only when they measurably help on validation data: of the
    validation rows old and new statistics disagree on, more go right with the new
    ones, and by a one-sided exact sign test (McNemar's) at `significance`.
    """

    recalibrate: bool = Field(
        True, description="Re-estimate BatchNorm statistics after training and pruning."
    )
    samples: int = Field(
        640,
        gt=0,
        description="Training rows (un-augmented, a seeded draw) the statistics are "
        "re-estimated over.",
    )
    significance: float = Field(
        0.05,
        gt=0,
        le=1,
        description="Keep the new statistics only when more validation rows go right "
        "than wrong with them (without labels: agree with the reference model) and the "
        "exact one-sided sign test on those rows gives p <= this; 1 keeps any strict "
        "improvement. On 180 validation rows 5 rows gained and none lost is p = 0.031.",
    )


class TrainingConfig(StrictModel):
    """The one training loop's settings, shared by train, distill and fine-tunes."""

    epochs: int = Field(10, gt=0, description="Maximum epochs.")
    batch_size: int = Field(64, gt=0, description="Training batch size.")
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: AdamConfig(name="adam"), description="Optimizer table."
    )
    schedule: ScheduleConfig = Field(
        default_factory=ConstantSchedule, description="Learning-rate schedule table."
    )
    early_stopping: EarlyStoppingConfig | None = Field(
        None, description="Early stopping; absent means train all epochs, keep the best."
    )
    grad_clip: float | None = Field(
        None,
        gt=0,
        description="Clip the global gradient norm (all parameters together) to this "
        "before each optimizer step (1.0 is usual for fine-tuning transformers).",
    )
    divergence_factor: float = Field(
        10.0,
        ge=0,
        description=(
            "Fail the stage when an epoch's mean training loss exceeds this multiple of "
            "its starting value (the first batch's loss, at least ln(num_classes)): the "
            "loss diverged. 0 turns the check off."
        ),
    )
    # 5, not 3: Adam at lr 1e-4 on digits (tune-digits' lowest lr) learns, yet sat at
    # 9.7-12.0% validation accuracy for its first two epochs (measured).
    chance_patience_epochs: int = Field(
        5,
        ge=0,
        description=(
            "Fail the stage when validation accuracy stays at chance level (at most "
            "1/num_classes + 0.02) this many epochs in a row: the model is not learning. "
            "0 turns the check off."
        ),
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy smoothing.")
    augment: Literal["none", "crop", "crop-flip"] | None = Field(
        None,
        description=(
            "Augmentation for this training (default: data.augment). 'none' lets "
            "distillation compute the teacher's logits once instead of every batch."
        ),
    )
    batch_norm: BatchNormConfig = Field(
        default_factory=BatchNormConfig,
        description="BatchNorm recalibration at the end of this training (and, for a "
        "prune stage's finetune, after each pruning step).",
    )
    channels_last: bool = Field(
        True,
        description=(
            "Train image models in channels-last memory layout (single-process runs): "
            "oneDNN's convolutions run 1.2-1.7x faster that way on CPU "
            "(scripts/bench_training_layout.py). Saved weights are the same either way."
        ),
    )

    @field_validator("divergence_factor")
    @classmethod
    def _factor_above_one(cls, value: float) -> float:
        if 0 < value <= 1:
            raise ValueError("must be > 1 (a multiple of the starting loss), or 0 for no check")
        return value
