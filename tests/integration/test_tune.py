"""`compress tune`: every sampler, the written-back recipe, resume, and shared-storage workers."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from compress.errors import RecipeError, UsageError
from compress.recipe import load_recipe, validate_recipe
from compress.testing import run_cli, tiny_recipe_dict, write_recipe
from compress.tuning import recipe_values, tune

pytestmark = pytest.mark.integration

LR = "stages[0].optimizer.lr"


def _tune_recipe(sampler: str, trials: int, **tune_overrides) -> dict:
    space = {LR: {"type": "log-float", "low": 1e-3, "high": 3e-2}}
    if sampler == "grid":
        space = {LR: {"type": "categorical", "choices": [0.002, 0.005, 0.01, 0.02]}}
    recipe = tiny_recipe_dict(
        data={"max_train_samples": 300},
        stages=[
            {
                "type": "train",
                "epochs": 1,
                "batch_size": 32,
                "optimizer": {"name": "adam", "lr": 0.01},
            },
            {"type": "export"},
        ],
    )
    recipe["tune"] = {"stage": "train", "sampler": sampler, "trials": trials, "space": space}
    recipe["tune"].update(tune_overrides)
    return recipe


def _study(out_dir, name="tiny"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out_dir / 'study.db'}")


@pytest.mark.parametrize("sampler", ["grid", "random", "bayesian"])
def test_each_sampler_completes_its_trials_and_writes_a_runnable_recipe(tmp_path, sampler):
    recipe = validate_recipe(_tune_recipe(sampler, trials=3), "t.toml")

    outcome = tune(recipe, "t.toml", tmp_path / "tune")

    complete = [row for row in outcome.trials if row["state"] == "COMPLETE"]
    assert len(complete) == 3
    assert all(0.0 < row["val_accuracy"] <= 1.0 for row in complete)
    best = max(complete, key=lambda row: row["val_accuracy"])
    assert outcome.best[0]["val_accuracy"] == best["val_accuracy"]
    written = load_recipe(outcome.best_recipe_path)
    assert written.tune is None
    assert written.stages[0].optimizer.lr == pytest.approx(outcome.best[0]["params"][LR])
    assert json.loads((tmp_path / "tune" / "trials.json").read_text()) == outcome.trials


def test_random_and_bayesian_start_from_the_recipes_own_values(tmp_path):
    recipe = validate_recipe(_tune_recipe("bayesian", trials=2), "t.toml")

    outcome = tune(recipe, "t.toml", tmp_path / "tune")

    assert recipe_values(recipe) == {LR: 0.01}
    assert outcome.baseline is not None
    assert outcome.baseline["number"] == 0
    assert outcome.baseline["params"] == {LR: 0.01}


def test_the_winning_recipe_runs(tmp_path):
    recipe = validate_recipe(_tune_recipe("grid", trials=2), "t.toml")
    outcome = tune(recipe, "t.toml", tmp_path / "tune")

    run = run_cli(
        "run",
        outcome.best_recipe_path,
        "--out",
        tmp_path / "run",
        cwd=tmp_path,
        out=tmp_path / "run",
    )

    assert run.returncode == 0, run.output
    assert run.report["status"] == "passed"


def test_resume_continues_without_repeating_finished_trials(tmp_path):
    out = tmp_path / "tune"
    tune(validate_recipe(_tune_recipe("grid", trials=2), "t.toml"), "t.toml", out)
    first = {t.number: t.params for t in _study(out).get_trials(states=(TrialState.COMPLETE,))}

    more = validate_recipe(_tune_recipe("grid", trials=4), "t.toml")
    outcome = tune(more, "t.toml", out, resume=True)

    trials = _study(out).get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    assert {t.number: t.params for t in trials if t.number in first} == first
    assert len({t.params[LR] for t in trials}) == 4  # every grid point exactly once
    assert len([r for r in outcome.trials if r["state"] == "COMPLETE"]) == 4


def test_resume_reruns_a_trial_a_crashed_process_left_running(tmp_path):
    out = tmp_path / "tune"
    recipe = validate_recipe(_tune_recipe("random", trials=2), "t.toml")
    tune(
        recipe.model_copy(update={"tune": recipe.tune.model_copy(update={"trials": 1})}),
        "t.toml",
        out,
    )
    study = _study(out)
    crashed = study.ask({LR: optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)})
    crashed_params = dict(crashed.params)  # left RUNNING, as by a killed process

    tune(recipe, "t.toml", out, resume=True)

    trials = _study(out).get_trials()
    states = {t.number: t.state for t in trials}
    assert states[crashed.number] == TrialState.FAIL
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2
    assert any(t.params == crashed_params for t in complete)  # re-run, not dropped


def test_an_existing_study_needs_resume(tmp_path):
    recipe = validate_recipe(_tune_recipe("random", trials=1), "t.toml")
    tune(recipe, "t.toml", tmp_path / "tune")

    with pytest.raises(UsageError, match="--resume"):
        tune(recipe, "t.toml", tmp_path / "tune")


def test_two_workers_share_one_grid_without_duplicates(tmp_path):
    recipe = validate_recipe(_tune_recipe("grid", trials=4), "t.toml")

    outcome = tune(recipe, "t.toml", tmp_path / "tune", workers=2)

    trials = _study(tmp_path / "tune").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert sorted(t.params[LR] for t in complete) == [0.002, 0.005, 0.01, 0.02]
    assert len({t.system_attrs["grid_id"] for t in complete}) == 4
    assert len([r for r in outcome.trials if r["state"] == "COMPLETE"]) == 4


def test_tune_without_a_tune_table_is_a_recipe_error(tmp_path):
    recipe = validate_recipe(tiny_recipe_dict(), "t.toml")

    with pytest.raises(RecipeError, match=r"no \[tune\] table"):
        tune(recipe, "t.toml", tmp_path / "tune")


def test_grid_over_a_float_range_needs_values(tmp_path):
    raw = _tune_recipe("grid", trials=2)
    raw["tune"]["space"] = {LR: {"type": "float", "low": 0.001, "high": 0.1}}

    with pytest.raises(RecipeError, match=r"tune.*grid"):
        validate_recipe(raw, "t.toml")


def test_cli_tune_prints_the_table_and_the_winner(tmp_path):
    path = write_recipe(tmp_path / "t.toml", _tune_recipe("random", trials=2))

    run = run_cli("tune", path, "--out", tmp_path / "tune", cwd=tmp_path)

    assert run.returncode == 0, run.output
    assert "COMPLETE" in run.stdout
    assert "winning recipe:" in run.stdout
    assert (tmp_path / "tune" / "best.toml").is_file()


def test_trials_with_the_same_values_score_the_same(tmp_path):
    raw = _tune_recipe("random", trials=2)
    raw["tune"]["space"] = {LR: {"type": "categorical", "choices": [0.01]}}
    recipe = validate_recipe(raw, "t.toml")

    outcome = tune(recipe, "t.toml", tmp_path / "tune")

    scores = [row["val_accuracy"] for row in outcome.trials if row["state"] == "COMPLETE"]
    assert len(scores) == 2 and scores[0] == scores[1]  # every trial starts from one seed


def test_two_random_workers_do_not_propose_the_same_points(tmp_path):
    recipe = validate_recipe(_tune_recipe("random", trials=4), "t.toml")

    tune(recipe, "t.toml", tmp_path / "tune", workers=2)

    complete = _study(tmp_path / "tune").get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    assert len({t.params[LR] for t in complete}) == 4
