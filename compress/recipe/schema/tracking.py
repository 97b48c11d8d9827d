"""The `[tracking]` table: where runs and searches are logged besides the run folder."""

from __future__ import annotations

from pydantic import Field

from compress.recipe.schema.base import StrictModel


class MlflowConfig(StrictModel):
    """An MLflow tracking server (or store) every run and search is logged to.

    Example (TOML):
        [tracking]
        mlflow = { uri = "http://mlflow.internal:5000", experiment = "digits" }
    """

    uri: str | None = Field(
        None,
        min_length=1,
        description="Tracking URI: http(s)://host:port of an `mlflow server`, or a "
        "sqlite:/// or file:// store. `--mlflow URI` overrides it; when neither is given, "
        "$MLFLOW_TRACKING_URI.",
    )
    experiment: str = Field(
        "compress", min_length=1, description="Experiment name; created when missing."
    )
    run_name: str | None = Field(
        None, description="Run name shown in the UI (default: the recipe name)."
    )
    timeout_s: float = Field(
        5.0,
        gt=0,
        description="Seconds one request may take. A server that is down or does not "
        "answer in time costs one warning and this long, never the run.",
    )
    log_model: bool = Field(
        True, description="Upload final/model.onnx (and its contract) as artifacts."
    )


class TrackingConfig(StrictModel):
    """Experiment tracking; off unless a tracker is named (or `--mlflow URI` is given).

    The run folder stays the record: a tracker that is down or refuses is one warning.
    """

    mlflow: MlflowConfig | None = Field(
        None, description="Log runs and searches to MLflow (needs compress[tracking])."
    )
