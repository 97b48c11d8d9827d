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
