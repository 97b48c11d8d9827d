"""The `[budgets]` table (also `[stages.budgets]`): goals a model must meet."""

from __future__ import annotations

from pydantic import Field

from compress.recipe.schema.base import Fraction, StrictModel


class Budgets(StrictModel):
    """Goals a stage's (or the final) model must meet. Unset means unchecked."""

    accuracy_min: Fraction | None = Field(None, description="Lowest test accuracy (0-1).")
    accuracy_drop_max: Fraction | None = Field(
        None, description="Largest accuracy drop vs the teacher (absolute fraction)."
    )
    agreement_min: Fraction | None = Field(
        None,
        description="Lowest top-1 agreement with the baseline model's predictions on the "
        "test split (0-1); needs no labels, so it gates data that has none.",
    )
    latency_p50_ms_max: float | None = Field(None, gt=0, description="Highest p50, ms.")
    latency_p90_ms_max: float | None = Field(None, gt=0, description="Highest p90, ms.")
    throughput_min: float | None = Field(
        None, gt=0, description="Fewest items per second (batch / p50) at the profile read."
    )
    size_bytes_max: int | None = Field(None, gt=0, description="Largest deployed size, bytes.")
    params_max: int | None = Field(None, gt=0, description="Most parameters.")
    macs_max: int | None = Field(None, gt=0, description="Most multiply-accumulates.")
    speedup_min: float | None = Field(
        None, gt=0, description="Lowest teacher-p50 / this-p50, measured interleaved."
    )
    speedup_vs_input_min: float | None = Field(
        None,
        gt=0,
        description="Lowest input-p50 / this-p50 against the stage's own input (the "
        "previous stage's model), measured interleaved; a value below 1 accepts a "
        "slowdown that bought something else (size, say) and says so in the recipe.",
    )
    perplexity_increase_max: float | None = Field(
        None,
        ge=0,
        description="Language models: largest perplexity increase on the test windows, "
        "relative to the baseline's (0.01: at most 1% higher).",
    )
    decode_tokens_per_s_min: float | None = Field(
        None,
        gt=0,
        description="Language models: fewest decoded tokens per second (median) at the "
        "[runtime.generation] profile.",
    )
    size_ratio_min: float | None = Field(
        None, gt=0, description="Lowest teacher-size / this-size (deployed ONNX bytes)."
    )

    profile: str | None = Field(
        None,
        description="The [runtime] profile that latency, throughput and speed-up budgets "
        "read (its name, e.g. 'b32-t2'); default: the first profile.",
    )

    def limits(self) -> dict[str, float]:
        """The set goals, by budget key (`profile` says where to read, it is no goal)."""
        return {k: v for k, v in self.model_dump(exclude={"profile"}).items() if v is not None}
