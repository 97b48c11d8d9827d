"""Experiment tracking: runs and searches logged to MLflow, beside the run folder.

One job per module: `flatten` turns the recipe, stage records and report into flat
params / metrics / tags; `client` is the MLflow client that warns once and goes quiet
when the server is down; `callback` is the runner observer for `compress run`;
`study` logs `compress tune` (a parent run per study, a child run per trial).

mlflow is an optional extra (`pip install compress[tracking]`) imported only when a
recipe's `[tracking]` table or `--mlflow URI` turns tracking on.
"""

from __future__ import annotations

import os

from compress.errors import UsageError
from compress.recipe.loader import Recipe
from compress.recipe.schema.tracking import MlflowConfig

__all__ = ["require_mlflow", "run_callbacks", "with_mlflow"]


def with_mlflow(recipe: Recipe, uri: str | None) -> Recipe:
    """The recipe with `--mlflow URI` applied (it overrides `[tracking.mlflow].uri`).

    Example:
        >>> with_mlflow(recipe, "http://127.0.0.1:5000").tracking.mlflow.uri  # doctest: +SKIP
        'http://127.0.0.1:5000'
    """
    if not uri:
        return recipe
    current = recipe.tracking.mlflow
    config = current.model_copy(update={"uri": uri}) if current else MlflowConfig(uri=uri)
    tracking = recipe.tracking.model_copy(update={"mlflow": config})
    return recipe.model_copy(update={"tracking": tracking})


def require_mlflow(recipe: Recipe) -> MlflowConfig | None:
    """The MLflow table if tracking is on; a usage error (exit 2) when mlflow is missing."""
    config = recipe.tracking.mlflow
    if config is None:
        return None
    if config.uri is None:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise UsageError(
                "tracking.mlflow: no tracking server: set tracking.mlflow.uri, pass "
                "--mlflow URI or set MLFLOW_TRACKING_URI"
            )
        config = config.model_copy(update={"uri": uri})
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise UsageError(
            f"tracking.mlflow (uri {config.uri}) needs mlflow: pip install 'compress[tracking]'"
        ) from None
    return config


def run_callbacks(recipe: Recipe) -> list:
    """The tracking callbacks a `compress run` of this recipe gets (none when off)."""
    config = require_mlflow(recipe)
    if config is None:
        return []
    from compress.tracking.callback import MlflowCallback

    return [MlflowCallback(recipe, config)]
