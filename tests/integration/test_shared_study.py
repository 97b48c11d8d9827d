"""`compress tune` on a real PostgreSQL server: workers and machines sharing one study.

Trial numbers come from the database; a worker killed mid-trial has its trial failed
and run again (optuna's heartbeat), and a second command joining the study with
--resume leaves the first one's running trials alone.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from compress.recipe import validate_recipe
from compress.testing import tiny_recipe_dict, write_recipe
from compress.tuning import tune

# subprocess: tune workers are real processes on one PostgreSQL study, killed mid-trial
pytestmark = [
    pytest.mark.integration,
    pytest.mark.subprocess,
    pytest.mark.xdist_group("servers"),  # one worker starts PostgreSQL, once
]

LR = "stages[0].optimizer.lr"


def _recipe(trials: int, epochs: int = 1, samples: int = 300) -> dict:
    recipe = tiny_recipe_dict(
        data={"max_train_samples": samples},
        stages=[{"type": "train", "epochs": epochs, "batch_size": 32,
                 "optimizer": {"name": "adam", "lr": 0.01}}, {"type": "export"}],
    )  # fmt: skip
    recipe["tune"] = {
        "stage": "train", "sampler": "random", "trials": trials,
        "space": {LR: {"type": "log-float", "low": 1e-3, "high": 3e-2}},
    }  # fmt: skip
    return recipe


@functools.cache
def _storage(url: str):
    # one engine for the test process: polling with a new storage every 0.1 s opened a
    # connection pool each time, and PostgreSQL ran out of clients ("too many clients")
    return optuna.storages.RDBStorage(url)


def _study(url: str):
    return optuna.load_study(study_name="tiny", storage=_storage(url))


def _assert_consistent(trials, total: int) -> None:
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)), numbers
    assert sorted(numbers) == list(range(len(numbers)))  # no gaps either
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == total
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def _start_tune(path, out, url, *extra, heartbeat: int = 1) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1",
           "COMPRESS_TUNE_HEARTBEAT_S": str(heartbeat)}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "compress", "tune", str(path), "--out", str(out),
         "--storage", url, *extra],
        cwd=out.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_on_postgresql_finish_the_trial_count_without_duplicates(
    tmp_path, postgres_url
):
    recipe = validate_recipe(_recipe(trials=4), "t.toml")

    outcome = tune(recipe, "t.toml", tmp_path / "tune", workers=2, storage=postgres_url)

    trials = _study(postgres_url).get_trials()
    _assert_consistent(trials, total=4)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len({t.params[LR] for t in complete}) == 4  # no two workers proposed one point
    assert len({t.user_attrs["compress_worker"] for t in complete}) >= 2  # both took part
    rows = json.loads((tmp_path / "tune" / "trials.json").read_text())
    assert sorted(r["number"] for r in rows) == sorted(t.number for t in trials)
    assert outcome.best_recipe_path is not None and outcome.best_recipe_path.is_file()


def test_a_worker_killed_mid_trial_has_its_trial_retried_and_the_study_stays_consistent(
    tmp_path, postgres_url
):
    path = write_recipe(tmp_path / "t.toml", _recipe(trials=4, epochs=4, samples=800))
    out = tmp_path / "tune"
    out.mkdir()
    process = _start_tune(path, out, postgres_url, "--workers", "2")

    def a_worker_mid_trial():
        if process.poll() is not None:
            raise AssertionError(f"tune ended early: {process.communicate()}")
        try:
            running = _study(postgres_url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:  # the study is not created yet
            return None
        for trial in running:
            owner = trial.user_attrs.get("compress_worker", "")
            pid = int(owner.rpartition(":")[2] or 0)
            if pid and pid != process.pid and trial.params:  # a spawned worker, mid-trial
                return trial.number, pid, dict(trial.params)
        return None

    killed_number, pid, params = _wait_for(a_worker_mid_trial, 240, "a worker's running trial")
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)

    assert process.returncode == 0, stdout + stderr
    assert "died" in stderr and "retried" in stderr, stderr
    trials = _study(postgres_url).get_trials()
    _assert_consistent(trials, total=4)
    killed = next(t for t in trials if t.number == killed_number)
    assert killed.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].params == params  # the same point, run again: not lost


def test_a_second_command_joins_the_study_and_leaves_running_trials_alone(tmp_path, postgres_url):
    path = write_recipe(tmp_path / "t.toml", _recipe(trials=5, epochs=3, samples=600))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _start_tune(path, tmp_path / "a" / "tune", postgres_url)

    def first_is_running_a_trial():
        try:
            return _study(postgres_url).get_trials(states=(TrialState.RUNNING,))
        except KeyError:
            return None

    _wait_for(first_is_running_a_trial, 240, "the first command's first trial")
    second = _start_tune(path, tmp_path / "b" / "tune", postgres_url, "--resume")
    results = [p.communicate(timeout=300) for p in (first, second)]

    assert first.returncode == 0 and second.returncode == 0, results
    trials = _study(postgres_url).get_trials()
    _assert_consistent(trials, total=5)
    assert not [t for t in trials if t.state == TrialState.FAIL]  # nobody's trial was taken
    for side in ("a", "b"):  # each command reports the whole shared study
        rows = json.loads((tmp_path / side / "tune" / "trials.json").read_text())
        assert len([r for r in rows if r["state"] == "COMPLETE"]) == 5, side


def test_resume_takes_only_trials_whose_worker_is_dead(tmp_path, postgres_url, monkeypatch):
    from compress.tuning.study import open_study, requeue_interrupted, storage

    monkeypatch.setenv("COMPRESS_TUNE_HEARTBEAT_S", "1")
    recipe = validate_recipe(_recipe(trials=1), "t.toml")
    study = open_study(recipe, postgres_url, create=True)
    dist = {LR: optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)}
    alive = study.ask(dist)  # another machine's worker, beating
    alive.set_user_attr("compress_worker", "another-machine:4242")
    storage(postgres_url).record_heartbeat(alive._trial_id)
    gone = study.ask(dist)  # a worker of this machine whose process is gone
    gone.set_user_attr("compress_worker", f"{socket.gethostname()}:{2**22 + 7}")
    mine = study.ask(dist)  # this very process: alive
    mine.set_user_attr("compress_worker", f"{socket.gethostname()}:{os.getpid()}")

    queued = requeue_interrupted(study)

    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING
    assert states[mine.number] == TrialState.RUNNING
    assert states[gone.number] == TrialState.FAIL
    assert queued == 1
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == gone.number
    assert retry.params == study.trials[gone.number].params
    assert "compress_worker" not in retry.user_attrs  # the dead worker's id is not carried
    time.sleep(4 * 1 + 1.5)  # the other machine stops beating: now its heartbeat is stale
    requeue_interrupted(study)
    assert study.trials[alive.number].state == TrialState.FAIL
