"""Validated configuration objects for everything a recipe can say, except stages.

Every table forbids unknown keys, so a typo fails loudly with its key path.
Fractions are fractions: `accuracy_min = 0.95` means 95 %.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

CALLABLE_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
"""A user callable is written "package.module:function"; a recipe is code you trust."""


class StrictModel(BaseModel):
    """Base of every config table: unknown keys are errors, values are validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


# --------------------------------------------------------------------------- data


class DataConfig(StrictModel):
    """Where the data comes from and how it is split."""

    source: str = Field(
        "sklearn-digits",
        description="'sklearn-digits', 'fashion-mnist', 'npz', or 'package.module:function'.",
    )
    path: str | None = Field(
        None,
        description="Folder of the fashion-mnist IDX files, or the .npz file for 'npz'.",
    )
    val_fraction: float = Field(
        0.15, gt=0.0, lt=0.5, description="Share of the training data held out for validation."
    )
    test_fraction: float = Field(
        0.2,
        gt=0.0,
        lt=0.5,
        description="Share held out for test, for sources without an official test split.",
    )
    max_train_samples: int | None = Field(
        None, gt=0, description="Stratified subsample of the training split (quick runs)."
    )
    augment: Literal["none", "crop", "crop-flip"] = Field(
        "none", description="Training-time augmentation: random 2-pixel shift crops, h-flips."
    )

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        builtin = ("sklearn-digits", "fashion-mnist", "npz")
        if value in builtin or CALLABLE_PATTERN.match(value):
            return value
        raise ValueError(
            f"unknown data source {value!r}; allowed: {', '.join(builtin)} "
            "or 'package.module:function'"
        )


# --------------------------------------------------------------------------- models


class _ModelBase(StrictModel):
    weights: str | None = Field(
        None, description="A model.safetensors written by compress to start from."
    )


class CNNConfig(_ModelBase):
    """A VGG-style stack: per width, `convs_per_block` 3x3 convs, then 2x2 max-pool."""

    architecture: Literal["cnn"] = "cnn"
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [32, 64], min_length=1, description="Output channels of each conv block."
    )
    convs_per_block: int | list[Annotated[int, Field(gt=0)]] = Field(
        1,
        description="3x3 convolutions per block: one count for every block, or a list with "
        "one count per width (e.g. [1, 2, 2]: one convolution at full resolution, where "
        "each costs the most).",
    )
    batch_norm: bool = Field(True, description="BatchNorm after each convolution.")
    pool: Literal["avg", "flatten"] = Field(
        "avg",
        description="Head input: 'avg' global-average-pools the last feature map; 'flatten' "
        "keeps its spatial layout (more classifier weights, same conv MACs).",
    )
    hidden: int = Field(0, ge=0, description="Width of a hidden linear layer (0: none).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")

    @model_validator(mode="after")
    def _one_count_per_block(self) -> CNNConfig:
        counts = self.convs_per_block
        if isinstance(counts, int) and counts < 1:
            raise ValueError("convs_per_block must be at least 1")
        if isinstance(counts, list) and len(counts) != len(self.widths):
            raise ValueError(
                f"convs_per_block lists {len(counts)} counts for {len(self.widths)} widths"
            )
        return self

    def block_convs(self) -> list[int]:
        """How many convolutions each block has, in order."""
        counts = self.convs_per_block
        return list(counts) if isinstance(counts, list) else [counts] * len(self.widths)


class ResNetConfig(_ModelBase):
    """A small residual CNN of basic blocks; each stage after the first halves resolution."""

    architecture: Literal["resnet"] = "resnet"
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [16, 32, 64], min_length=1, description="Channels of each residual stage."
    )
    blocks_per_stage: int = Field(1, gt=0, description="Basic blocks per stage.")
    stem_stride: int = Field(1, gt=0, le=4, description="Stride of the stem convolution.")


class MLPConfig(_ModelBase):
    """A multi-layer perceptron over the flattened input."""

    architecture: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        [128, 64], description="Widths of the hidden layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class MobileNetConfig(_ModelBase):
    """Depthwise-separable blocks (MobileNet v1 style): 3x3 depthwise + 1x1 pointwise."""

    architecture: Literal["mobilenet"] = "mobilenet"
    stem_width: int = Field(16, gt=0, description="Channels of the first full convolution.")
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [32, 64, 128], min_length=1, description="Pointwise output channels of each block."
    )
    strides: list[Annotated[int, Field(gt=0, le=2)]] | None = Field(
        None, description="Stride of each block's depthwise conv (default: 2 from the 2nd on)."
    )

    @model_validator(mode="after")
    def _strides_match(self) -> MobileNetConfig:
        if self.strides is not None and len(self.strides) != len(self.widths):
            raise ValueError(f"strides has {len(self.strides)} items, widths {len(self.widths)}")
        return self


class TransformerConfig(_ModelBase):
    """A small vision transformer: patch embedding, encoder blocks with multi-head attention."""

    architecture: Literal["transformer"] = "transformer"
    patch_size: int = Field(4, gt=0, description="Square patch side; must divide the image.")
    embed_dim: int = Field(64, gt=0, description="Token width.")
    num_heads: int = Field(4, gt=0, description="Attention heads; must divide embed_dim.")
    depth: int = Field(2, gt=0, description="Encoder blocks.")
    mlp_ratio: float = Field(2.0, gt=0, description="Hidden width of each MLP / embed_dim.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        return self


class CallableModelConfig(_ModelBase):
    """A user model: `architecture = "package.module:function"` returning an nn.Module."""

    architecture: str = Field(description="'package.module:function'; called with kwargs.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments; num_classes and input_shape are added when accepted.",
    )

    @field_validator("architecture")
    @classmethod
    def _is_callable_path(cls, value: str) -> str:
        if not CALLABLE_PATTERN.match(value):
            raise ValueError(
                f"unknown architecture {value!r}; allowed: {', '.join(BUILTIN_ARCHITECTURES)} "
                "or 'package.module:function'"
            )
        return value


BUILTIN_ARCHITECTURES = ("cnn", "resnet", "mlp", "mobilenet", "transformer")


def _architecture_tag(value: Any) -> str:
    arch = (
        value.get("architecture", "cnn")
        if isinstance(value, dict)
        else getattr(value, "architecture", "cnn")
    )
    return arch if arch in BUILTIN_ARCHITECTURES else "callable"


ModelConfig = Annotated[
    Union[
        Annotated[CNNConfig, Tag("cnn")],
        Annotated[ResNetConfig, Tag("resnet")],
        Annotated[MLPConfig, Tag("mlp")],
        Annotated[MobileNetConfig, Tag("mobilenet")],
        Annotated[TransformerConfig, Tag("transformer")],
        Annotated[CallableModelConfig, Tag("callable")],
    ],
    Discriminator(_architecture_tag),
]


# --------------------------------------------------------------------------- runtime


class RuntimeConfig(StrictModel):
    """How models are measured: ONNX Runtime providers, threads, batch size, repeats."""

    providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        ["cpu"],
        min_length=1,
        description="ONNX Runtime execution providers to measure; the first is the one "
        "latency budgets read.",
    )
    optional_providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=list,
        description="Providers that may be missing: reported as unavailable and their "
        "latency budgets skipped, instead of failing the run before it starts.",
    )
    threads: int = Field(1, gt=0, description="Intra-op threads for latency measurement.")
    batch_size: int = Field(1, gt=0, description="Batch size for latency measurement.")
    warmup: int = Field(10, ge=0, description="Untimed runs before measuring.")
    repeats: int = Field(50, gt=0, description="Timed runs per model per round.")
    rounds: int = Field(5, gt=0, description="Interleaved rounds (A B A B ...).")
    gpu_fp16: bool = Field(
        False,
        description="Also measure an fp16 copy of float models on cuda/tensorrt "
        "(model.fp16.onnx beside model.onnx; latency key '<provider>-fp16').",
    )
    train_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads for training (default: all cores)."
    )


# --------------------------------------------------------------------------- distributed


class DistributedConfig(StrictModel):
    """How training stages use several processes (torch.distributed).

    Only training is distributed: rank 0 runs the pipeline, evaluates, measures and
    writes the run directory; the other ranks join each training job it starts.
    """

    strategy: Literal["none", "ddp", "pipeline", "fsdp"] = Field(
        "none",
        description="'ddp': data parallel, each rank trains on its share of every batch. "
        "'pipeline': the model's layers split into one stage per rank, GPipe "
        "micro-batches. Both run on CPU/gloo. 'fsdp' (sharded parameters) needs CUDA "
        "GPUs and nccl, which this version does not train on: refused with an error. "
        "'none' with several processes means 'ddp'.",
    )
    nproc: int = Field(
        1,
        gt=0,
        description="Processes per node when `compress run` launches them itself "
        "(`--nproc` overrides); ignored under an external torchrun.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Process-group backend; auto picks gloo, the CPU backend."
    )
    micro_batches: int = Field(
        4, gt=0, description="GPipe micro-batches per batch (pipeline strategy)."
    )
    timeout_s: float = Field(
        600.0,
        gt=0,
        description="A collective that waits longer than this ends the job: a rank that "
        "hangs (rather than crashes, which ends it at once) cannot stall it forever.",
    )


# --------------------------------------------------------------------------- budgets


class Budgets(StrictModel):
    """Goals a stage's (or the final) model must meet. Unset means unchecked."""

    accuracy_min: Fraction | None = Field(None, description="Lowest test accuracy (0-1).")
    accuracy_drop_max: Fraction | None = Field(
        None, description="Largest accuracy drop vs the teacher (absolute fraction)."
    )
    latency_p50_ms_max: float | None = Field(None, gt=0, description="Highest p50, ms.")
    latency_p90_ms_max: float | None = Field(None, gt=0, description="Highest p90, ms.")
    size_bytes_max: int | None = Field(None, gt=0, description="Largest deployed size, bytes.")
    params_max: int | None = Field(None, gt=0, description="Most parameters.")
    macs_max: int | None = Field(None, gt=0, description="Most multiply-accumulates.")
    speedup_min: float | None = Field(
        None, gt=0, description="Lowest teacher-p50 / this-p50, measured interleaved."
    )
    size_ratio_min: float | None = Field(
        None, gt=0, description="Lowest teacher-size / this-size (deployed ONNX bytes)."
    )

    def is_empty(self) -> bool:
        return all(value is None for value in self.model_dump().values())


# --------------------------------------------------------------------------- training


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


ScheduleConfig = Annotated[
    Union[
        ConstantSchedule,
        StepSchedule,
        MultiStepSchedule,
        ExponentialSchedule,
        CosineSchedule,
        OneCycleSchedule,
    ],
    Field(discriminator="name"),
]


class EarlyStoppingConfig(StrictModel):
    """Stop when the monitored validation metric stops improving; keep the best epoch."""

    monitor: Literal["val_accuracy", "val_loss"] = Field(
        "val_accuracy", description="Validation metric to watch."
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
        return "max" if self.monitor == "val_accuracy" else "min"


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
    grad_clip: float | None = Field(None, gt=0, description="Clip gradient norm to this.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy smoothing.")
    augment: Literal["none", "crop", "crop-flip"] | None = Field(
        None,
        description=(
            "Augmentation for this training (default: data.augment). 'none' lets "
            "distillation compute the teacher's logits once instead of every batch."
        ),
    )
    channels_last: bool = Field(
        True,
        description=(
            "Train image models in channels-last memory layout (single-process runs): "
            "oneDNN's convolutions run 1.2-1.7x faster that way on CPU "
            "(scripts/bench_training_layout.py). Saved weights are the same either way."
        ),
    )
