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
from pathlib import Path
from typing import Any

from compress.budgets import check_budgets
from compress.callbacks import Callback
from compress.errors import CompressError, describe_failure
from compress.models import save_model
from compress.pipeline.cache import StageCache, chained_input_hash, initial_input_hash
from compress.pipeline.final import write_final
from compress.pipeline.measure import (
    Measurement,
    count_warnings,
    deployable_onnx,
    slowdown_flag,
)
from compress.pipeline.setup import (
    initial_model,
    load_run_data,
    prepare_run_dir,
    run_stage,
    stage_plan,
)
from compress.recipe.loader import Recipe
from compress.report.assemble import RunOutcome, RunReport
from compress.stages import RunContext
from compress.training.device import resolve_placement
from compress.training.strategy import SingleProcess, Strategy


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
        from compress.runtime.machine import run_environment

        self.recipe, self.out_dir, self.debug = recipe, Path(out_dir), debug
        self.callbacks, self.strategy = callbacks or [], strategy or SingleProcess()
        self.plan = stage_plan(recipe)
        self.cache = StageCache(self.out_dir, use_cache)
        self.input_hash = initial_input_hash(recipe)
        self.report = RunReport(recipe, self.out_dir, recipe_path, len(self.plan),
                                run_environment(), self.strategy.identity())  # fmt: skip

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out_dir))

    def run(self) -> RunOutcome:
        """Run every stage, measure and check budgets after each, write the report."""
        from compress.runtime.sessions import check_providers

        prepare_run_dir(self.out_dir, self.recipe)
        self._emit("on_run_start", self.recipe.name, str(self.out_dir), self.recipe.stage_names())
        self.report.write()  # status "running": even a crash in stage 1 leaves a report
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
            return self._end()
        self.measurement = Measurement(self.recipe, unavailable)
        ctx = RunContext(self.recipe, data, model, spec, self.out_dir, self.recipe.seed,
                         strategy=self.strategy, debug=self.debug)  # fmt: skip
        last_good = None
        for index, (config, name) in enumerate(self.plan, 1):
            try:
                record = self._run_stage(ctx, config, name, index)
            except Exception as exc:  # noqa: BLE001 - a bug after the stage ran: report it too
                record = {"name": name, "type": config.type, "dir": name}
                self._record_error(record, name, exc, time.monotonic())
            self.report.records.append(record)
            self._emit("on_stage_end", record)
            for check in record.get("budgets", []):
                if not check["passed"]:
                    self._emit("on_budget_fail", name, check)
            for flag in record.get("flags", []):
                self._emit("on_flag", name, flag)
            for message in record.get("warnings", []):
                self._emit("on_stage_warning", name, message)
            if record["status"] == "error":
                break
            last_good = record
            self.report.write()
        if last_good is not None:
            self._finalize(last_good, ctx.spec.signature)
        return self._end()

    def _end(self) -> RunOutcome:
        report = self.report.write()
        self._emit("on_run_end", report)
        return RunOutcome(self.report.exit_code(), report["status"], report, self.out_dir)

    def _run_stage(self, ctx: RunContext, config, name: str, index: int) -> dict:
        stage_dir = self.out_dir / name
        ctx.on_epoch_end = lambda epoch, metrics: self._emit("on_epoch_end", name, epoch, metrics)
        self._emit("on_stage_start", index, len(self.plan), name, config.type)
        record: dict[str, Any] = {"name": name, "type": config.type, "dir": self._rel(stage_dir)}
        started = time.monotonic()
        key = self.cache.key(config, self.input_hash, self.recipe, ctx.data, self.strategy)
        cached = self.cache.lookup(stage_dir, key)
        if isinstance(cached, tuple):
            result, old = cached
            record.update(cached=True, cache={"key": key, "hit": True})
            onnx_path = self.out_dir / old["artifacts"]["onnx"]
            return self._complete(ctx, config, record, result, onnx_path, old["metrics"], started)
        if isinstance(cached, str):  # never reuse a damaged artifact: say so, rebuild it
            record["cache_rejected"] = cached
            self._emit("on_cache_rejected", name, cached)
        if stage_dir.exists():  # a previous run's folder: never mix its files with ours
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        ctx.resume_dir, ctx.fits_started = self.cache.resume_dir(name, key), 0
        try:
            result = run_stage(ctx, config, name, stage_dir)
            if result.model is not None:  # an ONNX-input recipe's stages have only files
                save_model(result.model, result.spec, stage_dir)
            onnx_path = deployable_onnx(result, stage_dir, self.recipe.seed, self.debug)
            metrics = self.measurement.evaluate(result, onnx_path, stage_dir, ctx)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded in the report
            self._record_error(record, name, exc, started)
            return record
        record.update(cached=False, cache={"key": key, "hit": False})
        record = self._complete(ctx, config, record, result, onnx_path, metrics, started)
        StageCache.spend(ctx.resume_dir)
        ctx.resume_dir = None
        return record

    def _record_error(self, record: dict, name: str, exc: Exception, started: float) -> None:
        detail, code = describe_failure(exc)  # the traceback stays in the report (--debug)
        message = detail if getattr(exc, "stage", None) else f"stage '{name}': {detail}"
        record.update(status="error", error=message, duration_s=time.monotonic() - started)
        self.report.fail(name, exc, message, code, traceback.format_exc())

    def _complete(self, ctx, config, record, result, onnx_path, metrics, started) -> dict:
        """Budgets, the baseline and metrics.json for a stage run or taken from cache."""
        stage_dir = self.out_dir / record["dir"]
        result.spec = result.spec or ctx.spec  # a cached ONNX-only stage keeps the run's
        checks = [c.to_dict() for c in check_budgets(config.budgets, metrics, ctx.baseline_metrics)]
        previous = ctx.history[-1]["name"] if ctx.history else None
        accepted = config.budgets.speedup_vs_input_min
        flag = slowdown_flag(metrics, record["name"], previous, accepted) if previous else None
        ctx.accept(result, metrics, onnx_path)
        self.report.baseline_metrics = ctx.baseline_metrics
        record.update(
            status="passed" if all(c["passed"] for c in checks) else "failed",
            duration_s=time.monotonic() - started,
            metrics=metrics,
            budgets=checks,
            flags=([flag] if flag else []) + result.details.get("flags", []),
            details=result.details,
            artifacts=self._artifacts(stage_dir, onnx_path, result),
            warnings=[*result.warnings, *count_warnings(metrics)],
        )
        record["cache"]["artifacts"] = self.cache.artifact_hashes(stage_dir)
        self.cache.seal(stage_dir, record)  # last: it is what makes the folder reusable
        self.input_hash = chained_input_hash(record["cache"]["artifacts"])
        ctx.history.append(record)
        return record

    def _artifacts(self, stage_dir: Path, onnx_path: Path, result) -> dict[str, Any]:
        torch_files = result.model is not None  # None: an ONNX-input recipe's stage
        return {
            "onnx": self._rel(onnx_path),
            "weights": self._rel(stage_dir / "model.safetensors") if torch_files else None,
            "structure": self._rel(stage_dir / "model.json") if torch_files else None,
            "onnx_only": result.onnx_path is not None,
        }

    def _finalize(self, last: dict[str, Any], signature) -> None:
        """Copy the last good stage's model to final/ and check the final budgets."""
        final = write_final(self.out_dir, last, self.report, signature)
        for check in final["budgets"]:
            if not check["passed"]:
                self._emit("on_budget_fail", "final", check)
