"""The `[runtime]` table: how models are measured."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compress.recipe.schema.base import StrictModel


class ProfileConfig(StrictModel):
    """One way the model will be served: a batch size on a number of intra-op threads."""

    batch: int = Field(1, gt=0, description="Inputs per call.")
    threads: int = Field(1, gt=0, description="ONNX Runtime intra-op threads.")
    name: str | None = Field(
        None, description="What budgets call it (default 'b<batch>-t<threads>')."
    )
    repeats: int | None = Field(
        None,
        gt=0,
        description="Timed runs per model per round at this profile (default: [runtime] "
        "repeats); a large batch of a big model needs fewer for a stable median.",
    )
    rounds: int | None = Field(
        None, gt=0, description="Interleaved rounds at this profile (default: [runtime] rounds)."
    )

    @property
    def label(self) -> str:
        return self.name or f"b{self.batch}-t{self.threads}"


class GenerationConfig(StrictModel):
    """How a language model is timed: a prompt prefilled, then tokens decoded one at a
    time with the KV cache (onnxruntime-genai), interleaved with the baseline and the
    stage's input (A B A B, median of `rounds`)."""

    prompt: int = Field(
        64, gt=0, description="Prompt tokens: the first `prompt` tokens of the test split."
    )
    generate: int = Field(128, gt=0, description="New tokens decoded per round (exactly).")
    batch: int = Field(1, gt=0, description="Sequences generated together.")
    threads: int = Field(1, gt=0, description="ONNX Runtime intra-op threads.")
    rounds: int = Field(5, gt=0, description="Interleaved rounds per model.")
    warmup: int = Field(1, ge=0, description="Untimed rounds per model first.")

    @property
    def label(self) -> str:
        """The profile's name in the report (e.g. 'p64-g128-b1-t1')."""
        return f"p{self.prompt}-g{self.generate}-b{self.batch}-t{self.threads}"


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
    profiles: list[ProfileConfig] | None = Field(
        None,
        min_length=1,
        description="Deployment profiles, e.g. [{batch = 1, threads = 1}, {batch = 32, "
        "threads = 2}]: each is measured (p50/p90, items/s) on real test inputs (text: "
        "batches padded to their longest row); the first is what budgets read unless "
        "they name another. Default: one profile of batch_size and threads.",
    )
    generation: GenerationConfig | None = Field(
        None,
        description="Language models (causal-lm task): the generation profile decode speed "
        "and its speed-ups are measured at (default: 64-token prompt, 128 new tokens, batch "
        "1, 1 thread, 5 rounds). Other models ignore it.",
    )
    train_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads for training (default: all cores)."
    )

    def generation_profile(self) -> GenerationConfig:
        """The generation profile a language model is timed at (the default when unset)."""
        return self.generation or GenerationConfig()

    def deployment_profiles(self) -> list[ProfileConfig]:
        """The profiles to measure: the recipe's, or one of `batch_size` and `threads`."""
        return self.profiles or [ProfileConfig(batch=self.batch_size, threads=self.threads)]

    @model_validator(mode="after")
    def _unique_profile_names(self) -> RuntimeConfig:
        labels = [profile.label for profile in self.deployment_profiles()]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"profiles named more than once: {', '.join(repeated)}")
        return self
