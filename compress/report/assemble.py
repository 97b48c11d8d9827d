"""report.json's content: what a run did so far, and how it ends.

The runner hands every stage record here; this module alone decides the run's
status, its exit code, its failure lines and the best stage, and writes the
report (atomically: a crashed run still tells how far it got).
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import compress
from compress.artifacts import atomic_write_json, atomic_write_text
from compress.budgets import check_budgets
from compress.recipe.loader import Recipe
from compress.recipe.schema import Budgets
from compress.report.records import (
    BudgetResult,
    Final,
    Metrics,
    RecipeFacts,
    Report,
    RunError,
    RuntimeFacts,
    StageRecord,
)

REPORT_SCHEMA_VERSION = 2


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def check(budgets: Budgets, metrics: Metrics, baseline: Metrics | None) -> list[BudgetResult]:
    """`budgets` against a model's metrics (budget rules read plain data)."""
    teacher = baseline.to_json() if baseline is not None else None
    checks = check_budgets(budgets, metrics.to_json(), teacher)
    return [BudgetResult.model_validate(result.to_dict()) for result in checks]


def write_human_reports(report: Report, out_dir: Path) -> None:
    """report.md and the self-contained report.html, from report.json's content."""
    from compress.report.html import render_html
    from compress.report.markdown import render_markdown

    atomic_write_text(out_dir / "report.md", render_markdown(report))
    atomic_write_text(out_dir / "report.html", render_html(report))


@dataclass
class RunOutcome:
    """How a run ended: the exit code the CLI returns and the report it wrote."""

    exit_code: int
    status: str
    report: Report
    out_dir: Path


class RunReport:
    """The records of one run and the report built from them.

    Args:
        recipe: the validated recipe (embedded resolved, with defaults).
        out_dir: the run directory.
        recipe_path: where the recipe came from.
        planned: how many stages the run will attempt.
        environment: the machine and library versions.
        distributed: the training strategy's identity (None: one process).
    """

    def __init__(self, recipe: Recipe, out_dir: Path, recipe_path: str | None, planned: int,
                 environment: dict[str, Any], distributed: dict[str, Any] | None):  # fmt: skip
        self.recipe = recipe
        self.out_dir = out_dir
        self.recipe_path = recipe_path
        self.planned = planned
        self.environment = environment
        self.distributed = distributed
        self.started, self.started_at = time.monotonic(), now()
        self.records: list[StageRecord] = []
        self.final: Final | None = None
        self.error: RunError | None = None
        self.error_exit_code = 0
        self.data = None
        self.baseline_metrics: Metrics | None = None
        self.training: dict[str, str] | None = None  # the resolved device and precision
        self.warnings: list[str] = []  # run-level: no stage's own

    def fail(self, stage: str | None, exc: BaseException, message: str, code: int,
             traceback: str | None = None) -> None:  # fmt: skip
        """Record the error that ends the run (one per run)."""
        self.error = RunError(stage=stage, type=type(exc).__name__, message=message)
        if traceback is not None:
            self.error.traceback = traceback
        self.error_exit_code = code

    def finalize(self, last: StageRecord, path: str, sha256: str, signature,
                 contract: dict[str, Any] | None = None,
                 measured: dict[str, Any] | None = None) -> Final:  # fmt: skip
        """The `final` entry: the shipped file, its input contract (the data's, unless
        the run's task writes its own: `contract`, and says how it measured: `measured`),
        the final budgets."""
        contract = contract if contract is not None else self.data.input_contract(signature)
        self.final = Final(
            path=path,
            sha256=sha256,
            stage=last.name,
            input={**contract, "measured": measured or self._measured()},
            metrics=last.metrics,
            budgets=self.final_checks(last.metrics),
        )
        return self.final

    def _measured(self) -> dict[str, Any]:
        """How the shipped model was measured: providers, profiles, session options."""
        from compress.runtime.sessions import session_options

        runtime = self.recipe.runtime
        return {
            "providers": runtime.providers,
            "profiles": [
                {
                    "name": p.label,
                    "batch": p.batch,
                    "threads": p.threads,
                    "session_options": session_options(p.threads),
                }
                for p in runtime.deployment_profiles()
            ],  # fmt: skip
        }

    def final_checks(self, metrics: Metrics) -> list[BudgetResult]:
        """The recipe's final budgets against a stage's metrics."""
        return check(self.recipe.budgets, metrics, self.baseline_metrics)

    def best_stage(self) -> StageRecord | None:
        """The last stage whose model met its own and the final budgets."""
        for record in reversed(self.records):
            if record.status == "passed" and all(
                result.passed for result in self.final_checks(record.metrics)
            ):
                return record
        return None

    def failures(self) -> list[str]:
        failures = []
        if self.error is not None and self.error.stage is None:
            failures.append(self.error.message)
        for record in self.records:
            if record.status == "error":
                failures.append(record.error)
            for result in record.budgets:
                if not result.passed:
                    failures.append(f"stage '{record.name}': {result.message}")
        for result in self.final.budgets if self.final is not None else []:
            if not result.passed:
                failures.append(f"final model: {result.message}")
        return failures

    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "failed" if self.failures() else "passed"

    def exit_code(self) -> int:
        if self.error is not None:
            return self.error_exit_code
        return 1 if self.failures() else 0

    def write(self) -> Report:
        """report.json now; report.md/html too once the run has finished."""
        finished = len(self.records) == self.planned or self.error is not None
        report = self._report(finished)
        atomic_write_json(self.out_dir / "report.json", report.to_json())
        if finished:
            write_human_reports(report, self.out_dir)
        return report

    def _report(self, finished: bool) -> Report:
        best = self.best_stage()
        return Report(
            schema_version=REPORT_SCHEMA_VERSION,
            compress_version=compress.__version__,
            status=self.status() if finished else "running",
            exit_code=self.exit_code() if finished else None,
            recipe=RecipeFacts(
                name=self.recipe.name,
                path=self.recipe_path,
                resolved=self.recipe.model_dump(mode="json"),
            ),
            seed=self.recipe.seed,
            started_at=self.started_at,
            finished_at=now(),
            duration_s=time.monotonic() - self.started,
            environment=self.environment,
            runtime=RuntimeFacts.model_validate(self.recipe.runtime.model_dump(mode="json")),
            distributed=self.distributed,
            training=self.training,
            data=self._data(),
            teacher_stage=self.records[0].name if self.records else None,
            stages=self.records,
            final=self.final,
            best_stage=best.name if best else None,
            best_stage_path=best.artifacts.onnx if best else None,
            failures=self.failures(),
            warnings=self.warnings,
            error=self.error,
            paths={
                "report_json": str(self.out_dir / "report.json"),
                "report_md": str(self.out_dir / "report.md"),
                "report_html": str(self.out_dir / "report.html"),
            },
        )

    def _data(self) -> dict[str, Any] | None:
        data = self.data
        if data is None:
            return None
        return {
            "source": self.recipe.data.source,
            "description": data.description,
            "identity": data.identity,
            "sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            "warnings": data.warnings,
        }
