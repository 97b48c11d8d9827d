"""`compress tune`: hyperparameter search with optuna over recipe values.

A trial applies its sampled values to the recipe by key path, runs the recipe's
stages up to the tuned one, and scores the result on the *validation* split
(never test). optuna's storage does all coordination: an interrupted search
resumes from the same sqlite file, and several worker processes (or machines
sharing a database URL) fill one study between them.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_write_json, atomic_write_text
from compress.errors import CompressError, RecipeError, UsageError
from compress.recipe.loader import Recipe, apply_override, validate_recipe
from compress.recipe.tune import CategoricalParam, FloatParam, IntParam, TuneConfig

RUNNING_ATTR = "compress_worker"


@dataclass
class TuneOutcome:
    """What a search produced: the study's trials, the best trial(s), the winning recipe."""

    out_dir: Path
    trials: list[dict[str, Any]]
    best: list[dict[str, Any]]
    best_recipe_path: Path | None

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The trial that ran the recipe's own values, if it completed."""
        done = [r for r in self.trials if r["baseline"] and r["state"] == "COMPLETE"]
        return done[0] if done else None


def tuned_stage_index(recipe: Recipe) -> int:
    stage = recipe.tune.stage
    return stage if isinstance(stage, int) else recipe.stage_names().index(stage)


def _suggest(trial, path: str, param) -> Any:
    if isinstance(param, FloatParam):
        return trial.suggest_float(path, param.low, param.high, log=param.type == "log-float")
    if isinstance(param, IntParam):
        return trial.suggest_int(path, param.low, param.high, step=param.step)
    if isinstance(param, CategoricalParam):
        return trial.suggest_categorical(path, param.choices)
    raise TypeError(f"unknown search parameter {param!r}")


def _toml_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def apply_params(recipe: Recipe, params: dict[str, Any], label: str) -> Recipe:
    """A copy of `recipe` with each `key.path = value` applied and validated again."""
    raw = recipe.model_dump(mode="json", exclude_none=True)
    for path, value in params.items():
        apply_override(raw, f"{path}={_toml_literal(value)}", source="tune.space")
    return validate_recipe(raw, label)


def recipe_values(recipe: Recipe) -> dict[str, Any] | None:
    """The recipe's own values at every search-space path, when each lies in its range.

    Queued as the first trial of a new study, they make the recipe's defaults the
    baseline every other trial is compared with, measured the same way.
    """
    from compress.recipe.loader import parse_key_path

    raw = recipe.model_dump(mode="json")
    values: dict[str, Any] = {}
    for path, param in recipe.tune.space.items():
        node: Any = raw
        for part in parse_key_path(path):
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                return None
        if isinstance(param, CategoricalParam):
            inside = node in param.choices
        else:
            inside = isinstance(node, (int, float)) and param.low <= node <= param.high
        if not inside:
            return None
        values[path] = node
    return values


def _sampler(tune: TuneConfig, seed: int):
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(tune.grid_values(), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _directions(tune: TuneConfig) -> list[str]:
    return ["maximize"] if tune.objective == "val_accuracy" else ["maximize", "minimize"]


def _storage_url(tune: TuneConfig, out_dir: Path, override: str | None) -> str:
    return override or tune.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"


def _open_study(recipe: Recipe, storage: str, create: bool, worker: int = 0):
    """Create or join the study.

    Each worker's sampler gets its own seed, also shifted by the trials already in the
    study: identically seeded workers (or a resumed run) would propose the same points.
    The grid sampler is the exception (see below).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = recipe.tune.study_name or recipe.name
    if create:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=_sampler(recipe.tune, recipe.seed),
            directions=_directions(recipe.tune),
            load_if_exists=True,
        )
    study = optuna.load_study(study_name=name, storage=storage)
    seed = recipe.seed * 10_007 + worker * 101 + len(study.get_trials(deepcopy=False))
    if recipe.tune.sampler == "grid":
        # GridSampler shuffles its grid by seed and maps trial numbers into that order:
        # every worker must share one seed, or two workers map one id to two points
        seed = recipe.seed
    return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(recipe.tune, seed))


class TrialRunner:
    """Runs one trial: stages up to the tuned one, scored on validation data."""

    def __init__(self, recipe: Recipe, label: str):
        from compress.data import load_data

        self.recipe = recipe
        self.label = label
        self.upto = tuned_stage_index(recipe)
        self.data = load_data(recipe.data, recipe.seed)  # once per worker, shared by trials

    def score(self, params: dict[str, Any]) -> tuple[float, float | None]:
        from compress.runner import initial_model
        from compress.stages import STAGES
        from compress.stages.base import RunContext, seed_everything

        recipe = apply_params(self.recipe, params, self.label)
        seed_everything(recipe.seed)  # the same initial weights in every trial, as in a run
        model, spec = initial_model(recipe, self.data)
        names = recipe.stage_names()
        with tempfile.TemporaryDirectory(prefix="compress-trial-") as scratch:
            ctx = RunContext(recipe, self.data, model, spec, Path(scratch), recipe.seed)
            result = None
            for config, name in list(zip(recipe.stages, names))[: self.upto + 1]:
                ctx.workdir = Path(scratch) / name
                result = STAGES.get(config.type)(config, name).run(ctx)
                ctx.accept(result)
            return self._measure(recipe, result, Path(scratch))

    def _measure(self, recipe: Recipe, result, scratch: Path) -> tuple[float, float | None]:
        from compress.runtime.evaluate import onnx_accuracy
        from compress.runtime.latency import measure_with_runtime
        from compress.runtime.onnx_export import export_onnx
        from compress.training import evaluate

        onnx_path = result.onnx_path
        if onnx_path is not None:
            accuracy = onnx_accuracy(onnx_path, self.data.val)
        else:
            accuracy = evaluate(result.model, self.data.val)["accuracy"]
        if recipe.tune.objective == "val_accuracy":
            return accuracy, None
        if onnx_path is None:
            onnx_path = export_onnx(result.model, result.spec.input_shape, scratch / "trial.onnx")
        (stats,) = measure_with_runtime([onnx_path], result.spec.input_shape, recipe.runtime)
        return accuracy, stats.p50_ms


def _objective(runner: TrialRunner, total: int):
    import optuna
    from optuna.trial import TrialState

    tune = runner.recipe.tune

    def objective(trial: optuna.Trial):
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
        trial.set_user_attr(RUNNING_ATTR, os.getpid())
        params = {path: _suggest(trial, path, param) for path, param in tune.space.items()}
        started = time.monotonic()
        try:
            accuracy, p50 = runner.score(params)
        except CompressError as exc:  # e.g. NaN loss at a wild learning rate: a failed trial
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("duration_s", time.monotonic() - started)
        return accuracy if p50 is None else (accuracy, p50)

    return objective


def _completed(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _trial_logger(total: int):
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
            f"({_completed(study)}/{total} complete, pid {os.getpid()})"
        )

    return log


def run_worker(
    recipe: Recipe,
    label: str,
    storage: str,
    threads: int | None = None,
    worker: int = 0,
    limit: int | None = None,
) -> None:
    """One worker: join the study and run trials until the study has `trials` complete."""
    import optuna
    import torch

    if threads:
        torch.set_num_threads(threads)
    study = _open_study(recipe, storage, create=False, worker=worker)
    runner = TrialRunner(recipe, label)
    total = recipe.tune.trials
    remaining = total - _completed(study)
    if remaining <= 0:
        return
    study.optimize(
        _objective(runner, total),
        n_trials=limit,
        timeout=recipe.tune.timeout_s,
        callbacks=[
            optuna.study.MaxTrialsCallback(total, states=(optuna.trial.TrialState.COMPLETE,)),
            _trial_logger(total),
        ],
        catch=(CompressError,),  # a failed trial is recorded as FAIL; the search goes on
    )


def _worker_entry(recipe_json: dict, label: str, storage: str, threads: int, worker: int) -> None:
    recipe = validate_recipe(recipe_json, label)
    run_worker(recipe, label, storage, threads, worker)


def _requeue_interrupted(study) -> int:
    """Fail trials left RUNNING by a dead process and queue their params again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(trial.params)  # the failed twin has these params: no skip_if_exists
    return len(stale)


def _trial_rows(study, tune: TuneConfig) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        values = trial.values or []
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "val_accuracy": values[0] if values else None,
                "latency_p50_ms": values[1] if len(values) > 1 else None,
                "params": trial.params,
                "duration_s": trial.user_attrs.get("duration_s"),
                "baseline": bool(trial.user_attrs.get("baseline", False)),
                "error": trial.user_attrs.get("error"),
            }
        )
    return rows


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
    import optuna

    if recipe.tune is None:
        raise RecipeError(f"{label}: no [tune] table: add one to say what to search")
    out_dir.mkdir(parents=True, exist_ok=True)
    url = _storage_url(recipe.tune, out_dir, storage)
    name = recipe.tune.study_name or recipe.name
    existing = [s.study_name for s in optuna.get_all_study_summaries(url)] if _exists(url) else []
    if name in existing and not resume:
        raise UsageError(
            f"a study named {name!r} already exists in {url}: pass --resume to continue it, "
            "or use another --out directory"
        )
    study = _open_study(recipe, url, create=True)
    if resume:
        _requeue_interrupted(study)
    elif recipe.tune.sampler != "grid" and (baseline := recipe_values(recipe)) is not None:
        study.enqueue_trial(baseline, user_attrs={"baseline": True})

    if workers <= 1:
        run_worker(recipe, label, url)
    else:
        # Queued trials (the recipe's own values, re-queued interrupted ones) run here
        # first: two workers popping one queued trial from sqlite at once can both take
        # it (seen: "Cannot tell a COMPLETE trial").
        from optuna.trial import TrialState

        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            run_worker(recipe, label, url, limit=len(waiting))
        threads = max(1, (os.cpu_count() or 1) // workers)
        context = multiprocessing.get_context("spawn")
        raw = recipe.model_dump(mode="json", exclude_none=True)
        processes = [
            context.Process(target=_worker_entry, args=(raw, label, url, threads, index))
            for index in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            raise UsageError(f"{len(failed)} tune worker(s) exited with codes {failed}")
    return _write_outputs(recipe, label, out_dir, _open_study(recipe, url, create=False))


def _exists(url: str) -> bool:
    prefix = "sqlite:///"
    return not url.startswith(prefix) or Path(url[len(prefix) :]).exists()


def _write_outputs(recipe: Recipe, label: str, out_dir: Path, study) -> TuneOutcome:
    rows = _trial_rows(study, recipe.tune)
    atomic_write_json(out_dir / "trials.json", rows)
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    if not complete:
        return TuneOutcome(out_dir, rows, [], None)
    if recipe.tune.objective == "val_accuracy":
        best_numbers = [study.best_trial.number]
    else:
        best_numbers = [t.number for t in study.best_trials]
    best = [r for r in rows if r["number"] in best_numbers]
    best.sort(key=lambda r: -r["val_accuracy"])
    winner = apply_params(recipe, best[0]["params"], label)
    winner = winner.model_copy(update={"tune": None})
    path = out_dir / "best.toml"
    header = (
        f"# Written by compress tune: trial {best[0]['number']} of study "
        f"{recipe.tune.study_name or recipe.name}, val_accuracy {best[0]['val_accuracy']:.4f}\n"
    )
    atomic_write_text(path, header + winner.to_toml())
    atomic_write_json(out_dir / "best.json", best)
    return TuneOutcome(out_dir, rows, best, path)
