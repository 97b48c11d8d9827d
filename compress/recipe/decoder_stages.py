"""The `prune-decoder` stage's config: a smaller language model taught by the current one.

One stage for a decoder LM (task causal-lm), in this order, each step optional:
a student of the teacher's chosen layers (`layers`, or the `keep_layers` most important
by measurement), then KV groups and FFN channels removed uniformly across layers
(`kv_groups_ratio`, `ffn_ratio`), then a short distillation on the teacher's token
distributions over the training windows (`steps`; no labels are read). The model stays
describable by its config (every layer the same shape), so it exports and reloads as
any model of its family. Its code: compress/stages/prune_decoder.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from compress.recipe.stage_common import StageConfigBase
from compress.recipe.stages import STAGE_CONFIGS


class DecoderPruneStageConfig(StageConfigBase):
    """Layers kept, KV groups and FFN width removed, then token KD from the teacher."""

    type: Literal["prune-decoder"]
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="Teacher layers the student keeps, in order (e.g. [0, 1, 2, 4]); "
        "default: all, unless keep_layers is set.",
    )
    keep_layers: int | None = Field(
        None,
        gt=0,
        description="Keep this many layers, the most important by measurement on training "
        "windows (`layer_importance`: the perplexity cost of skipping each); the first and "
        "last layer are always kept.",
    )
    layer_importance: Literal["perplexity", "cosine"] = Field(
        "perplexity", description="How keep_layers measures a layer's importance."
    )
    kv_groups_ratio: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of KV groups (a KV head and the query heads sharing it) "
        "removed per layer, rounded to whole groups.",
    )
    ffn_ratio: float = Field(
        0.0, ge=0, lt=1, description="Fraction of FFN channels removed per layer."
    )
    importance: Literal["magnitude", "activation"] = Field(
        "activation",
        description="Which groups / channels go: weight magnitude, or Wanda's |W|·|X| on "
        "training windows.",
    )
    ffn_multiple_of: int = Field(
        32, gt=0, description="Kept FFN width rounded to a multiple of this (4-bit blocks)."
    )
    calibration_windows: int = Field(
        16, gt=0, description="Training windows measured for layer and unit importance."
    )
    steps: int = Field(0, ge=0, description="Distillation steps after pruning (0: none).")
    batch_size: int = Field(4, gt=0, description="Windows per distillation step.")
    lr: float = Field(5e-5, gt=0, description="AdamW learning rate of the distillation.")
    temperature: float = Field(1.0, gt=0, description="Distillation softmax temperature.")
    train: Literal["all", "norms"] = Field(
        "all",
        description="What distillation updates: every weight, or only the RMSNorm scales. "
        "'norms' leaves every MatMul weight as it came, so a model read from a GGUF file "
        "keeps its own 4-bit blocks and the quantize stage re-encodes them (weights "
        "'source' / 'source-fused' / 'auto'); 'all' heals more but the trained weights "
        "must be quantized afresh (int4 / int8).",
    )
    teacher_cache_mb: float = Field(
        1024.0,
        gt=0,
        description="Memory for the teacher's cached outputs (full logits when they fit, "
        "else top-k log-probabilities and the rest's mass).",
    )
    top_k: int = Field(64, gt=0, description="Outcomes per position a top-k cache keeps.")

    @model_validator(mode="after")
    def _one_layer_choice(self) -> DecoderPruneStageConfig:
        if self.layers is not None and self.keep_layers is not None:
            raise ValueError("give layers or keep_layers, not both")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {self.layers} repeats a layer")
        return self


STAGE_CONFIGS.register("prune-decoder")(DecoderPruneStageConfig)
