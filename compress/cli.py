"""The `compress` command: parse, call the API, map errors to exit codes.

Exit codes: 0 every budget met; 1 a budget was missed (report and final model
still written); 2 bad recipe, data or usage; 3 a stage failed; 4 an internal error
(a bug in compress: please report it with the traceback `--debug` prints).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from compress import __version__
from compress.cli_options import debug_option as _debug_option
from compress.cli_options import mlflow_option as _mlflow_option
from compress.cli_options import no_user_code_option as _no_user_code_option
from compress.cli_options import set_option as _set_option
from compress.errors import EXIT_INTERNAL, INTERNAL_ERRORS, CompressError

EXIT_OK, EXIT_BUDGET, EXIT_USAGE, EXIT_STAGE = 0, 1, 2, 3

_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _stdout_console() -> Console:
    """Console for results; wide when piped, so logs and tables are not wrapped at 80."""
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=200)


def _fail(exc: CompressError, debug: bool) -> None:
    if debug:
        _console.print_exception()
    for line in str(exc).splitlines():
        _console.print(f"[red]error:[/] {escape(line)}")
    sys.exit(exc.exit_code)


class _Commands(click.Group):
    """Our own bugs surface as what they are: exit 4, never a stage or recipe error."""

    def invoke(self, ctx: click.Context):
        debug = "--debug" in (*ctx.protected_args, *ctx.args)  # before the command consumes them
        try:
            return super().invoke(ctx)
        except INTERNAL_ERRORS as exc:
            if debug:
                _console.print_exception()
            _console.print(
                f"[red]internal error:[/] {escape(f'{type(exc).__name__}: {exc}')}; this is "
                "a bug in compress, please report it (--debug shows the traceback)"
            )
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="compress")
def main() -> None:
    """compress: train -> distill -> prune -> quantize -> export, checked against budgets."""


def _relaunch(recipe, out_dir, overrides, junit, no_cache, quiet, debug, nproc, no_user_code,
              mlflow_uri):  # fmt: skip
    """Re-run this command in N processes under torchrun; exit with the run's code.

    This process holds the run folder's lock for the whole job (rank 0 inherits it).
    """
    from compress.distributed.process import relaunch
    from compress.pipeline.lock import run_lock

    argv = ["run", str(recipe), "--out", str(out_dir)]
    for assignment in overrides:
        argv += ["--set", assignment]
    if junit is not None:
        argv += ["--junit", str(junit)]
    flags = (("--no-cache", no_cache), ("--quiet", quiet), ("--no-user-code", no_user_code))
    argv += [flag for flag, on in flags if on]
    argv += ["--mlflow", mlflow_uri] if mlflow_uri else []
    argv += ["--debug"] if debug else []
    with run_lock(out_dir):
        code, message = relaunch(argv, nproc, out_dir)
    if message:
        _console.print(f"[red]error:[/] {escape(message)}")
    sys.exit(code)


def _rank_error(debug: bool):
    def report(rank: int, exc: CompressError) -> None:
        if debug:
            _console.print_exception()
        _console.print(f"[red]error:[/] rank {rank}: {escape(str(exc))}")

    return report


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@_set_option
@_no_user_code_option
@_debug_option
def validate(recipe: Path, overrides: tuple[str, ...], no_user_code: bool, debug: bool) -> None:
    """Check RECIPE without running it; print the resolved stage order."""
    from compress.recipe import load_recipe

    try:
        loaded = load_recipe(recipe, overrides, user_code=not no_user_code)
    except CompressError as exc:
        _fail(exc, debug)
    click.echo(f"{recipe}: valid; stages: {' -> '.join(loaded.stage_names())}")


@main.command()
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (default: runs/<recipe name>).",
)
@_set_option
@click.option(
    "--junit",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write each budget as a JUnit test case to this file (for CI).",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Re-run every stage even if the run directory holds verified results for it.",
)
@click.option("--quiet", is_flag=True, help="No per-epoch lines.")
@_mlflow_option
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=None,
    help="Train with N processes on this machine through torchrun "
    "(default: the recipe's distributed.nproc).",
)
@_no_user_code_option
@_debug_option
def run(
    recipe: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    junit: Path | None,
    no_cache: bool,
    quiet: bool,
    mlflow_uri: str | None,
    nproc: int | None,
    no_user_code: bool,
    debug: bool,
) -> None:
    """Run RECIPE's stages in order, checking budgets after each.

    Stages whose config, input artifact, data and compress version are unchanged
    since a previous run into the same directory are reused (after their artifacts
    pass a hash check) and reported as cached.

    Only one run writes a run directory at a time: a second one into the same
    directory exits 2 at once, naming the process that holds it.

    Exits 0 when every budget is met, 1 when one is missed, 2 on a bad recipe,
    data or usage, 3 when a stage fails, 4 on an internal error.
    """
    from compress.callbacks import ConsoleReporter, JUnitWriter
    from compress.distributed import session as distributed
    from compress.pipeline.library_log import LOG_FILE, library_log
    from compress.pipeline.lock import run_lock
    from compress.recipe import load_recipe
    from compress.runner import Runner
    from compress.tracking import run_callbacks, with_mlflow

    strategy = None
    try:
        loaded = with_mlflow(load_recipe(recipe, overrides, user_code=not no_user_code), mlflow_uri)
        out_dir = out or Path("runs") / loaded.name
        if distributed.launched_by_torchrun():
            from compress.distributed import process

            strategy = process.join(loaded, where=str(recipe))
            if not strategy.is_driver:
                process.serve_and_exit(strategy, loaded, _rank_error(debug))
        elif (nproc or loaded.distributed.nproc) > 1:
            distributed.resolve(loaded.distributed, where=str(recipe))
            nproc = nproc or loaded.distributed.nproc
            _relaunch(recipe, out_dir, overrides, junit, no_cache, quiet, debug, nproc,
                      no_user_code, mlflow_uri)  # fmt: skip
        callbacks = [ConsoleReporter(_stdout_console(), quiet=quiet), *run_callbacks(loaded)]
        if junit is not None:
            callbacks.append(JUnitWriter(junit))
        runner = Runner(
            loaded,
            out_dir,
            recipe_path=str(recipe),
            callbacks=callbacks,
            debug=debug,
            use_cache=not no_cache,
            strategy=strategy,
        )
        with run_lock(out_dir), library_log(out_dir / LOG_FILE, debug):
            outcome = runner.run()
    except CompressError as exc:
        if strategy is not None:
            strategy.abort()  # the other ranks never got a shutdown: let torchrun end them
        _fail(exc, debug)
    if outcome.exit_code != EXIT_OK:
        for failure in outcome.report.failures:
            kind = "budget missed" if outcome.exit_code == 1 else "error"
            _console.print(f"[red]{kind}:[/] {escape(failure)}")
        error = outcome.report.error
        if debug and error is not None and error.traceback:
            _console.print(escape(error.traceback))
    if strategy is not None:
        from compress.distributed.process import finish_driver

        finish_driver(strategy, outcome.exit_code)
    sys.exit(outcome.exit_code)


@main.command()
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--provider", default="cpu", type=click.Choice(["cpu", "cuda", "tensorrt"]))
@click.option("--threads", default=1, type=click.IntRange(min=1), help="Intra-op threads.")
@click.option("--batch-size", default=1, type=click.IntRange(min=1))
@click.option("--warmup", default=20, type=click.IntRange(min=0))
@click.option("--repeats", default=100, type=click.IntRange(min=1), help="Runs per round.")
@click.option("--rounds", default=7, type=click.IntRange(min=1), help="Interleaved rounds.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_debug_option
def bench(models, provider, threads, batch_size, warmup, repeats, rounds, json_out, debug):
    """Time ONNX MODELS interleaved (A B A B ...); ratios are vs the first model."""
    import json

    from compress.report.bench import print_bench
    from compress.runtime.latency import measure_latency, model_signature
    from compress.runtime.sessions import check_providers

    try:
        check_providers([provider])
        stats = measure_latency(
            models,
            model_signature(models[0]),
            provider=provider,
            threads=threads,
            batch_size=batch_size,
            warmup=warmup,
            repeats=repeats,
            rounds=rounds,
        )
    except CompressError as exc:
        _fail(exc, debug)
    rows, machine = print_bench(_stdout_console(), models, stats, provider, threads, repeats)
    if stats[0].disturbed_rounds:
        _console.print("[yellow]warning:[/] some rounds ran under load; ratios may be off")
    if json_out:
        json_out.write_text(json.dumps({"machine": machine, "models": rows}, indent=2))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--baseline",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="An earlier run directory to diff against (accuracy, p50, size).",
)
@click.option("--max-accuracy-drop", default=0.005, show_default=True, help="Fraction.")
@click.option("--max-latency-increase", default=0.10, show_default=True, help="Fraction.")
@click.option("--max-size-increase", default=0.05, show_default=True, help="Fraction.")
@click.option("--fail-on-regression", is_flag=True, help="Exit 1 when a limit is exceeded.")
@_debug_option
def report(
    run_dir: Path,
    baseline: Path | None,
    max_accuracy_drop: float,
    max_latency_increase: float,
    max_size_increase: float,
    fail_on_regression: bool,
    debug: bool,
) -> None:
    """Regenerate RUN_DIR's report.md and report.html; optionally diff against a baseline."""
    from compress.artifacts import atomic_write_json, atomic_write_text
    from compress.errors import ArtifactError
    from compress.report.assemble import write_human_reports
    from compress.report.compare import (
        RegressionLimits,
        compare_runs,
        comparison_dicts,
        comparison_markdown,
    )
    from compress.report.read import read_report

    console = _stdout_console()
    try:
        current = read_report(run_dir)
        write_human_reports(current, run_dir)
        console.print(f"wrote {run_dir / 'report.md'} and {run_dir / 'report.html'}", markup=False)
        if baseline is None:
            return
        old = read_report(baseline)
        if current.final is None or old.final is None:
            raise ArtifactError("both runs need a final model to compare")
        limits = RegressionLimits(max_accuracy_drop, max_latency_increase, max_size_increase)
        rows = compare_runs(run_dir, current, baseline, old, limits)
    except CompressError as exc:
        _fail(exc, debug)
    markdown = comparison_markdown(rows, baseline)
    atomic_write_text(run_dir / "regression.md", markdown)
    atomic_write_json(run_dir / "regression.json", comparison_dicts(rows))
    console.print(markdown, markup=False)
    regressions = [row.metric for row in rows if row.regression]
    if regressions:
        _console.print(f"[red]regression:[/] {escape(', '.join(regressions))}")
        if fail_on_regression:
            sys.exit(EXIT_BUDGET)


@main.command(name="tune")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Tune directory (default: runs/<recipe name>-tune).",
)
@_set_option
@click.option(
    "--resume", is_flag=True, help="Continue the study (or join one a shared --storage holds)."
)
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Worker processes.")
@click.option("--storage", default=None, help="optuna storage URL shared by workers/machines.")
@_mlflow_option
@_no_user_code_option
@_debug_option
def tune_command(
    recipe: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    resume: bool,
    workers: int,
    storage: str | None,
    mlflow_uri: str | None,
    no_user_code: bool,
    debug: bool,
) -> None:
    """Search RECIPE's [tune] space; write the winning recipe as best.toml."""
    from compress.recipe import load_recipe
    from compress.report.tune_table import trials_table
    from compress.tracking import with_mlflow
    from compress.tuning import tune

    console = _stdout_console()
    try:
        loaded = load_recipe(recipe, overrides, user_code=not no_user_code)
        loaded = with_mlflow(loaded, mlflow_uri)
        out_dir = out or Path("runs") / f"{loaded.name}-tune"
        outcome = tune(
            loaded, recipe.name, out_dir, resume=resume, workers=workers, storage=storage
        )
    except CompressError as exc:
        _fail(exc, debug)
    console.print(trials_table(outcome, loaded.tune))
    if outcome.best_recipe_path is None:
        console.print("[red]no trial completed[/]")
        sys.exit(EXIT_STAGE)
    if outcome.baseline is not None:
        console.print(
            f"recipe's own values (trial {outcome.baseline['number']}): "
            f"val_acc {outcome.baseline['val_accuracy']:.4f}; best: "
            f"{max(r['val_accuracy'] for r in outcome.best):.4f}"
        )
    label = "Pareto front" if loaded.tune.objective != "val_accuracy" else "best trial"
    console.print(f"{label}: {', '.join(str(r['number']) for r in outcome.best)} (marked *)")
    console.print(
        f"winning recipe: {outcome.best_recipe_path}  (compress run {outcome.best_recipe_path})"
    )


if __name__ == "__main__":
    main()
