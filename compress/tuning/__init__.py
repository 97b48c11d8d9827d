"""`compress tune`: hyperparameter search with optuna over recipe values.

A trial applies its sampled values to the recipe by key path, runs the recipe's
stages up to the tuned one, and scores the result on the *validation* split
(never test). optuna's storage does all coordination: an interrupted search
resumes from the same sqlite file, and several worker processes (or machines
sharing a database URL such as postgresql://) fill one study between them; a
worker that dies mid-trial has that trial retried (`study`: heartbeats).

`trial` holds what one trial does, `study` how the study is stored and read back;
this module runs the search.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from pathlib import Path

from compress.errors import CompressError, RecipeError, UsageError
from compress.recipe.loader import Recipe, validate_recipe
from compress.tuning.study import (
    WORKER_ATTR,
    TuneOutcome,
    heartbeat_s,
    open_study,
    requeue_interrupted,
    shown_url,
    storage_url,
    study_names,
    worker_id,
    write_outputs,
)
from compress.tuning.trial import TrialRunner, recipe_values, suggest

__all__ = ["TuneOutcome", "recipe_values", "run_worker", "tune"]


def _objective(runner: TrialRunner, total: int):
    import optuna
    from optuna.trial import TrialState

    tune = runner.recipe.tune

    def objective(trial: optuna.Trial):
        trial.set_user_attr(WORKER_ATTR, worker_id())  # first: an unclaimed trial is a dead one
        # Several workers share the study: never start more trials than asked for.
        # Only trials that started earlier (lower numbers) count against this one, so
        # two workers starting at once cannot each give way to the other.
        others = trial.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)
        )
        ahead = [t for t in others if t.state == TrialState.COMPLETE or t.number < trial.number]
        if len([t for t in ahead if t.number != trial.number]) >= total:
            trial.study.stop()
            raise optuna.TrialPruned("the requested number of trials is already reached")
        params = {path: suggest(trial, path, param) for path, param in tune.space.items()}
        started = time.monotonic()
        try:
            accuracy, p50 = runner.score(params)
        except CompressError as exc:  # e.g. NaN loss at a wild learning rate: a failed trial
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("duration_s", time.monotonic() - started)
        return accuracy if p50 is None else (accuracy, p50)

    return objective


def completed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def trial_logger(total: int):
    """One line per finished trial (workers print to the same terminal, so no bars)."""
    from rich.console import Console

    console = Console(highlight=False, width=200)

    def log(study, trial) -> None:
        values = trial.values or []
        score = f"val_acc {values[0]:.4f}" if values else trial.user_attrs.get("error", "")
        if len(values) > 1:
            score += f"  p50 {values[1]:.4g} ms"
        console.print(
            f"  trial {trial.number:>3} {trial.state.name:<8} {score}  "
            f"({completed(study)}/{total} complete, pid {os.getpid()})"
        )

    return log


def _running(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def run_worker(
    recipe: Recipe,
    label: str,
    storage: str,
    threads: int | None = None,
    worker: int = 0,
    limit: int | None = None,
    parent_run_id: str | None = None,
) -> None:
    """One worker: join the study and run trials until the study has `trials` complete.

    When it stops because the trials still needed are running elsewhere, it waits for
    them: each either completes or, its worker dead, goes stale and is queued again,
    and this worker runs it. So the command returns with the study at its count.
    """
    import optuna
    import torch

    if threads:
        torch.set_num_threads(threads)
    study = open_study(recipe, storage, create=False, worker=worker)
    runner = TrialRunner(recipe, label)
    total = recipe.tune.trials
    callbacks = [
        optuna.study.MaxTrialsCallback(total, states=(optuna.trial.TrialState.COMPLETE,)),
        trial_logger(total),
    ]
    if parent_run_id:
        from compress.tracking import require_mlflow
        from compress.tracking.study import TrialTracker

        callbacks.append(TrialTracker(require_mlflow(recipe), parent_run_id))
    deadline = time.monotonic() + recipe.tune.timeout_s if recipe.tune.timeout_s else None
    while completed(study) < total:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        study.optimize(
            _objective(runner, total),
            n_trials=limit,
            timeout=left,
            callbacks=callbacks,
            catch=(CompressError,),  # a failed trial is recorded as FAIL; the search goes on
        )
        if limit is not None:
            return
        while completed(study) < total and _running(study) and (
            deadline is None or time.monotonic() < deadline
        ):  # fmt: skip
            time.sleep(heartbeat_s())
            requeue_interrupted(study)


def _worker_entry(recipe_json: dict, label: str, storage: str, threads: int, worker: int,
                  parent_run_id: str | None) -> None:  # fmt: skip
    recipe = validate_recipe(recipe_json, label)
    run_worker(recipe, label, storage, threads, worker, parent_run_id=parent_run_id)


def tune(
    recipe: Recipe,
    label: str,
    out_dir: Path,
    *,
    resume: bool = False,
    workers: int = 1,
    storage: str | None = None,
) -> TuneOutcome:
    """Run (or resume) the recipe's `[tune]` search and write the winning recipe.

    Args:
        recipe: a recipe with a `[tune]` table.
        label: the recipe file name, for error messages.
        out_dir: where study.db (default storage), trials.json and best.toml go.
        resume: continue an existing study instead of refusing to touch it.
        workers: processes sharing the study (each trains with cores/workers threads).
        storage: an optuna storage URL overriding `tune.storage`.

    Example:
        >>> outcome = tune(load_recipe("recipes/tune-digits.toml"), "tune-digits.toml",
        ...                Path("runs/tune"))  # doctest: +SKIP
    """
    from compress.tracking import require_mlflow

    if recipe.tune is None:
        raise RecipeError(f"{label}: no [tune] table: add one to say what to search")
    require_mlflow(recipe)  # mlflow missing: exit 2 before the study is touched
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url(recipe.tune, out_dir, storage)
    name = recipe.tune.study_name or recipe.name
    if name in study_names(url) and not resume:
        raise UsageError(
            f"a study named {name!r} already exists in {shown_url(url)}: pass --resume to "
            "continue it (or to join it from another machine), or use another --out directory"
        )
    study = open_study(recipe, url, create=True)
    if resume:
        requeue_interrupted(study)
    elif recipe.tune.sampler != "grid" and (baseline := recipe_values(recipe)) is not None:
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    tracker = _study_tracker(recipe, study, url)
    parent = tracker.parent_run_id if tracker else None

    if workers <= 1:
        run_worker(recipe, label, url, parent_run_id=parent)
    else:
        _run_workers(recipe, label, url, study, workers, parent)
    outcome = write_outputs(recipe, label, out_dir, open_study(recipe, url, create=False))
    if tracker:
        tracker.finish(outcome)
    return outcome


def _study_tracker(recipe: Recipe, study, url: str):
    from compress.tracking import require_mlflow

    config = require_mlflow(recipe)
    if config is None:
        return None
    from compress.tracking.study import StudyTracker

    return StudyTracker.open(recipe, config, study, shown_url(url))


def _run_workers(recipe: Recipe, label: str, url: str, study, workers: int, parent) -> None:
    """`workers` spawned processes share the study; a dead one's trials are retried."""
    from optuna.trial import TrialState

    # Queued trials (the recipe's own values, re-queued interrupted ones) run here
    # first: two workers popping one queued trial from sqlite at once can both take
    # it (seen: "Cannot tell a COMPLETE trial").
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if waiting:
        run_worker(recipe, label, url, limit=len(waiting), parent_run_id=parent)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    raw = recipe.model_dump(mode="json", exclude_none=True)
    processes = [
        context.Process(target=_worker_entry, args=(raw, label, url, threads, index, parent))
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    dead = [f"{p.pid} (exit {p.exitcode})" for p in processes if p.exitcode != 0]
    if dead:
        # Its trial is RUNNING with a heartbeat that stopped: finish the study here,
        # which retries that trial once its heartbeat is stale (4 heartbeats).
        sys.stderr.write(
            f"warning: tune worker(s) {', '.join(dead)} died; their trials are retried "
            f"here within {4 * heartbeat_s()} s\n"
        )
        run_worker(recipe, label, url, threads=threads, parent_run_id=parent)
