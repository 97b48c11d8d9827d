"""The built-in quantization methods' configs, registered in `QUANTIZE_METHOD_CONFIGS`.

Each accepts the keys it reads and no other. What several share is a mixin: the static
int8 settings (`StaticSettings`), `exclude`, `op_types`, the searches' accuracy limit.
The selector keys (`method`, `mode`, `format`) are narrowed to the one value that
names the method, so the resolved recipe records them as before.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from compress.recipe.quantize_config import (
    QUANTIZE_METHOD_CONFIGS,
    CalibrationConfig,
    FallbackConfig,
    QATConfig,
    QuantizeStageConfig,
)
from compress.recipe.schema import StrictModel


def _uniform() -> Any:
    return Field("uniform", description="uniform: int8 with ONNX Runtime.")


def _static() -> Any:
    return Field("static", description="static: calibrated int8 activations (QDQ).")


def _qdq() -> Any:
    return Field("qdq", description="qdq: this method, no whole-model search.")


class StaticSettings(StrictModel):
    """The int8 settings of ORT's static quantization (static, fallback, qat, placement)."""

    activation_type: Literal["uint8", "int8"] = Field(
        "uint8",
        description="uint8 (u8s8) runs all convs in int8 on x86; int8 (s8s8) often does not.",
    )
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool | Literal["auto"] = Field(
        "auto",
        description="7-bit weights. On x86 without VNNI, ORT's u8s8 kernels add two "
        "u8*s8 products in int16 and saturate with 8-bit weights (measured: int8 results "
        "off exact arithmetic); 7 bits cannot overflow. 'auto': on where the CPU running "
        "the pipeline lacks VNNI.",
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration table."
    )

    @model_validator(mode="after")
    def _supported_pair(self) -> StaticSettings:
        if self.activation_type == "int8" and self.weight_type == "uint8":
            raise ValueError("activation_type int8 with weight_type uint8 is not supported by ORT")
        return self


class ExcludeSettings(StrictModel):
    exclude: list[str] = Field(
        default_factory=list,
        description="ONNX node names (or 're:' patterns) always left in float.",
    )


OpType = Literal["MatMul", "Gemm", "Gather"]


class OpTypeSettings(StrictModel):
    op_types: list[OpType] | None = Field(
        None,
        min_length=1,
        description="ONNX ops whose weights are quantized. Gather is an embedding lookup "
        "(a text model's token table, most of its file); int4 converts MatMul and Gather "
        "only. Default: MatMul and Gemm, plus Gather when the model has a Gather on a "
        "constant table.",
    )


class SearchSettings(StrictModel):
    auto_val_accuracy_drop_max: float = Field(
        0.01, ge=0, le=1, description="Allowed validation-accuracy drop vs fp32."
    )


@QUANTIZE_METHOD_CONFIGS.register("static")
class StaticConfig(QuantizeStageConfig, StaticSettings, ExcludeSettings):
    """mode = "static" (the default): int8 QDQ with calibrated activation ranges."""

    method: Literal["uniform"] = _uniform()
    mode: Literal["static"] = _static()
    format: Literal["qdq"] = _qdq()


@QUANTIZE_METHOD_CONFIGS.register("fallback")
class FallbackMethodConfig(StaticConfig):
    """Static int8 with a `fallback` table: the layers int8 hurts most return to float."""

    refines: ClassVar[tuple[str, str] | None] = ("static", "fallback")

    fallback: FallbackConfig = Field(description="The accuracy-aware fallback table.")


@QUANTIZE_METHOD_CONFIGS.register("dynamic")
class DynamicConfig(QuantizeStageConfig, OpTypeSettings):
    """mode = "dynamic": weights int8, activations quantized per batch at run time
    (MatMul/Gemm models; slow on convolutions)."""

    method: Literal["uniform"] = _uniform()
    mode: Literal["dynamic"] = Field("dynamic", description="dynamic: this method.")
    format: Literal["qdq"] = _qdq()
    weight_type: Literal["int8", "uint8"] = Field("int8", description="Weight integer type.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")


@QUANTIZE_METHOD_CONFIGS.register("qat")
class QATMethodConfig(QuantizeStageConfig, StaticSettings):
    """mode = "qat": static QDQ whose scales and weights are trained with fake
    quantization (see the `qat` table)."""

    needs_torch_model = True
    trains_on_labels = True

    method: Literal["uniform"] = _uniform()
    mode: Literal["qat"] = Field("qat", description="qat: this method.")
    format: Literal["qdq"] = _qdq()
    qat: QATConfig = Field(default_factory=QATConfig, description="The training table.")

    def label_readers(self) -> list[tuple[str, str]]:
        return [("mode", "'qat' trains with fake quantization on labels")]

    @model_validator(mode="after")
    def _trainable(self) -> QATMethodConfig:
        if not self.per_channel or self.weight_type != "int8":
            raise ValueError(
                "mode 'qat' trains ORT's per-channel symmetric int8 weights: it needs "
                "per_channel = true and weight_type = 'int8'"
            )
        return self


@QUANTIZE_METHOD_CONFIGS.register("int4")
class Int4Config(QuantizeStageConfig, OpTypeSettings):
    """mode = "int4": weight-only block-wise 4-bit MatMul (transformers' Linear layers)."""

    method: Literal["uniform"] = _uniform()
    mode: Literal["int4"] = Field("int4", description="int4: this method.")
    format: Literal["qdq"] = _qdq()
    block_size: int = Field(32, ge=16, description="Input features sharing one scale (power of 2).")

    @model_validator(mode="after")
    def _power_of_two(self) -> Int4Config:
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of 2, got {self.block_size}")
        return self


class CodebookConfig(QuantizeStageConfig):
    """Per-layer codebook weights: the file stores a codebook and packed indices."""

    selected_by: ClassVar[str] = "method"

    mode: Literal["static"] = Field("static", description="Not read by codebooks.")
    format: Literal["qdq"] = _qdq()
    bits: int = Field(4, ge=2, le=8, description="Index bits per weight; <= 4 packs two per byte.")
    layers: dict[str, Annotated[int, Field(ge=2, le=8)] | Literal["skip"]] = Field(
        default_factory=dict,
        description="Per-layer bits or 'skip' (kept float), by Conv/Linear module name or "
        "'re:' pattern; an exact name beats a pattern beats `bits`.",
    )


@QUANTIZE_METHOD_CONFIGS.register("kmeans")
class KMeansConfig(CodebookConfig):
    """method = "kmeans": per-layer k-means weight sharing with 2^bits centroids
    (Deep Compression). Shrinks the file; ORT folds the codebook at load, so it runs as
    fast as fp32, not faster."""

    method: Literal["kmeans"] = Field("kmeans", description="kmeans: this method.")


@QUANTIZE_METHOD_CONFIGS.register("pow2")
class Pow2Config(CodebookConfig):
    """method = "pow2": weights snapped to 0 or +-2^k. Shrinks the file; runs as fast as
    fp32."""

    method: Literal["pow2"] = Field("pow2", description="pow2: this method.")


@QUANTIZE_METHOD_CONFIGS.register("auto")
class AutoConfig(QuantizeStageConfig, OpTypeSettings, SearchSettings):
    """format = "auto": build u8s8 QDQ, s8s8 QDQ and dynamic int8, measure each
    interleaved against fp32 on the recipe's runtime, keep the fastest within
    auto_val_accuracy_drop_max, or keep fp32 when none is faster (the report says why)."""

    selected_by: ClassVar[str] = "format"

    method: Literal["uniform"] = _uniform()
    mode: Literal["static"] = _static()
    format: Literal["auto"] = Field("auto", description="auto: this method.")
    per_channel: bool = Field(True, description="Per-output-channel weight scales.")
    reduce_range: bool | Literal["auto"] = Field(
        "auto", description="7-bit weights (see static); 'auto': where the CPU lacks VNNI."
    )
    calibration: CalibrationConfig = Field(
        default_factory=CalibrationConfig, description="Calibration table."
    )


@QUANTIZE_METHOD_CONFIGS.register("placement")
class PlacementConfig(QuantizeStageConfig, StaticSettings, SearchSettings):
    """format = "placement": static int8 with the stage's settings, then layers whose
    int8 costs more time than it saves (Q/DQ and layout transposes around little compute)
    return to fp32, measured candidate by candidate; the fastest of fp32, full int8 and
    the placement within auto_val_accuracy_drop_max ships (fp32 unless an int8 model is
    faster in every round)."""

    selected_by: ClassVar[str] = "format"

    method: Literal["uniform"] = _uniform()
    mode: Literal["static"] = _static()
    format: Literal["placement"] = Field("placement", description="placement: this method.")
    placement_max_candidates: int = Field(
        12,
        gt=0,
        description="Most candidate placements built and timed (each is one quantization "
        "with a few calibration samples and one short timing).",
    )
    placement_repeats: int | None = Field(
        None,
        gt=0,
        description="Timed runs per model per round for a candidate (default: "
        "runtime.repeats // 4, at least 5).",
    )
    placement_rounds: int = Field(3, ge=2, description="Interleaved rounds per candidate.")
    placement_min_gain: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="A layer group returns to fp32 only when the model gets faster in every "
        "round and by at least this share (median), so placements do not flip on noise.",
    )


@QUANTIZE_METHOD_CONFIGS.register("weight-only")
class WeightOnlyConfig(QuantizeStageConfig):
    """method = "weight-only": a causal LM's weight MatMuls as block-wise MatMulNBits
    (4 or 8 bits), per site; a model that arrived as GGUF keeps its own 4-bit blocks
    ("source": nothing quantized twice). Its input is the exported folder (model.onnx,
    genai_config.json, tokenizer) and so is its output."""

    selected_by: ClassVar[str] = "method"

    method: Literal["weight-only"] = Field("weight-only", description="weight-only: this method.")
    mode: Literal["static"] = Field("static", description="Not read by weight-only.")
    format: Literal["qdq"] = _qdq()
    weights: Literal["auto", "source", "source-fused", "source-zp", "int4", "int8"] = Field(
        "auto",
        description="auto: per-site search under perplexity_increase_max on calibration "
        "windows (fastest encoding that keeps the limit); source: the GGUF's own blocks "
        "everywhere (exact, a constant-term MatMul per site); source-fused: its 4-bit codes, "
        "the offset as zero points + 4-bit remainder blocks (one MatMulNBits per site); "
        "source-zp: the offset rounded into zero points (fast, +28% perplexity on SmolLM2); "
        "int4 / int8: from the float weights (`algorithm`).",
    )
    algorithm: Literal["rtn", "hqq"] = Field(
        "rtn", description="How int4 / int8 sites are quantized from float weights."
    )
    block_size: int = Field(
        32, ge=16, description="int4 / int8 block (power of 2); source keeps the file's 32."
    )
    accuracy_level: Literal["auto", 0, 1, 2, 4] = Field(
        "auto",
        description="MatMulNBits accuracy_level (0/1 fp32 compute, 2 fp16, 4 int8 compute); "
        "auto: the fastest of 4 and 1 at the generation profile whose calibration "
        "perplexity stays within the limit.",
    )
    perplexity_increase_max: float = Field(
        0.01, gt=0, description="Calibration perplexity increase the search allows (relative)."
    )
    calibration_windows: int = Field(
        4, gt=0, description="Training windows the search and accuracy_level check score on."
    )

    @model_validator(mode="after")
    def _power_of_two(self) -> WeightOnlyConfig:
        if self.block_size & (self.block_size - 1):
            raise ValueError(f"block_size must be a power of 2, got {self.block_size}")
        return self
