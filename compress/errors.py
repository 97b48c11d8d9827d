"""Errors a user can cause, each mapped to the CLI exit code it produces.

Programming errors (`INTERNAL_ERRORS`) are never wrapped in these: they are our
bugs, and the CLI reports them as such (exit 4, traceback under --debug).
"""

# Exceptions that mean a bug in compress, never a user's mistake (Olive keeps the same
# list as EXCEPTIONS_TO_RAISE). ValueError and RuntimeError are not among them: torch
# raises those for a user model's shape mismatch.
INTERNAL_ERRORS = (AssertionError, AttributeError, ImportError, NameError, TypeError)
EXIT_INTERNAL = 4


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
    """A data source is missing, corrupt or returned something unusable. Exit code 2:
    the data is the user's input, and it is checked before anything trains."""

    exit_code = 2


class StageError(CompressError):
    """A stage could not produce its model. Exit code 3."""

    exit_code = 3

    def __init__(self, message: str, stage: str | None = None):
        self.stage = stage
        super().__init__(f"stage '{stage}': {message}" if stage else message)


class ArtifactError(CompressError):
    """An artifact in the run directory is missing, truncated or fails its hash."""

    exit_code = 3


class AgreedStop(StageError):
    """A training job stopped on a decision every rank made together (a non-finite
    loss they all saw): the ranks are still in step and can take the next job."""


def describe_failure(exc: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an exception that ended a stage.

    Our errors keep their code; programming errors are our bugs (exit 4, never passed
    off as a failed stage); anything else comes from the user's model or data code or
    a library (a shape mismatch is a RuntimeError): exit 3.
    """
    if isinstance(exc, CompressError):
        return str(exc), exc.exit_code
    if isinstance(exc, INTERNAL_ERRORS):
        return f"internal error, please report: {type(exc).__name__}: {exc}", EXIT_INTERNAL
    return f"{type(exc).__name__}: {exc}", 3
