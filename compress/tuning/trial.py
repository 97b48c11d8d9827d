"""One trial of `compress tune`: the recipe with sampled values, run and scored."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from compress.recipe.loader import Recipe, apply_override, validate_recipe
from compress.recipe.tune import CategoricalParam, FloatParam, IntParam


def tuned_stage_name(recipe: Recipe) -> str:
    """The folder name of the stage a trial ends with (`tune.stage`: index or name)."""
    stage = recipe.tune.stage
    return recipe.stage_names()[stage] if isinstance(stage, int) else stage


def suggest(trial, path: str, param) -> Any:
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


class TrialRunner:
    """Runs one trial: the run's own setup and stage loop (`runner.run_plan`, shared
    with `compress run`) up to the tuned stage, scored on validation data.

    A trial's stages are not measured on the test split (that is the run's report):
    each one's output is accepted as is, and only the tuned stage is scored.
    """

    def __init__(self, recipe: Recipe, label: str):
        from compress.pipeline.setup import load_run_data

        self.recipe = recipe
        self.label = label
        self.data = load_run_data(recipe)  # once per worker, shared by trials

    def score(self, params: dict[str, Any]) -> tuple[float, float | None]:
        from compress.pipeline.setup import initial_model, run_stage, stage_plan
        from compress.runner import run_plan
        from compress.stages.base import RunContext

        recipe = apply_params(self.recipe, params, self.label)
        model, spec = initial_model(recipe, self.data)  # seeded: the same in every trial
        with tempfile.TemporaryDirectory(prefix="compress-trial-") as scratch:
            ctx = RunContext(recipe, self.data, model, spec, Path(scratch), recipe.seed)
            last = []

            def step(config, name: str, index: int) -> bool:
                last[:] = [run_stage(ctx, config, name, Path(scratch) / name)]
                ctx.accept(last[0])
                return True

            run_plan(stage_plan(recipe), step, until=tuned_stage_name(recipe))
            return self._measure(recipe, last[0], Path(scratch))

    def _measure(self, recipe: Recipe, result, scratch: Path) -> tuple[float, float | None]:
        from compress.pipeline.measure import deployable_onnx
        from compress.runtime.evaluate import onnx_accuracy
        from compress.runtime.latency import measure_with_runtime
        from compress.training import evaluate

        signature = result.spec.signature
        if result.onnx_path is not None:
            accuracy = onnx_accuracy(result.onnx_path, self.data.val, signature)
        else:
            accuracy = evaluate(result.model, self.data.val)["accuracy"]
        if recipe.tune.objective == "val_accuracy":
            return accuracy, None
        onnx_path = deployable_onnx(result, scratch, recipe.seed, debug=False)
        (stats,) = measure_with_runtime([onnx_path], signature, recipe.runtime)
        return accuracy, stats.p50_ms
