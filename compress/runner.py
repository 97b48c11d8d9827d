"""The runner: stages in recipe order, then the same measurement and budget checks after each.

Its one job is the order of things; each step lives in its own module: the run
setup and stage plan (`pipeline.setup`), measurement (`pipeline.measure`), the
stage cache (`pipeline.cache`) and the report (`report.assemble`). Budgets are
checked here and nowhere else. The final model is saved whatever the budgets say.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.callbacks import Callback
from compress.errors import CompressError, describe_failure
from compress.models import save_model
from compress.pipeline.cache import StageCache, chained_input_hash, initial_input_hash
from compress.pipeline.measure import count_warnings
from compress.pipeline.setup import (
    initial_model,
    load_run_data,
    prepare_run_dir,
    run_stage,
    stage_plan,
)
from compress.pipeline.tasks import task_for
from compress.recipe.loader import Recipe
from compress.report.assemble import RunOutcome, RunReport, check
from compress.report.records import Artifacts, CacheInfo, Metrics, StageRecord
from compress.stages import RunContext, StageResult
from compress.training.device import resolve_placement
from compress.training.strategy import SingleProcess, Strategy

# One step of the stage loop: (config, folder name, 1-based index) -> go on?
StageStep = Callable[[Any, str, int], bool]


def run_plan(plan: list[tuple[Any, str]], step: StageStep, until: str | None = None) -> None:
    """The stage loop of `compress run` and of a `compress tune` trial: every stage of
    the plan (`pipeline.setup.stage_plan`) in order, each one's output the next one's
    input (`step` accepts it on the run context), until a step says stop or the stage
    named `until` has run.

    Example:
        >>> run_plan(stage_plan(recipe), step, until="prune")  # doctest: +SKIP
    """
    for index, (config, name) in enumerate(plan, 1):
        if not step(config, name, index) or name == until:
            return


class Runner:
    """Runs a validated recipe into a run directory.

    Args:
        recipe: the validated recipe.
        out_dir: the run directory (created; existing stage folders are replaced).
        recipe_path: where the recipe came from, for the report.
        callbacks: observers (console output, progress).
        debug: keep exporter output and tracebacks.
        use_cache: reuse verified stage results of an earlier run into `out_dir`.
        strategy: where training runs (one process unless the CLI started ranks).

    Example:
        >>> recipe = load_recipe("recipes/digits.toml")  # doctest: +SKIP
        >>> outcome = Runner(recipe, Path("runs/digits")).run()  # doctest: +SKIP
        >>> outcome.exit_code
        0
    """

    def __init__(self, recipe: Recipe, out_dir: Path, recipe_path: str | None = None,
                 callbacks: list[Callback] | None = None, debug: bool = False,
                 use_cache: bool = True, strategy: Strategy | None = None):  # fmt: skip
        from compress.runtime.machine import isa_warning, run_environment

        self.recipe, self.out_dir, self.debug = recipe, Path(out_dir), debug
        self.callbacks, self.strategy = callbacks or [], strategy or SingleProcess()
        self.plan = stage_plan(recipe)
        self.cache = StageCache(self.out_dir, use_cache)
        self.input_hash = initial_input_hash(recipe)
        self.report = RunReport(recipe, self.out_dir, recipe_path, len(self.plan),
                                run_environment(), self.strategy.identity())  # fmt: skip
        self.report.warnings += [w for w in (isa_warning(),) if w]
        # the runner's own bookkeeping (no stage reads it): the accepted stages' records
        self.history: list[StageRecord] = []
        self.last_good: StageRecord | None = None  # what final/ ships

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out_dir))

    def run(self) -> RunOutcome:
        """Run every stage, measure and check budgets after each, write the report."""
        prepare_run_dir(self.out_dir, self.recipe)
        self._emit("on_run_start", self.recipe.name, str(self.out_dir), self.recipe.stage_names())
        for warning in self.report.warnings:
            self._emit("on_stage_warning", None, warning)
        self.report.write()  # status "running": even a crash in stage 1 leaves a report
        ctx = self._setup()
        if ctx is None:
            return self._end()
        run_plan(self.plan, lambda config, name, index: self._step(ctx, config, name, index))
        if self.last_good is not None:
            self._finalize(self.last_good, ctx.spec.signature)
        return self._end()

    def _setup(self) -> RunContext | None:
        """Providers, device, data and the initial model; None after a setup error."""
        from compress.runtime.sessions import check_providers

        try:
            runtime = self.recipe.runtime  # checked before any training time is spent
            unavailable = check_providers(runtime.providers, runtime.optional_providers)
            self.strategy.placement = resolve_placement(self.recipe.training)  # cuda: exit 2
            self.report.training = self.strategy.placement.identity()
            data = self.report.data = load_run_data(self.recipe)
            for warning in data.warnings:
                self._emit("on_data_warning", warning)
            model, spec = initial_model(self.recipe, data)
        except CompressError as exc:
            self.report.fail(None, exc, str(exc), exc.exit_code)
            return None
        try:  # how this run measures: by its model's task (classification, causal-lm)
            self.task = task_for(self.recipe, data)(self.recipe, unavailable)
        except CompressError as exc:
            self.report.fail(None, exc, str(exc), exc.exit_code)
            return None
        # history: the same list (stages read it, the runner appends)
        return RunContext(self.recipe, data, model, spec, self.out_dir, self.recipe.seed,
                          strategy=self.strategy, debug=self.debug,
                          history=self.history)  # fmt: skip

    def _step(self, ctx: RunContext, config, name: str, index: int) -> bool:
        """One stage: run (or reuse) and record it, tell the callbacks; False on error."""
        try:
            record = self._run_stage(ctx, config, name, index)
        except Exception as exc:  # noqa: BLE001 - a bug after the stage ran: report it too
            head = {"name": name, "type": config.type, "dir": name}
            record = self._error_record(head, exc, time.monotonic())
        self.report.records.append(record)
        self._emit("on_stage_end", record)
        for result in record.budgets:
            if not result.passed:
                self._emit("on_budget_fail", name, result)
        for flag in record.flags:
            self._emit("on_flag", name, flag)
        for warning in record.warnings:
            self._emit("on_stage_warning", name, warning)
        if record.status == "error":
            return False
        self.last_good = record
        self.report.write()
        return True

    def _end(self) -> RunOutcome:
        report = self.report.write()
        self._emit("on_run_end", report)
        return RunOutcome(self.report.exit_code(), report.status, report, self.out_dir)

    def _run_stage(self, ctx: RunContext, config, name: str, index: int) -> StageRecord:
        stage_dir = self.out_dir / name
        ctx.on_epoch_end = lambda epoch, metrics: self._emit("on_epoch_end", name, epoch, metrics)
        self._emit("on_stage_start", index, len(self.plan), name, config.type)
        head: dict[str, Any] = {"name": name, "type": config.type, "dir": self._rel(stage_dir)}
        started = time.monotonic()
        key = self.cache.key(config, self.input_hash, self.recipe, ctx.data, self.strategy)
        cached = self.cache.lookup(stage_dir, key)
        if isinstance(cached, tuple):
            result, old = cached
            head.update(cached=True, cache=CacheInfo(key=key, hit=True))
            onnx_path = self.out_dir / old.artifacts.onnx
            return self._complete(ctx, config, head, result, onnx_path, old.metrics, started)
        if isinstance(cached, str):  # never reuse a damaged artifact: say so, rebuild it
            head["cache_rejected"] = cached
            self._emit("on_cache_rejected", name, cached)
        if stage_dir.exists():  # a previous run's folder: never mix its files with ours
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        ctx.resume_dir, ctx.fits_started = self.cache.resume_dir(name, key), 0
        try:
            result = run_stage(ctx, config, name, stage_dir)
            if result.model is not None:  # an ONNX-input recipe's stages have only files
                save_model(result.model, result.spec, stage_dir)
            onnx_path = self.task.deployable(result, stage_dir, self.recipe.seed, self.debug)
            metrics = self.task.evaluate(
                result, onnx_path, stage_dir, ctx, self.report.baseline_metrics
            )
        except Exception as exc:  # noqa: BLE001 - every failure is recorded in the report
            return self._error_record(head, exc, started)
        head.update(cached=False, cache=CacheInfo(key=key, hit=False))
        record = self._complete(ctx, config, head, result, onnx_path, metrics, started)
        StageCache.spend(ctx.resume_dir)
        ctx.resume_dir = None
        return record

    def _error_record(self, head: dict[str, Any], exc: Exception, started: float) -> StageRecord:
        name = head["name"]
        detail, code = describe_failure(exc)  # the traceback stays in the report (--debug)
        message = detail if getattr(exc, "stage", None) else f"stage '{name}': {detail}"
        self.report.fail(name, exc, message, code, traceback.format_exc())
        return StageRecord(**head, status="error", error=message, warnings=[],
                           duration_s=time.monotonic() - started)  # fmt: skip

    def _complete(self, ctx: RunContext, config, head: dict[str, Any], result: StageResult,
                  onnx_path: Path, metrics: Metrics, started: float) -> StageRecord:  # fmt: skip
        """Budgets, the baseline and metrics.json for a stage run or taken from cache."""
        stage_dir = self.out_dir / head["dir"]
        result.spec = result.spec or ctx.spec  # a cached ONNX-only stage keeps the run's
        checks = check(config.budgets, metrics, self.report.baseline_metrics)
        previous = self.history[-1] if self.history else None
        flags = self.task.flags(metrics, head["name"], previous,
                                config.budgets.speedup_vs_input_min)  # fmt: skip
        if ctx.accept(result, onnx_path):  # the first result: the run's baseline
            self.report.baseline_metrics = metrics
        record = StageRecord(
            **head,
            status="passed" if all(c.passed for c in checks) else "failed",
            duration_s=time.monotonic() - started,
            metrics=metrics,
            budgets=checks,
            flags=flags + result.details.get("flags", []),
            details=result.details,
            artifacts=self._artifacts(stage_dir, onnx_path, result),
            warnings=[*result.warnings, *count_warnings(metrics)],
        )
        record.cache.artifacts = self.cache.artifact_hashes(stage_dir)
        self.cache.seal(stage_dir, record)  # last: it is what makes the folder reusable
        self.input_hash = chained_input_hash(record.cache.artifacts)
        self.history.append(record)
        return record

    def _artifacts(self, stage_dir: Path, onnx_path: Path, result: StageResult) -> Artifacts:
        torch_files = result.model is not None  # None: an ONNX-input recipe's stage
        return Artifacts(
            onnx=self._rel(onnx_path),
            weights=self._rel(stage_dir / "model.safetensors") if torch_files else None,
            structure=self._rel(stage_dir / "model.json") if torch_files else None,
            onnx_only=result.onnx_path is not None,
        )

    def _finalize(self, last: StageRecord, signature) -> None:
        """Copy the last good stage's model to final/ and check the final budgets."""
        final = self.task.write_final(self.out_dir, last, self.report, signature)
        for result in final.budgets:
            if not result.passed:
                self._emit("on_budget_fail", "final", result)
