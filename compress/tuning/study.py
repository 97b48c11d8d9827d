"""The optuna study behind `compress tune`: storage, samplers, trial rows, outputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_write_json, atomic_write_text
from compress.recipe.loader import Recipe
from compress.recipe.tune import TuneConfig
from compress.tuning.trial import apply_params


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


def _sampler(tune: TuneConfig, seed: int):
    import optuna

    if tune.sampler == "grid":
        return optuna.samplers.GridSampler(tune.grid_values(), seed=seed)
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _directions(tune: TuneConfig) -> list[str]:
    return ["maximize"] if tune.objective == "val_accuracy" else ["maximize", "minimize"]


def storage_url(tune: TuneConfig, out_dir: Path, override: str | None) -> str:
    return override or tune.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"


def open_study(recipe: Recipe, storage: str, create: bool, worker: int = 0):
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


def requeue_interrupted(study) -> int:
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


def study_exists(url: str) -> bool:
    prefix = "sqlite:///"
    return not url.startswith(prefix) or Path(url[len(prefix) :]).exists()


def write_outputs(recipe: Recipe, label: str, out_dir: Path, study) -> TuneOutcome:
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
