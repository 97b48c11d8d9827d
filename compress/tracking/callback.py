"""`MlflowCallback`: one MLflow run per `compress run`, fed by the runner's hooks.

It reads only what the runner already produces (the resolved recipe, each stage's
record, the finished report.json and the run folder's files), so the runner knows
nothing about MLflow.
"""

from __future__ import annotations

from pathlib import Path

from compress.callbacks import Callback
from compress.recipe.loader import Recipe
from compress.recipe.schema.tracking import MlflowConfig
from compress.report.records import Report, StageRecord
from compress.tracking.client import Tracker
from compress.tracking.flatten import budget_tags, environment_tags, flatten_params, stage_metrics

REPORT_FILES = ("report.json", "report.md", "report.html", "recipe.resolved.toml", "compress.log")


class MlflowCallback(Callback):
    """Logs a run to MLflow as it happens.

    - start: the resolved recipe as flattened parameters (`stages.0.optimizer.lr`);
    - each stage: its metrics (accuracy, p50/p90 per provider and profile, size,
      params, MACs, speed-ups) with the stage's index as the step;
    - end: each budget as a pass/fail tag with its message, the compress version, CPU
      and ISA flags as tags, the report files, the resolved recipe, the final model
      and its contract as artifacts; the MLflow run ends FINISHED, or FAILED when a
      stage failed or a budget was missed.

    Args:
        recipe: the validated recipe (its resolved form is what gets logged).
        config: the `[tracking.mlflow]` table.
        tracker: an existing `Tracker` (tests); a new one by default.

    Example:
        >>> callback = MlflowCallback(recipe, recipe.tracking.mlflow)  # doctest: +SKIP
        >>> Runner(recipe, out_dir, callbacks=[callback]).run()  # doctest: +SKIP
    """

    def __init__(self, recipe: Recipe, config: MlflowConfig, tracker: Tracker | None = None):
        self.recipe, self.config = recipe, config
        self.tracker = tracker or Tracker(config)
        self.run_id: str | None = None
        self.out_dir: Path | None = None
        self._step = 0

    def on_run_start(self, recipe_name: str, out_dir: str, stage_names: list[str]) -> None:
        from compress import __version__

        self.out_dir = Path(out_dir)
        tags = {
            "compress.recipe": recipe_name,
            "compress.version": __version__,
            "compress.stages": " -> ".join(stage_names),
            "compress.run_dir": str(self.out_dir.resolve()),
        }
        self.run_id = self.tracker.start_run(self.config.run_name or recipe_name, tags=tags)
        resolved = self.recipe.model_dump(mode="json", exclude={"tracking"})
        self.tracker.log(self.run_id, params=flatten_params(resolved))

    def on_stage_end(self, record: StageRecord) -> None:
        self._step += 1
        tags = {f"stage.{self._step}": f"{record.name} ({record.type}): {record.status}"}
        if record.status == "error":
            tags[f"stage.{record.name}.error"] = str(record.error or "")[:5000]
        metrics = stage_metrics(record.metrics) if record.metrics is not None else {}
        metrics["duration_s"] = float(record.duration_s or 0.0)
        self.tracker.log(self.run_id, metrics=metrics, tags=tags, step=self._step)

    def on_run_end(self, report: Report) -> None:
        from compress import __version__

        final = report.final
        tags = {
            **environment_tags(report.environment, __version__),
            **budget_tags(report),
            "compress.status": str(report.status),
            "compress.exit_code": str(report.exit_code),
        }
        measured = stage_metrics(final.metrics) if final is not None else {}
        metrics = {f"final.{k}": v for k, v in measured.items()}
        self.tracker.log(self.run_id, metrics=metrics, tags=tags, step=self._step)
        out = self.out_dir or Path(".")
        files: list[tuple[Path, str | None]] = [(out / name, None) for name in REPORT_FILES]
        if self.config.log_model and final is not None:
            model = out / final.path
            files += [(model, "final"), (model.parent / "model.contract.json", "final")]
        self.tracker.log_files(self.run_id, files)
        self.tracker.end_run(self.run_id, ok=report.status == "passed")
