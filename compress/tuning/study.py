"""The optuna study behind `compress tune`: storage, samplers, trial rows, outputs.

Every storage URL (sqlite, postgresql, mysql: any optuna RDB URL) is opened with
optuna's heartbeat: each running trial records a heartbeat every
`COMPRESS_TUNE_HEARTBEAT_S` seconds (default 10), a trial whose heartbeat is older than
four intervals belongs to a dead worker, and the next worker to start a trial on any
machine fails it and queues its parameters again (`RetryHeartbeatStaleTrialCallback`,
at most `MAX_RETRIES` times). Trial numbers come from the database, so workers
never share one.
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.artifacts import atomic_write_json, atomic_write_text
from compress.errors import UsageError
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


HEARTBEAT_ENV = "COMPRESS_TUNE_HEARTBEAT_S"
MAX_RETRIES = 2  # a trial that kills its worker every time (out of memory) is not retried forever
WORKER_ATTR = "compress_worker"  # "host:pid" of the process running the trial
_STORAGES: dict[str, Any] = {}


def storage_url(tune: TuneConfig, out_dir: Path, override: str | None) -> str:
    return override or tune.storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages and tracking."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given (no password to hide)
        return url


def heartbeat_s() -> int:
    raw = os.environ.get(HEARTBEAT_ENV, "10")
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"{HEARTBEAT_ENV}={raw!r}: a whole number of seconds >= 1")
    return int(raw)


def _retry_stale(study, trial) -> None:
    """optuna's retry of a stale trial, without the dead worker's "host:pid"."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    trial = copy.copy(trial)
    trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != WORKER_ATTR}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning: the API is stable in practice
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def storage(url: str):
    """The optuna RDB storage at `url`, with heartbeats (one per URL per process).

    Raises:
        UsageError: the URL does not parse, its driver is missing, or the server
            refuses the connection.
    """
    if url in _STORAGES:
        return _STORAGES[url]
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import ArgumentError, OperationalError

    interval = heartbeat_s()
    engine = {} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" since 2.x
            opened = RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=interval,
                grace_period=4 * interval,
                heartbeat_stale_trial_callback=_retry_stale,
            )
    except ImportError as exc:
        cause = exc.__cause__ or exc
        raise UsageError(
            f"storage {shown_url(url)}: its database driver is missing ({cause}); for "
            "postgresql:// run pip install 'compress[postgres]'"
        ) from None
    except (ArgumentError, OperationalError) as exc:
        reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise UsageError(f"storage {shown_url(url)}: cannot open it ({reason})") from None
    _STORAGES[url] = opened
    return opened


def open_study(recipe: Recipe, storage_at: str, create: bool, worker: int = 0):
    """Create or join the study.

    Each worker's sampler gets its own seed, also shifted by the trials already in the
    study: identically seeded workers (or a resumed run) would propose the same points.
    The grid sampler is the exception (see below).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = recipe.tune.study_name or recipe.name
    storage_ = storage(storage_at)
    if create:
        return optuna.create_study(
            study_name=name,
            storage=storage_,
            sampler=_sampler(recipe.tune, recipe.seed),
            directions=_directions(recipe.tune),
            load_if_exists=True,
        )
    study = optuna.load_study(study_name=name, storage=storage_)
    seed = recipe.seed * 10_007 + worker * 101 + len(study.get_trials(deepcopy=False))
    if recipe.tune.sampler == "grid":
        # GridSampler shuffles its grid by seed and maps trial numbers into that order:
        # every worker must share one seed, or two workers map one id to two points
        seed = recipe.seed
    return optuna.load_study(study_name=name, storage=storage_, sampler=_sampler(recipe.tune, seed))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead(owner: Any) -> bool:
    """No compress worker ever claimed the trial, or its worker on this host is gone."""
    if not isinstance(owner, str) or ":" not in owner:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: its heartbeat decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def requeue_interrupted(study) -> int:
    """Fail the trials whose worker died and queue their parameters again.

    Safe while workers on other machines share the study: a trial is taken only when
    its heartbeat is stale, when its worker was on this machine and is gone, or when no
    worker ever claimed it (a process killed before its first heartbeat). The failed
    trial stays in the study; its retry carries `failed_trial` = its number.
    """
    import optuna
    from optuna.trial import TrialState

    before = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)  # heartbeat-stale, on any machine
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _dead(trial.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            if study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                _retry_stale(study, study._storage.get_trial(trial._trial_id))
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished (or another process failed it) meanwhile
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,))) - before


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


def study_names(url: str) -> list[str]:
    """Names of the studies stored at `url` (none for a sqlite file not yet created)."""
    import optuna

    if not study_exists(url):
        return []
    return [s.study_name for s in optuna.get_all_study_summaries(storage(url))]


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
