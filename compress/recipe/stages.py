"""Config classes of the stages, one per recipe `type`, and their discriminated union.

Adding a stage: write its config here, add it to `StageConfig`, and register the
stage class under the same `type` (see docs/adding-a-stage.md). A test checks that
every config type here has a registered stage and vice versa.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from compress.recipe.prune_config import PruneStageConfig, PruneTarget  # noqa: F401 (re-export)
from compress.recipe.schema import (
    CosineSchedule,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
    SGDConfig,
    StrictModel,
    TrainingConfig,
)
from compress.recipe.stage_common import DistillConfig, FinetuneConfig, _StageBase


class TrainStageConfig(_StageBase, TrainingConfig):
    """Train the current model (the teacher, when it is the first stage)."""

    type: Literal["train"]


class DistillStageConfig(_StageBase, TrainingConfig, DistillConfig):
    """Train `student` against the current model as a frozen teacher."""

    type: Literal["distill"]
    student: ModelConfig = Field(description="The student architecture table.")
    feature_layers: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]] | None = (
        Field(
            None,
            min_length=1,
            description="Hidden-state distillation (hf-encoder): [student, teacher] pairs of "
            "hidden states, 0 the embeddings and i + 1 layer i's output (e.g. [[1, 1], "
            "[2, 3], [3, 5]] for a student of teacher layers 0, 2, 4); MSE over unmasked "
            "tokens, added to the logits loss. The teacher then runs on every batch.",
        )
    )
    feature_weight: float = Field(
        1.0, ge=0, description="Weight of the hidden-state loss (with feature_layers)."
    )


class CalibrationConfig(StrictModel):
    """Calibration of activation ranges for static quantization."""

    method: Literal["minmax", "percentile"] = Field(
        "minmax",
        description="Range estimation method. (entropy is not offered: ORT's "
        "quantize_static does not pass its bin settings through and returns the minmax "
        "ranges, measured.)",
    )
    samples: int = Field(256, gt=0, description="Training samples used for calibration.")
    percentile: float = Field(
        99.999, gt=90, le=100, description="Percentile, for method = 'percentile'."
    )


class FallbackConfig(StrictModel):
    """Accuracy-aware fallback for static int8: worst layers return to float.

    The layers int8 hurts most (each quantized alone, logit error measured on
    validation samples) return to float one at a time until validation accuracy
    is back within the allowed drop.
    """

    val_accuracy_drop_max: float = Field(
        0.01, ge=0, le=1, description="Allowed validation-accuracy drop vs the float model."
    )
    max_layers: int = Field(8, gt=0, description="Most layers returned to float.")


class QATConfig(FinetuneConfig):
    """Quantization-aware training (mode = 'qat'): fine-tune with fake quantization.

    `distill = true` (the default) adds the distillation loss against the stage's
    fp32 input model (`distill_from = 'input'`) or the run's teacher.
    """

    epochs: int = Field(2, gt=0, description="QAT epochs.")
    distill: bool = Field(True, description="Distil from the fp32 model while training.")
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: SGDConfig(name="nesterov", lr=1e-3),
        description="Optimizer table. Small SGD steps: Adam moves every parameter by ~lr "
        "per step whatever its gradient, which walked the learned scales (~0.01-0.05) "
        "far off and cost a pruned Fashion-MNIST student 0.5 points at lr 1e-4 (measured).",
    )
    schedule: ScheduleConfig = Field(
        default_factory=lambda: CosineSchedule(name="cosine"),
        description="Learning-rate schedule table.",
    )
    keep_val_drop_max: float = Field(
        0.002,
        ge=0,
        le=1,
        description="The trained model ships unless its fake-quant validation accuracy is "
        "more than this below the calibrated scales' (then static int8 ships). Catches a "
        "QAT that went wrong (measured drops of 0.4-0.5 points) without picking between "
        "equals on noise.",
    )
    augment: Literal["none", "crop", "crop-flip"] | None = Field(
        "none",
        description="Augmentation while training (null: data.augment). 'none' by default: "
        "a short fine-tune of a model trained without it should see the same inputs, "
        "and the teacher's logits are computed once.",
    )


class QuantizeStageConfig(_StageBase):
    """Quantize the current model: int8 with ONNX Runtime (QDQ), or a codebook."""

    type: Literal["quantize"]
    method: Literal["uniform", "kmeans", "pow2"] = Field(
        "uniform",
        description="uniform: int8 static (QDQ). kmeans: per-layer k-means weight sharing "
        "with 2^bits centroids (Deep Compression). pow2: weights snapped to 0 or +-2^k. "
        "kmeans and pow2 shrink the file; ORT folds the codebook at load, so they run "
        "as fast as fp32, not faster.",
    )
    bits: int = Field(
        4, ge=2, le=8, description="Index bits per weight (kmeans, pow2); <= 4 packs two per byte."
    )
    layers: dict[str, Annotated[int, Field(ge=2, le=8)] | Literal["skip"]] = Field(
        default_factory=dict,
        description="kmeans, pow2: per-layer bits or 'skip' (kept float), by Conv/Linear "
        "module name or 're:' pattern; an exact name beats a pattern beats `bits`.",
    )
    mode: Literal["static", "dynamic", "qat", "int4"] = Field(
        "static",
        description="static: calibrated activations (QDQ). dynamic: activations "
        "quantized per batch at run time, for MatMul/Gemm models (slow on convolutions). "
        "qat: static QDQ whose scales and weights are trained with fake quantization "
        "(see `qat`). int4: weight-only block-wise 4-bit MatMul (transformers' Linear "
        "layers).",
    )
    qat: QATConfig = Field(default_factory=QATConfig, description="mode 'qat': the training table.")
    op_types: list[Literal["MatMul", "Gemm", "Gather"]] | None = Field(
        None,
        min_length=1,
        description="Modes 'dynamic' and 'int4' (and auto's dynamic candidate): ONNX ops "
        "whose weights are quantized. Gather is an embedding lookup (a text model's token "
        "table, most of its file); int4 converts MatMul and Gather only. Default: MatMul "
        "and Gemm, plus Gather when the model has a Gather on a constant table.",
    )
    block_size: int = Field(
        32, ge=16, description="mode 'int4': input features sharing one scale (power of 2)."
    )
    format: Literal["qdq", "auto", "placement"] = Field(
        "qdq",
        description="qdq: the configured static/dynamic settings. auto: build u8s8 QDQ, "
        "s8s8 QDQ and dynamic int8, measure each interleaved against fp32 on the "
        "recipe's runtime, keep the fastest within auto_val_accuracy_drop_max, or keep "
        "fp32 when none is faster (the report says why). placement: static int8 with "
        "the stage's settings, then layers whose int8 costs more time than it saves "
        "(Q/DQ and layout transposes around little compute) return to fp32, measured "
        "candidate by candidate; the fastest of fp32, full int8 and the placement within "
        "auto_val_accuracy_drop_max ships (fp32 unless an int8 model is faster in every "
        "round).",
    )
    auto_val_accuracy_drop_max: float = Field(
        0.01,
        ge=0,
        le=1,
        description="format = 'auto' or 'placement': allowed validation-accuracy drop.",
    )
    placement_max_candidates: int = Field(
        12,
        gt=0,
        description="format = 'placement': most candidate placements built and timed "
        "(each is one quantization with a few calibration samples and one short timing).",
    )
    placement_repeats: int | None = Field(
        None,
        gt=0,
        description="format = 'placement': timed runs per model per round for a "
        "candidate (default: runtime.repeats // 4, at least 5).",
    )
    placement_rounds: int = Field(
        3, ge=2, description="format = 'placement': interleaved rounds per candidate."
    )
    placement_min_gain: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="format = 'placement': a layer group returns to fp32 only when the "
        "model gets faster in every round and by at least this share (median), so "
        "placements do not flip on noise.",
    )
    fallback: FallbackConfig | None = Field(
        None, description="Static mode: return sensitive layers to float (see its table)."
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Static mode: ONNX node names (or 're:' patterns) always left in float.",
    )
    activation_type: Literal["uint8", "int8"] = Field(
        "uint8",
        description="uint8 (u8s8) runs all convs in int8 on x86; int8 (s8s8) often does not.",
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool | Literal["auto"] = Field(
        "auto",
        description="7-bit weights (static, qat, auto). On x86 without VNNI, ORT's u8s8 "
        "kernels add two u8*s8 products in int16 and saturate with 8-bit weights (measured: "
        "int8 results off exact arithmetic); 7 bits cannot overflow. 'auto': on where the "
        "CPU running the pipeline lacks VNNI.",
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration table."
    )

    @model_validator(mode="after")
    def _supported_pair(self) -> QuantizeStageConfig:
        if self.activation_type == "int8" and self.weight_type == "uint8":
            raise ValueError("activation_type int8 with weight_type uint8 is not supported by ORT")
        if self.mode != "static" and (self.fallback is not None or self.exclude):
            raise ValueError("fallback and exclude apply to mode 'static' only")
        if self.mode == "qat" and (
            not self.per_channel or self.weight_type != "int8" or self.format != "qdq"
        ):
            raise ValueError(
                "mode 'qat' trains ORT's per-channel symmetric int8 weights: it needs "
                "per_channel = true, weight_type = 'int8' and format = 'qdq'"
            )
        if self.op_types is not None and self.mode not in ("dynamic", "int4") and (
            self.format != "auto"
        ):
            raise ValueError("op_types applies to mode 'dynamic', 'int4' and format 'auto'")
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of 2, got {self.block_size}")
        if self.format == "auto" and (self.fallback is not None or self.exclude):
            raise ValueError("format 'auto' compares whole-model formats: drop fallback/exclude")
        if self.format == "placement" and (self.mode != "static" or self.method != "uniform"):
            raise ValueError(
                "format 'placement' places static int8 layers: it needs method 'uniform' "
                f"and mode 'static' (got {self.method!r}, {self.mode!r})"
            )
        if self.format == "placement" and (self.fallback is not None or self.exclude):
            raise ValueError(
                "format 'placement' chooses the fp32 layers itself: drop fallback/exclude"
            )
        return self


class ExportStageConfig(_StageBase):
    """Write the deployable ONNX model and prove it matches the torch model."""

    type: Literal["export"]
    opset: int | None = Field(None, ge=17, description="ONNX opset (default: the exporter's).")
    parity_batch_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        [1, 7], min_length=2, description="Batch sizes at which ONNX must match torch."
    )
    parity_atol: float = Field(1e-4, gt=0, description="Absolute tolerance on logits.")
    parity_rtol: float = Field(1e-3, ge=0, description="Relative tolerance on logits.")
    # 0.9, not 0.97: a ResNet-18 whose int8 file lost 0.13 points of accuracy agreed on
    # 95% of its validation predictions (docs/olive.md). This check catches a broken
    # int8 file (exit 3); how faithful it must be is a budget (agreement_min, exit 1,
    # the model still saved).
    agreement_min: float = Field(
        0.9,
        ge=0,
        le=1,
        description="For an int8 model: least share of validation predictions equal to the "
        "fp32 model's, below which the int8 file counts as broken (the stage fails). Gate "
        "fidelity with the budget `agreement_min` (test split, vs the baseline).",
    )


StageConfig = Annotated[
    Union[
        TrainStageConfig,
        DistillStageConfig,
        PruneStageConfig,
        QuantizeStageConfig,
        ExportStageConfig,
    ],
    Field(discriminator="type"),
]
