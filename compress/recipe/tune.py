"""The `[tune]` table: which stage to tune, the search space, sampler and objective."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from compress.recipe.schema import StrictModel


class FloatParam(StrictModel):
    """A float in [low, high]; `log = true` (or type "log-float") samples on a log scale."""

    type: Literal["float", "log-float"]
    low: float = Field(description="Lower bound.")
    high: float = Field(description="Upper bound.")
    grid: list[float] | None = Field(None, description="Values to try with sampler = 'grid'.")

    @model_validator(mode="after")
    def _ordered(self) -> FloatParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.type == "log-float" and self.low <= 0:
            raise ValueError("log-float needs low > 0")
        return self


class IntParam(StrictModel):
    """An integer in [low, high] with an optional step."""

    type: Literal["int"]
    low: int = Field(description="Lower bound.")
    high: int = Field(description="Upper bound (inclusive).")
    step: int = Field(1, gt=0, description="Step between values.")

    @model_validator(mode="after")
    def _ordered(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        return self


class CategoricalParam(StrictModel):
    """One of a list of values."""

    type: Literal["categorical"]
    choices: list[Union[str, int, float, bool]] = Field(min_length=1, description="Values.")


SearchParam = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]


class TuneConfig(StrictModel):
    """Hyperparameter search over recipe values addressed by key path.

    Example (TOML):
        [tune]
        stage = "train"
        sampler = "bayesian"
        trials = 20
        [tune.space]
        "stages[0].optimizer.lr" = { type = "log-float", low = 1e-4, high = 0.3 }
    """

    stage: str | int = Field(
        0, description="The stage to tune (name or index); trials run the recipe up to it."
    )
    sampler: Literal["grid", "random", "bayesian"] = Field(
        "bayesian", description="grid, random, or bayesian (optuna's TPE)."
    )
    trials: int = Field(20, gt=0, description="Completed trials to reach (all workers together).")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting trials after this.")
    objective: Literal["val_accuracy", "accuracy-latency"] = Field(
        "val_accuracy",
        description="Maximize validation accuracy, or a Pareto front of accuracy vs ONNX p50.",
    )
    space: dict[str, SearchParam] = Field(
        min_length=1, description="Key path -> distribution, e.g. 'stages[0].optimizer.lr'."
    )
    storage: str | None = Field(
        None, description="optuna storage URL (default: sqlite file in the tune directory)."
    )
    study_name: str | None = Field(None, description="Study name (default: the recipe name).")

    @model_validator(mode="after")
    def _grid_is_finite(self) -> TuneConfig:
        if self.sampler == "grid":
            for path, param in self.space.items():
                if isinstance(param, FloatParam) and not param.grid:
                    raise ValueError(
                        f"space {path!r}: sampler 'grid' needs a `grid` list of values"
                    )
        return self

    def grid_values(self) -> dict[str, list[Any]]:
        """Every parameter's finite list of values, for optuna's GridSampler."""
        values: dict[str, list[Any]] = {}
        for path, param in self.space.items():
            if isinstance(param, CategoricalParam):
                values[path] = list(param.choices)
            elif isinstance(param, IntParam):
                values[path] = list(range(param.low, param.high + 1, param.step))
            else:
                values[path] = list(param.grid or [])
        return values
