"""The runner: stages in recipe order, then the same evaluation and budget checks after each.

The runner alone exports for measurement, evaluates on ONNX Runtime, checks
budgets and writes the report; stages only transform models. The report is
rewritten (atomically) after every stage, so a crashed run still tells how far
it got, and the final model is saved whatever the budgets say.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import time
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import compress
from compress.artifacts import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from compress.budgets import check_budgets
from compress.callbacks import Callback
from compress.data import load_data
from compress.errors import CompressError
from compress.models import ModelSpec, build_model, load_weights_, save_model
from compress.models.stats import count_macs, count_params
from compress.recipe.loader import Recipe
from compress.recipe.schema import Budgets
from compress.report.markdown import render_markdown
from compress.stages import STAGES
from compress.stages.base import RunContext, Stage, StageResult, seed_everything

REPORT_SCHEMA_VERSION = 1


@dataclass
class RunOutcome:
    """How a run ended: the exit code the CLI returns and the report it wrote."""

    exit_code: int
    status: str
    report: dict[str, Any]
    out_dir: Path


def _environment() -> dict[str, Any]:
    import onnx
    import onnxruntime

    from compress.runtime.machine import machine_info

    machine = machine_info()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": machine["cpu"],
        "isa": machine["isa"],
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class InputModel(Stage):
    """Pseudo-stage for a recipe that starts from `model.weights`: passes the model
    through so the runner evaluates it like any stage and it becomes the teacher
    (the baseline of accuracy drops, speed-ups and size ratios)."""

    type = "input"

    def __init__(self, weights: str):
        super().__init__(None, "input")
        self.budgets = Budgets()
        self.weights = weights

    def _run(self, ctx: RunContext) -> StageResult:
        return StageResult(ctx.model, ctx.spec, details={"weights": self.weights})


def initial_model(recipe: Recipe, data) -> tuple[torch.nn.Module, ModelSpec]:
    """The recipe's `[model]`, built for the data's shape, with its `weights` if given."""
    spec = ModelSpec(recipe.model, data.input_shape, data.num_classes)
    model = build_model(recipe.model, data.input_shape, data.num_classes)
    if recipe.model.weights:
        load_weights_(model, recipe.model.weights)
    return model, spec


def write_human_reports(report: dict[str, Any], out_dir: Path) -> None:
    """report.md and the self-contained report.html, from report.json's content."""
    from compress.report.html import render_html

    atomic_write_text(out_dir / "report.md", render_markdown(report))
    atomic_write_text(out_dir / "report.html", render_html(report))


class Runner:
    """Runs a validated recipe into a run directory.

    Args:
        recipe: the validated recipe.
        out_dir: the run directory (created; existing stage folders are replaced).
        recipe_path: where the recipe came from, for the report.
        callbacks: observers (console output, progress).
        debug: keep exporter output and tracebacks.

    Example:
        >>> recipe = load_recipe("recipes/digits.toml")  # doctest: +SKIP
        >>> outcome = Runner(recipe, Path("runs/digits")).run()  # doctest: +SKIP
        >>> outcome.exit_code
        0
    """

    def __init__(
        self,
        recipe: Recipe,
        out_dir: Path,
        recipe_path: str | None = None,
        callbacks: list[Callback] | None = None,
        debug: bool = False,
        use_cache: bool = True,
    ):
        self.recipe = recipe
        self.out_dir = Path(out_dir)
        self.recipe_path = recipe_path
        self.callbacks = callbacks or []
        self.debug = debug
        self.stage_names = recipe.stage_names()
        self.records: list[dict[str, Any]] = []
        self.teacher_metrics: dict[str, Any] | None = None
        self.teacher_onnx: Path | None = None
        self.started = time.monotonic()
        self.started_at = _now()
        self.error: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.data = None
        self.error_exit_code = 0
        self.unavailable: dict[str, str] = {}
        self.use_cache = use_cache
        # what the first stage's input is: the model table (+ weights file), hashed
        start = recipe.model.model_dump_json()
        if recipe.model.weights:
            weights = Path(recipe.model.weights)
            weights = weights / "model.safetensors" if weights.is_dir() else weights
            start += sha256_file(weights) if weights.is_file() else "missing"
        self.input_hash = hashlib.sha256(start.encode()).hexdigest()
        self.environment = _environment()

    # ------------------------------------------------------------------ helpers

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(*args)

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out_dir))

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, model, spec: ModelSpec, onnx_path: Path, stage_dir: Path) -> dict[str, Any]:
        """The one evaluation every stage's output gets, on the deployed ONNX file."""
        from compress.runtime.evaluate import onnx_accuracy
        from compress.runtime.latency import measure_with_runtime, speedup

        runtime = self.recipe.runtime
        metrics: dict[str, Any] = {
            "accuracy": onnx_accuracy(onnx_path, self.data.test),
            "size_bytes": onnx_path.stat().st_size,
            # zeros (unstructured pruning) and shared values (codebooks) only pay off once
            # compressed; report it beside the raw size rather than implying a speed-up
            "size_compressed_bytes": len(zlib.compress(onnx_path.read_bytes(), 9)),
            "params": count_params(model),
            "macs": count_macs(model, spec.input_shape),
            "primary_provider": runtime.providers[0],
            "latency": {},
        }
        compare = self.teacher_onnx is not None and self.teacher_onnx != onnx_path
        if self.unavailable:
            metrics["providers_unavailable"] = self.unavailable
        for provider in [p for p in runtime.providers if p not in self.unavailable]:
            paths = [self.teacher_onnx, onnx_path] if compare else [onnx_path]
            stats = measure_with_runtime(
                paths, spec.input_shape, runtime, provider, seed=self.recipe.seed
            )
            metrics["latency"][provider] = stats[-1].to_dict()
            if compare and provider == runtime.providers[0]:
                metrics["speedup"] = speedup(stats[0], stats[-1])
                metrics["teacher_p50_ms_interleaved"] = stats[0].p50_ms
        gpus = [p for p in runtime.providers if p != "cpu" and p not in self.unavailable]
        if runtime.gpu_fp16 and gpus and not self._is_quantized(onnx_path):
            from compress.runtime.fp16 import convert_to_fp16

            half = convert_to_fp16(onnx_path, stage_dir / "model.fp16.onnx")
            for provider in gpus:
                (stats,) = measure_with_runtime(
                    [half], spec.input_shape, runtime, provider, seed=self.recipe.seed
                )
                metrics["latency"][f"{provider}-fp16"] = stats.to_dict()
        if self.teacher_metrics is None:
            metrics["speedup"] = {"median": 1.0, "min": 1.0, "max": 1.0, "rounds": 0}
        teacher = self.teacher_metrics or metrics
        metrics["size_ratio"] = teacher["size_bytes"] / metrics["size_bytes"]
        metrics["accuracy_change"] = metrics["accuracy"] - teacher["accuracy"]
        return metrics

    @staticmethod
    def _is_quantized(onnx_path: Path) -> bool:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)

    def _deployable_onnx(self, result, stage_dir: Path) -> Path:
        """The stage's own ONNX file, or an export of its torch model checked for parity."""
        from compress.runtime.onnx_export import check_parity, export_onnx

        if result.onnx_path is not None:
            return result.onnx_path
        path = stage_dir / "model.onnx"
        export_onnx(result.model, result.spec.input_shape, path, debug=self.debug)
        check_parity(
            result.model, path, result.spec.input_shape, [1, 7], 1e-4, 1e-3, self.recipe.seed
        )
        return path

    # ------------------------------------------------------------------ the run

    def run(self) -> RunOutcome:
        """Run every stage, evaluate and check budgets after each, write the report."""
        from compress.runtime.sessions import check_providers

        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A kill during an atomic write leaves its temporary sibling behind; it never
        # passes for an artifact (hidden, *.tmp), but it is litter: clear it.
        for stale in self.out_dir.rglob(".*.tmp"):
            stale.unlink(missing_ok=True)
        atomic_write_text(self.out_dir / "recipe.resolved.toml", self.recipe.to_toml())
        self._emit("on_run_start", self.recipe.name, str(self.out_dir), self.stage_names)
        self._write_report()  # status "running": even a crash in stage 1 leaves a report
        try:
            runtime = self.recipe.runtime  # checked before any training time is spent
            self.unavailable = check_providers(runtime.providers, runtime.optional_providers)
            if self.recipe.runtime.train_threads:
                torch.set_num_threads(self.recipe.runtime.train_threads)
            seed_everything(self.recipe.seed)
            self.data = load_data(self.recipe.data, self.recipe.seed)
            model, spec = initial_model(self.recipe, self.data)
        except CompressError as exc:
            self.error = {"stage": None, "type": type(exc).__name__, "message": str(exc)}
            self.error_exit_code = exc.exit_code
            report = self._write_report()
            self._emit("on_run_end", report)
            return RunOutcome(self.error_exit_code, "error", report, self.out_dir)
        ctx = RunContext(
            recipe=self.recipe,
            data=self.data,
            model=model,
            spec=spec,
            workdir=self.out_dir,
            seed=self.recipe.seed,
            debug=self.debug,
        )
        last_good: dict[str, Any] | None = None
        plan = list(zip(self.recipe.stages, self.stage_names))
        if self.recipe.model.weights:  # a trained starting model is the baseline: measure it
            plan.insert(0, (InputModel(self.recipe.model.weights), "input"))
        total = len(plan)
        for index, (config, name) in enumerate(plan, 1):
            record = self._run_stage(ctx, config, name, index, total)
            self.records.append(record)
            self._emit("on_stage_end", record)
            for check in record.get("budgets", []):
                if not check["passed"]:
                    self._emit("on_budget_fail", name, check)
            if record["status"] == "error":
                break
            last_good = record
            self._write_report()
        if last_good is not None:
            self._finalize(last_good)
        report = self._write_report()
        self._emit("on_run_end", report)
        return RunOutcome(self._exit_code(), report["status"], report, self.out_dir)

    # ------------------------------------------------------------------ stage cache

    def _cache_key(self, config) -> str:
        """Content hash of everything a stage's artifact and metrics depend on.

        Budgets and the stage name are left out: changing a budget re-checks the cached
        metrics instead of retraining.
        """
        if hasattr(config, "model_dump"):
            stage = config.model_dump(mode="json", exclude={"budgets", "name"})
        else:
            stage = {"type": config.type, "weights": config.weights}
        payload = {
            "stage": stage,
            "input": self.input_hash,
            "data": self.data.identity,
            "data_config": self.recipe.data.model_dump(mode="json"),
            "runtime": self.recipe.runtime.model_dump(mode="json"),
            "seed": self.recipe.seed,
            "torch_threads": torch.get_num_threads(),
            "distributed": self._distributed_identity(),
            "compress": compress.__version__,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    @staticmethod
    def _distributed_identity() -> dict[str, Any] | None:
        """Strategy and world size: both change what training produces."""
        from compress.distributed import session as distributed

        session = distributed.current()
        if session is None:
            return None
        return {
            "strategy": session.strategy,
            "world_size": session.world_size,
            "micro_batches": session.config.micro_batches,
        }

    def _cached(self, stage_dir: Path, key: str) -> tuple[StageResult, dict] | str | None:
        """A verified earlier result for this key; a reason string if one exists but is
        unusable (corrupt or truncated artifact); None if there is none."""
        from compress.models import load_model

        path = stage_dir / "metrics.json"
        if not self.use_cache or not path.is_file():
            return None
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return "metrics.json unreadable"
        cache = old.get("cache") or {}
        if cache.get("key") != key or old.get("status") == "error":
            return None
        for rel, digest in cache.get("artifacts", {}).items():
            artifact = self.out_dir / rel
            if not artifact.is_file() or sha256_file(artifact) != digest:
                return f"{rel} does not match its recorded hash"
        try:
            model, spec = load_model(stage_dir)
        except CompressError as exc:
            return str(exc)
        onnx_only = old["artifacts"].get("onnx_only", False)
        onnx_path = self.out_dir / old["artifacts"]["onnx"]
        result = StageResult(model, spec, onnx_path if onnx_only else None, old.get("details", {}))
        return result, old

    def _artifact_hashes(self, stage_dir: Path) -> dict[str, str]:
        return {
            self._rel(path): sha256_file(path)
            for path in sorted(stage_dir.iterdir())
            if path.is_file() and path.name != "metrics.json"
        }

    # ------------------------------------------------------------------ stages

    def _run_stage(self, ctx: RunContext, config, name: str, index: int, total: int) -> dict:
        stage_dir = self.out_dir / name
        ctx.workdir = stage_dir
        ctx.on_epoch_end = lambda epoch, metrics: self._emit("on_epoch_end", name, epoch, metrics)
        self._emit("on_stage_start", index, total, name, config.type)
        record: dict[str, Any] = {"name": name, "type": config.type, "dir": self._rel(stage_dir)}
        started = time.monotonic()
        key = self._cache_key(config)
        cached = self._cached(stage_dir, key)
        if isinstance(cached, tuple):
            result, old = cached
            onnx_path = self.out_dir / old["artifacts"]["onnx"]
            metrics = old["metrics"]
            record.update(cached=True, cache={"key": key, "hit": True})
            return self._complete(ctx, config, record, result, onnx_path, metrics, started)
        if isinstance(cached, str):  # never reuse a damaged artifact: say so, rebuild it
            record["cache_rejected"] = cached
            self._emit("on_cache_rejected", name, cached)
        if stage_dir.exists():  # a previous run's folder: never mix its files with ours
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        ctx.resume_dir = self._resume_dir(name, key)
        ctx.fits_started = 0
        try:
            stage = STAGES.get(config.type)(config, name) if config.type in STAGES else config
            result = stage.run(ctx)
            save_model(result.model, result.spec, stage_dir)
            onnx_path = self._deployable_onnx(result, stage_dir)
            metrics = self._evaluate(result.model, result.spec, onnx_path, stage_dir)
        except Exception as exc:  # noqa: BLE001 - any failure inside a stage ends the run with 3
            # A user's model or data code can raise anything (a shape mismatch is a
            # RuntimeError); the run must still end with exit 3, a one-line message and
            # a report, with the traceback kept in the report for --debug and bug reports.
            if isinstance(exc, CompressError):
                detail, code = str(exc), exc.exit_code
            else:
                detail, code = f"{type(exc).__name__}: {exc}", 3
            message = detail if getattr(exc, "stage", None) else f"stage '{name}': {detail}"
            record.update(status="error", error=message, duration_s=time.monotonic() - started)
            self.error = {
                "stage": name,
                "type": type(exc).__name__,
                "message": message,
                "traceback": traceback.format_exc(),
            }
            self.error_exit_code = code
            return record
        record.update(cached=False, cache={"key": key, "hit": False})
        record = self._complete(ctx, config, record, result, onnx_path, metrics, started)
        if ctx.resume_dir is not None:  # the stage is whole: its epoch states are spent
            shutil.rmtree(ctx.resume_dir, ignore_errors=True)
        ctx.resume_dir = None
        return record

    def _resume_dir(self, name: str, key: str) -> Path | None:
        """The folder for this stage's epoch checkpoints (outside the stage folder,
        which a re-run clears), named by the cache key so that a changed config or
        input never resumes from another run's epochs."""
        if not self.use_cache:
            return None
        root = self.out_dir / ".resume"
        folder = root / f"{name}-{key[:16]}"
        for stale in root.glob(f"{name}-*"):
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        return folder

    def _complete(self, ctx, config, record, result, onnx_path, metrics, started) -> dict:
        """Budgets, teacher bookkeeping and metrics.json for a stage run or taken from cache."""
        stage_dir = self.out_dir / record["dir"]
        checks = [c.to_dict() for c in check_budgets(config.budgets, metrics, self.teacher_metrics)]
        if self.teacher_metrics is None:  # the first stage's model is the baseline
            self.teacher_metrics, self.teacher_onnx = metrics, onnx_path
        ctx.accept(result)
        record.update(
            status="passed" if all(c["passed"] for c in checks) else "failed",
            duration_s=time.monotonic() - started,
            metrics=metrics,
            budgets=checks,
            details=result.details,
            artifacts={
                "onnx": self._rel(onnx_path),
                "weights": self._rel(stage_dir / "model.safetensors"),
                "structure": self._rel(stage_dir / "model.json"),
                "onnx_only": result.onnx_path is not None,
            },
        )
        record["cache"]["artifacts"] = self._artifact_hashes(stage_dir)
        # metrics.json last: its recorded hashes are what makes the folder reusable
        atomic_write_json(stage_dir / "metrics.json", record)
        self.input_hash = hashlib.sha256(
            "".join(record["cache"]["artifacts"].values()).encode()
        ).hexdigest()
        ctx.history.append(record)
        return record

    def _finalize(self, last: dict[str, Any]) -> None:
        """Copy the last good stage's model to final/ and check the final budgets."""
        source = self.out_dir / last["artifacts"]["onnx"]
        target = self.out_dir / "final" / "model.onnx"
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        checks = [
            c.to_dict()
            for c in check_budgets(self.recipe.budgets, last["metrics"], self.teacher_metrics)
        ]
        for check in checks:
            if not check["passed"]:
                self._emit("on_budget_fail", "final", check)
        self.final = {
            "path": self._rel(target),
            "sha256": sha256_file(target),
            "stage": last["name"],
            "input": self.data.input_contract(),
            "metrics": last["metrics"],
            "budgets": checks,
        }
        atomic_write_json(self.out_dir / "final" / "model.contract.json", self.final["input"])

    def _best_stage(self) -> dict[str, Any] | None:
        """The last stage whose model met its own and the final budgets."""
        for record in reversed(self.records):
            if record["status"] != "passed":
                continue
            final = check_budgets(self.recipe.budgets, record["metrics"], self.teacher_metrics)
            if all(check.passed for check in final):
                return record
        return None

    def _failures(self) -> list[str]:
        failures = []
        if self.error is not None and self.error["stage"] is None:
            failures.append(self.error["message"])
        for record in self.records:
            if record["status"] == "error":
                failures.append(record["error"])
            for check in record.get("budgets", []):
                if not check["passed"]:
                    failures.append(f"stage '{record['name']}': {check['message']}")
        for check in (self.final or {}).get("budgets", []):
            if not check["passed"]:
                failures.append(f"final model: {check['message']}")
        return failures

    def _status(self) -> str:
        if self.error is not None:
            return "error"
        return "failed" if self._failures() else "passed"

    def _exit_code(self) -> int:
        if self.error is not None:
            return self.error_exit_code
        return 1 if self._failures() else 0

    def _write_report(self) -> dict[str, Any]:
        best = self._best_stage()
        planned = len(self.recipe.stages) + (1 if self.recipe.model.weights else 0)
        finished = len(self.records) == planned or self.error is not None
        report = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "compress_version": compress.__version__,
            "status": self._status() if finished else "running",
            "exit_code": self._exit_code() if finished else None,
            "recipe": {
                "name": self.recipe.name,
                "path": self.recipe_path,
                "resolved": self.recipe.model_dump(mode="json"),
            },
            "seed": self.recipe.seed,
            "started_at": self.started_at,
            "finished_at": _now(),
            "duration_s": time.monotonic() - self.started,
            "environment": self.environment,
            "runtime": self.recipe.runtime.model_dump(mode="json"),
            "distributed": self._distributed_identity(),
            "data": {
                "source": self.recipe.data.source,
                "description": self.data.description,
                "identity": self.data.identity,
                "sizes": {
                    "train": len(self.data.train),
                    "val": len(self.data.val),
                    "test": len(self.data.test),
                },
            }
            if self.data is not None
            else None,
            "teacher_stage": self.records[0]["name"] if self.records else None,
            "stages": self.records,
            "final": self.final,
            "best_stage": best["name"] if best else None,
            "best_stage_path": best["artifacts"]["onnx"] if best else None,
            "failures": self._failures(),
            "error": self.error,
            "paths": {
                "report_json": str(self.out_dir / "report.json"),
                "report_md": str(self.out_dir / "report.md"),
                "report_html": str(self.out_dir / "report.html"),
            },
        }
        atomic_write_json(self.out_dir / "report.json", report)
        if finished:
            write_human_reports(report, self.out_dir)
        return report
