"""A tracking client that cannot lose a run: the first failure is one warning, then off.

Wraps `mlflow.tracking.MlflowClient` (explicit run ids, no global active run, so a
tune worker's trial runs and the study's parent run never mix). MLflow's HTTP client
retries for minutes by default; requests here get `timeout_s` and no retries unless
the user set MLFLOW_HTTP_REQUEST_MAX_RETRIES / MLFLOW_HTTP_REQUEST_TIMEOUT themselves.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from compress.recipe.schema.tracking import MlflowConfig

T = TypeVar("T")

_BATCH = 100  # log_batch takes at most 100 params (and 1000 metrics) per call


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class Tracker:
    """One MLflow experiment on one server, for as long as the server answers.

    Args:
        config: the `[tracking.mlflow]` table (uri, experiment, timeout).
        warn: where the one warning line goes (stderr by default).

    Example:
        >>> tracker = Tracker(MlflowConfig(uri="http://127.0.0.1:5000"))  # doctest: +SKIP
        >>> run_id = tracker.start_run("digits", tags={"compress.version": "0.1.0"})
    """

    def __init__(self, config: MlflowConfig, warn: Callable[[str], None] = _warn):
        self.config = config
        self.warn = warn
        self.enabled = True
        self._client = None
        self._experiment_id: str | None = None

    def _call(self, what: str, fn: Callable[[], T]) -> T | None:
        """Run one tracking call; on the first failure warn once and stop tracking."""
        if not self.enabled:
            return None
        from mlflow.exceptions import MlflowException
        from requests.exceptions import RequestException

        try:
            return fn()
        except (MlflowException, RequestException, OSError) as exc:
            self.enabled = False
            reason = " ".join(str(exc).split())[:300]
            self.warn(
                f"MLflow tracking at {self.config.uri} is off for the rest of this run "
                f"({what} failed: {reason}); the run folder is the record"
            )
            return None

    def _connect(self):
        from mlflow.tracking import MlflowClient

        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        timeout = str(int(max(1, self.config.timeout_s)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", timeout)
        client = MlflowClient(tracking_uri=self.config.uri)
        experiment = client.get_experiment_by_name(self.config.experiment)
        if experiment is not None:
            self._experiment_id = experiment.experiment_id
        else:
            self._experiment_id = client.create_experiment(self.config.experiment)
        self._client = client
        return client

    @property
    def client(self):
        return self._client if self._client is not None else self._connect()

    def start_run(self, name: str, tags: dict[str, str] | None = None,
                  parent_run_id: str | None = None) -> str | None:  # fmt: skip
        """A new run in the experiment; its id, or None when tracking is off."""
        tags = dict(tags or {})
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id

        def start() -> str:
            client = self.client
            run = client.create_run(self._experiment_id, run_name=name, tags=tags)
            return run.info.run_id

        return self._call("starting a run", start)

    def log(self, run_id: str | None, *, params: dict[str, str] | None = None,
            metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
            step: int = 0) -> None:  # fmt: skip
        """Params, metrics (at `step`) and tags, in batches MLflow accepts."""
        if run_id is None:
            return

        def log() -> None:
            from mlflow.entities import Metric, Param, RunTag
            from mlflow.utils.time import get_current_time_millis

            now = get_current_time_millis()
            items: list[tuple[str, Any]] = []
            items += [("p", Param(k, v)) for k, v in (params or {}).items()]
            items += [("m", Metric(k, v, now, step)) for k, v in (metrics or {}).items()]
            items += [("t", RunTag(k, v)) for k, v in (tags or {}).items()]
            for start in range(0, len(items), _BATCH):
                chunk = items[start : start + _BATCH]
                self.client.log_batch(
                    run_id,
                    params=[x for kind, x in chunk if kind == "p"],
                    metrics=[x for kind, x in chunk if kind == "m"],
                    tags=[x for kind, x in chunk if kind == "t"],
                )

        self._call("logging", log)

    def log_files(self, run_id: str | None, files: list[tuple[Path, str | None]]) -> None:
        """Upload each existing (file, artifact folder) pair; missing files are skipped."""
        if run_id is None:
            return

        def upload() -> None:
            for path, folder in files:
                if Path(path).is_file():
                    self.client.log_artifact(run_id, str(path), folder)

        self._call("uploading artifacts", upload)

    def end_run(self, run_id: str | None, ok: bool, quiet: bool = False) -> None:
        """Mark the run FINISHED (or FAILED); `quiet` drops MLflow's "View run" lines
        (one pair per tune trial would bury the trial log)."""
        if run_id is None:
            return
        status = "FINISHED" if ok else "FAILED"

        def end() -> None:
            if not quiet:
                return self.client.set_terminated(run_id, status)
            with contextlib.redirect_stdout(io.StringIO()):
                return self.client.set_terminated(run_id, status)

        self._call("ending the run", end)
