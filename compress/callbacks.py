"""Observers of a run: progress and console output, kept out of the runner's logic.

Every hook is a documented no-op in `Callback`; subclasses override what they need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from compress.report.records import BudgetResult, Flag, Report, StageRecord


class Callback:
    """No-op hooks the runner calls in order: run start, per stage, budgets, run end."""

    def on_run_start(self, recipe_name: str, out_dir: str, stage_names: list[str]) -> None:
        """Before data is loaded."""

    def on_stage_start(self, index: int, total: int, name: str, stage_type: str) -> None:
        """Before a stage runs."""

    def on_epoch_end(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        """After each training epoch inside a stage."""

    def on_stage_end(self, record: StageRecord) -> None:
        """After a stage's model was evaluated and its budgets checked."""

    def on_budget_fail(self, stage: str, check: BudgetResult) -> None:
        """For each budget a stage (or the final model) missed."""

    def on_cache_rejected(self, stage: str, reason: str) -> None:
        """When a stage's earlier artifacts exist but fail verification (rebuilt)."""

    def on_flag(self, stage: str, flag: Flag) -> None:
        """For each thing a person should know about a stage that no budget gates
        (a model slower than its input)."""

    def on_data_warning(self, message: str) -> None:
        """For each thing the data loader noticed that is no error (skipped files, one
        class only); they are in report.json's data entry too."""

    def on_stage_warning(self, stage: str | None, message: str) -> None:
        """For each fallback a stage took that changes what it produced or how the run
        can recover (it is in the stage record's `warnings`); `stage` None: one that
        concerns the whole run (report.json's top-level `warnings`)."""

    def on_run_end(self, report: Report) -> None:
        """After report.json was written."""


def _human_bytes(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def _human_count(count: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(int(count))


class EpochProgress:
    """A progress bar over epochs on a terminal; plain log lines otherwise."""

    def __init__(self, console: Console):
        self.console = console
        self._progress: Progress | None = None
        self._task = None

    def update(self, label: str, epoch: int, epochs: int, text: str) -> None:
        if not self.console.is_terminal:
            self.console.print(f"    {label} epoch {epoch:>3}/{epochs}  {text}", markup=False)
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("    {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(label, total=epochs)
        if epoch == 1:  # a new fit inside the stage (e.g. the next pruning step)
            self._progress.reset(self._task, total=epochs)
        self._progress.update(self._task, completed=epoch, description=escape(f"{label}  {text}"))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._task = None, None


# the console's word for each kind of flag (`report.records.Flag.kind`)
_FLAG_WORDS = {"slower_than_input": "SLOWER", "perplexity_above_input": "WORSE"}


class ConsoleReporter(Callback):
    """Progress (bars on a terminal, lines otherwise) and a one-line verdict per stage."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(highlight=False)
        self.quiet = quiet
        self._stage = ""
        self._epochs = EpochProgress(self.console)

    def on_run_start(self, recipe_name, out_dir, stage_names):
        self.console.print(
            f"[bold]compress[/] run [bold]{escape(recipe_name)}[/]: {' -> '.join(stage_names)}  "
            f"(run directory {escape(out_dir)})"
        )

    def on_stage_start(self, index, total, name, stage_type):
        self._stage = name
        self.console.print(f"[{index}/{total}] [bold]{name}[/] ({stage_type})")

    def on_epoch_end(self, stage, epoch, metrics):
        if self.quiet:
            return
        if metrics.get("val_accuracy") is not None:
            val = (
                f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_accuracy'] * 100:.2f}%"
            )
        else:  # no labels: measured against the teacher
            val = (
                f"val_kd_loss {metrics['val_kd_loss']:.4f}  "
                f"val_agree {metrics['val_agreement'] * 100:.2f}%"
            )
        text = f"train_loss {metrics['train_loss']:.4f}  {val}  lr {metrics['lr']:.3g}"
        self._epochs.update(stage, epoch, int(metrics.get("epochs", epoch)), text)

    def on_stage_end(self, record):
        self._epochs.close()
        if record.status == "error":
            self.console.print(f"  [red]x {record.name} failed:[/] {escape(record.error or '')}")
            return
        m = record.metrics
        latency = m.primary_latency()
        mark = "[green]ok[/]" if record.status == "passed" else "[red]BUDGET MISSED[/]"
        if record.cache is not None and record.cache.hit:
            mark += " [cyan](cached)[/]"
        nan = float("nan")
        p50, p90 = (latency.p50_ms, latency.p90_ms) if latency is not None else (nan, nan)
        # no labels (data.labeled = false): agreement with the baseline instead
        agreement = m.agreement if m.agreement is not None else nan
        quality = (
            f"acc {m.accuracy * 100:.2f}%"
            if m.accuracy is not None
            else f"agree {agreement * 100:.2f}% (no labels)"
        )
        if m.perplexity is not None:  # a language model: perplexity and decode speed
            quality = (
                f"ppl {m.perplexity:.4g} ({(m.perplexity_increase or 0) * 100:+.2f}%)  "
                f"agree {agreement * 100:.2f}%  decode {m.decode_tokens_per_s or nan:.4g} "
                f"tokens/s  prefill {m.prefill_ms or nan:.4g} ms  (latency: per decoded token)"
            )
        line = (
            f"  {mark} {quality}  p50 {p50:.4g} ms"
            f"  p90 {p90:.4g} ms  size {_human_bytes(m.size_bytes)}"
            f"  params {_human_count(m.params)}  MACs {_human_count(m.macs)}"
        )
        if m.speedup is not None:
            line += f"  speed-up {m.speedup.median:.2f}x"
        if m.speedup_vs_input is not None and m.speedup_vs_input.rounds:
            line += f" ({m.speedup_vs_input.median:.2f}x vs input)"
        line += f"  ({record.duration_s:.1f} s)"
        self.console.print(line)
        for check in record.budgets:
            if check.passed:
                self.console.print(f"     [green]pass[/] {escape(check.message)}")

    def on_cache_rejected(self, stage, reason):
        self.console.print(f"  [yellow]cache:[/] {escape(reason)}; rebuilding {escape(stage)}")

    def on_budget_fail(self, stage, check):
        self.console.print(f"     [red]FAIL[/] {stage}: {escape(check.message)}")

    def on_flag(self, stage, flag):
        word = _FLAG_WORDS.get(flag.kind, "NOTE")
        self.console.print(f"     [yellow]{word}[/] {escape(flag.message)}")

    def on_data_warning(self, message):
        self.console.print(f"  [yellow]data:[/] {escape(message)}")

    def on_stage_warning(self, stage, message):
        where = f"{stage}: " if stage else ""
        self.console.print(f"  [yellow]warning:[/] {escape(where + message)}")

    def on_run_end(self, report):
        status = report.status
        colour = {"passed": "green", "failed": "red", "error": "red"}[status]
        where = f"; final model {report.final.path}" if report.final is not None else ""
        self.console.print(
            f"[{colour}]{status.upper()}[/] report {escape(report.paths['report_json'])}"
            f"{escape(where)}"
        )


class JUnitWriter(Callback):
    """Writes the finished run's budgets as JUnit test cases (`compress run --junit`)."""

    def __init__(self, path):
        self.path = path

    def on_run_end(self, report):
        from compress.report.junit import write_junit

        write_junit(report, self.path)
