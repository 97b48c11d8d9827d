"""Errors a user can cause, each mapped to the CLI exit code it produces.

Programming errors (TypeError, AttributeError, ImportError, ...) are never
wrapped in these: they surface as tracebacks because they are our bugs.
"""


class CompressError(Exception):
    """Base of every error caused by the user's recipe, data or environment."""

    exit_code = 3


class RecipeError(CompressError):
    """The recipe (or a command-line override) is invalid. Exit code 2."""

    exit_code = 2


class UsageError(CompressError):
    """The command line or the environment cannot serve the request. Exit code 2."""

    exit_code = 2


class DataError(CompressError):
    """A data source is missing, corrupt or returned something unusable."""

    exit_code = 3


class StageError(CompressError):
    """A stage could not produce its model. Exit code 3."""

    exit_code = 3

    def __init__(self, message: str, stage: str | None = None):
        self.stage = stage
        super().__init__(f"stage '{stage}': {message}" if stage else message)


class ArtifactError(CompressError):
    """An artifact in the run directory is missing, truncated or fails its hash."""

    exit_code = 3


class BudgetError(CompressError):
    """At least one budget was missed. Exit code 1; the report is still written."""

    exit_code = 1


class AgreedStop(StageError):
    """A training job stopped on a decision every rank made together (a non-finite
    loss they all saw): the ranks are still in step and can take the next job."""
