"""The life of a `compress run` process in a distributed run, for the CLI.

`--nproc N` re-runs the command under torchrun (`launch`); inside it, rank 0
drives the pipeline with a `DistributedStrategy`, every other rank serves jobs
until rank 0 shuts them down, and each process leaves the group its own way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from compress.distributed import session as distributed
from compress.distributed.strategy import DistributedStrategy
from compress.errors import CompressError


def relaunch(argv: list[str], nproc: int, out_dir: Path) -> tuple[int, str | None]:
    """Run `compress <argv>` in `nproc` processes; (exit code, error line)."""
    from compress.distributed.launch import launch

    return launch(argv, nproc, out_dir / "report.json")


def join(loaded, where: str) -> DistributedStrategy:
    """Join the process group torchrun described; the strategy for this rank."""
    from compress.distributed.launch import die_with_parent

    die_with_parent()  # a rank outliving torchrun would write a folder no one holds
    return DistributedStrategy(distributed.start(loaded.distributed, where=where))


def serve_and_exit(strategy: DistributedStrategy, loaded, on_error) -> None:
    """Ranks > 0: train what rank 0 sends; any error ends this process (and, through
    torchrun, the job) after `on_error(rank, exc)` printed one line."""
    from compress.distributed.worker import serve_recipe

    try:
        serve_recipe(strategy, loaded)
    except CompressError as exc:
        on_error(strategy.session.rank, exc)
        sys.stdout.flush()
        os._exit(exc.exit_code)  # peers may be mid-collective: do not wait on teardown
    distributed.exit_process(0)


def finish_driver(strategy: DistributedStrategy, exit_code: int) -> None:
    """Rank 0 after the run: release the other ranks, leave the group, and exit with
    the run's code (0 when our own launcher reads the code from the report)."""
    from compress.distributed.launch import LAUNCHED_ENV

    if strategy.session.failed:  # ranks disagree about where they are: end without talking
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code or 3)
    strategy.shutdown()
    distributed.exit_process(0 if os.environ.get(LAUNCHED_ENV) else exit_code)
