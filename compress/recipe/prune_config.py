"""The `prune` stage's config (`type = "prune"`); re-exported by `compress.recipe.stages`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compress.recipe.schema import StrictModel
from compress.recipe.stage_common import FinetuneConfig, _StageBase, distillation_label_readers


class PruneTarget(StrictModel):
    """Prune until this is reached (exactly one key), relative to the run's teacher."""

    speedup: float | None = Field(
        None, gt=1, description="Teacher p50 / pruned p50, measured interleaved on ORT."
    )
    macs_ratio: float | None = Field(
        None, gt=0, lt=1, description="Pruned MACs / teacher MACs at most this."
    )
    latency_p50_ms: float | None = Field(
        None, gt=0, description="Pruned p50 on the recipe's runtime at most this (ms)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PruneTarget:
        chosen = [k for k, v in self.model_dump().items() if v is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"set exactly one of speedup, macs_ratio, latency_p50_ms (got {chosen or 'none'})"
            )
        return self


class PruneStageConfig(_StageBase):
    """Prune the current model in `steps` steps, fine-tuning after each.

    With `target`, pruning goes step by step towards `ratio` (the most it may
    remove) and stops at the first step that meets the target, or earlier at the
    last step whose validation accuracy still meets the stage's accuracy budgets.
    """

    trains_on_labels = True  # when it fine-tunes on labels: see label_readers

    type: Literal["prune"]
    method: Literal["structured", "unstructured"] = Field(
        "structured",
        description="structured: remove channels physically; unstructured: zero weights.",
    )
    ratio: float = Field(
        0.5,
        gt=0,
        lt=1,
        description=(
            "structured: share of output channels removed from each prunable layer "
            "(params and MACs fall roughly with (1-ratio)^2); unstructured: share of "
            "weights set to zero. With `target`: the most that may be removed."
        ),
    )
    head_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "structured: share of each attention layer's heads removed, whole heads "
            "(each keeps its dimension; at least one head stays). Default: `ratio`; 0 "
            "keeps every head. BERT-like encoders, nn.TransformerEncoderLayer and fused-qkv "
            "attention (compress's `transformer`, timm's ViT)."
        ),
    )
    ffn_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description=(
            "structured: share of each transformer FFN's intermediate width removed (BERT's "
            "intermediate.dense, nn.TransformerEncoderLayer's linear1, a block's fc1). "
            "Default: unset, the FFN is a layer like any other (`ratio`); 0 keeps it. "
            "The residual width of BERT-like and nn.TransformerEncoder models is never pruned."
        ),
    )
    target: PruneTarget | None = Field(
        None, description="Prune until a speed-up, MACs ratio or latency is reached."
    )
    steps: int = Field(1, gt=0, description="Pruning steps to reach `ratio`.")
    schedule: Literal["linear", "agp"] = Field(
        "linear", description="Ratio per step: linear or cubic (Zhu & Gupta)."
    )
    importance: Literal["l1", "l2", "taylor", "bn-scale", "lamp", "fpgm", "random"] = Field(
        "l1",
        description=(
            "Structured channel importance: weight magnitude (l1, l2), first-order "
            "Taylor on training batches, BatchNorm scale, LAMP, FPGM, or random (a baseline)."
        ),
    )
    global_pruning: bool = Field(
        False, description="Rank channels (or weights) across layers instead of per layer."
    )
    round_to: int | None = Field(
        8,
        gt=0,
        description="Keep channel counts multiples of it (1: no rounding). ORT's CPU "
        "convolutions ran 1.3-1.7x slower at counts such as 30, 43 and 63 than at the next "
        "multiple of 8 (never slower at a multiple of 8), and pruning a digits student "
        "24 -> 21 channels made it 0.85x as fast (scripts/bench_channel_rounding.py).",
    )
    ignored_layers: list[str] = Field(
        default_factory=list,
        description="Module names or 're:' patterns never pruned (the classifier always is).",
    )
    layer_ratios: dict[str, float | Literal["skip"]] = Field(
        default_factory=dict,
        description=(
            "Per-layer ratio by module name or 're:' pattern, or 'skip'. An exact name "
            "beats a pattern, a pattern beats `ratio`; the first matching pattern wins."
        ),
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig, description="Fine-tuning after each step."
    )

    def needs_labels(self) -> bool:
        """Pruning alone reads no labels; a fine-tune reads them unless it distils
        with alpha = 1."""
        return bool(self.label_readers())

    def label_readers(self) -> list[tuple[str, str]]:
        finetune = self.finetune
        if finetune.epochs == 0:
            return []
        if not finetune.distill:
            return [(
                "finetune.distill",
                "false: the fine-tune trains on labels (distill = true with alpha = 1 "
                "learns from the unpruned model's outputs only)",
            )]  # fmt: skip
        return distillation_label_readers(finetune, finetune.alpha, "finetune.")

    @model_validator(mode="after")
    def _target_rules(self) -> PruneStageConfig:
        if self.target is not None and self.steps < 2:
            raise ValueError("a pruning target needs steps >= 2 (the most steps to take)")
        if self.target is not None and self.method == "unstructured":
            raise ValueError(
                "a target needs method = 'structured': zeroed weights change neither MACs "
                "nor speed on dense runtimes"
            )
        if self.method == "unstructured" and (
            self.head_ratio is not None or self.ffn_ratio is not None
        ):
            raise ValueError("head_ratio and ffn_ratio need method = 'structured'")
        for name, value in self.layer_ratios.items():
            if value != "skip" and not 0 < value < 1:
                raise ValueError(f"layer_ratios[{name!r}] must be in (0, 1) or 'skip'")
            if value != "skip" and self.method == "unstructured":
                raise ValueError(
                    f"layer_ratios[{name!r}]: unstructured pruning takes only 'skip' per "
                    "layer (one sparsity for all layers, global or per layer)"
                )
        return self
