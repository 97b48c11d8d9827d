"""`compress tune` in MLflow: the study is a parent run, each finished trial a child run.

The parent run's id is kept in the study itself (a study user attribute per tracking
URI), so workers on other machines that join the same database log their trials
under the same parent.
"""

from __future__ import annotations

import json
from typing import Any

from compress.recipe.loader import Recipe
from compress.recipe.schema.tracking import MlflowConfig
from compress.tracking.client import Tracker
from compress.tracking.flatten import environment_tags, flatten_params, safe_key

PARENT_ATTR = "mlflow_parent_runs"  # {tracking uri: run id}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class StudyTracker:
    """The study's parent run: opened (or joined) before the search, finished after it.

    Example:
        >>> config = recipe.tracking.mlflow  # doctest: +SKIP
        >>> tracker = StudyTracker.open(recipe, config, study, url)  # doctest: +SKIP
        >>> tracker.finish(outcome)  # doctest: +SKIP
    """

    def __init__(self, tracker: Tracker, parent_run_id: str | None):
        self.tracker, self.parent_run_id = tracker, parent_run_id

    @classmethod
    def open(cls, recipe: Recipe, config: MlflowConfig, study, storage: str) -> StudyTracker:
        from compress import __version__
        from compress.runtime.machine import run_environment

        tracker = Tracker(config)
        known = dict(study.user_attrs.get(PARENT_ATTR) or {})
        if config.uri in known:  # a resumed study, or another machine's command joining it
            return cls(tracker, known[config.uri])
        name = recipe.tune.study_name or recipe.name
        tags = {
            **environment_tags(run_environment(), __version__),
            "compress.recipe": recipe.name,
            "compress.kind": "tune study",
            "optuna.study": name,
            "optuna.storage": storage,
        }
        run_id = tracker.start_run(config.run_name or f"{name} (tune)", tags=tags)
        if run_id is None:
            return cls(tracker, None)
        params = flatten_params(recipe.tune.model_dump(mode="json", exclude_none=True), "tune")
        tracker.log(run_id, params=params)
        study.set_user_attr(PARENT_ATTR, {**known, config.uri: run_id})
        return cls(tracker, run_id)

    def finish(self, outcome) -> None:
        """The search's result on the parent run: best values, counts, output files."""
        run_id = self.parent_run_id
        if run_id is None:
            return
        states = [row["state"] for row in outcome.trials]
        metrics = {f"trials.{s.lower()}": float(states.count(s)) for s in set(states)}
        tags: dict[str, str] = {}
        if outcome.best:
            best = outcome.best[0]
            metrics["best.val_accuracy"] = float(best["val_accuracy"])
            if best.get("latency_p50_ms") is not None:
                metrics["best.latency_p50_ms"] = float(best["latency_p50_ms"])
            tags["best.trials"] = ",".join(str(row["number"]) for row in outcome.best)
            tags.update({safe_key(f"best.{k}"): _text(v) for k, v in best["params"].items()})
        self.tracker.log(run_id, metrics=metrics, tags=tags)
        names = ("trials.json", "best.json", "best.toml")
        self.tracker.log_files(run_id, [(outcome.out_dir / name, None) for name in names])
        self.tracker.end_run(run_id, ok=outcome.best_recipe_path is not None)


class TrialTracker:
    """An optuna callback: each finished trial becomes a child run of the study's run.

    Args:
        config: the `[tracking.mlflow]` table.
        parent_run_id: the study's run (`StudyTracker.parent_run_id`).
    """

    def __init__(self, config: MlflowConfig, parent_run_id: str):
        self.tracker = Tracker(config)
        self.parent_run_id = parent_run_id

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        if trial.state == TrialState.PRUNED and not trial.params:
            return  # a placeholder: the study already had its trials when it started
        tags = {
            "optuna.trial": str(trial.number),
            "optuna.state": trial.state.name,
            "compress.kind": "tune trial",
            "compress.baseline": str(bool(trial.user_attrs.get("baseline", False))).lower(),
        }
        worker = trial.user_attrs.get("compress_worker")
        if worker:
            tags["compress.worker"] = str(worker)
        if "failed_trial" in trial.system_attrs:
            tags["optuna.retry_of"] = str(trial.system_attrs["failed_trial"])
        if trial.user_attrs.get("error"):
            tags["compress.error"] = str(trial.user_attrs["error"])[:5000]
        metrics: dict[str, Any] = {}
        values = trial.values or []
        if values:
            metrics["val_accuracy"] = float(values[0])
        if len(values) > 1:
            metrics["latency_p50_ms"] = float(values[1])
        if trial.user_attrs.get("duration_s") is not None:
            metrics["duration_s"] = float(trial.user_attrs["duration_s"])
        run_id = self.tracker.start_run(
            f"trial {trial.number}", tags=tags, parent_run_id=self.parent_run_id
        )
        params = {safe_key(k): _text(v) for k, v in trial.params.items()}
        self.tracker.log(run_id, params=params, metrics=metrics, step=trial.number)
        self.tracker.end_run(run_id, ok=trial.state == TrialState.COMPLETE, quiet=True)
