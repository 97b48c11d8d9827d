"""What every rank but 0 runs: the run's data, then each training job rank 0 sends."""

from __future__ import annotations

import sys

from compress.distributed.jobs import receive_job
from compress.distributed.strategy import DistributedStrategy
from compress.errors import AgreedStop
from compress.training import fit


def serve_recipe(strategy: DistributedStrategy, recipe) -> None:
    """Set the process up and load the data exactly as rank 0 does (one shared
    function), then `serve`."""
    from compress.pipeline.setup import load_run_data
    from compress.training.device import resolve_placement

    strategy.placement = resolve_placement(recipe.training)
    serve(strategy, load_run_data(recipe))


def serve(strategy: DistributedStrategy, data) -> None:
    """Join each training job rank 0 starts until it says the run is over.

    Any error but an agreed stop propagates: this rank exits non-zero and torchrun
    ends the whole job, instead of leaving rank 0 waiting on a collective.
    """
    jobs = 0
    while (job := receive_job(strategy.session)) is not None:
        jobs += 1
        try:
            fit(
                job.model, data, job.config, seed=job.seed, strategy=strategy,
                augment=job.augment, teacher=job.teacher, distill=job.distill,
                checkpoint=strategy.checkpoint_for(job.checkpoint_dir),
            )  # fmt: skip
        except AgreedStop as exc:  # rank 0 stopped at the same step and reports it
            print(f"[rank {strategy.session.rank}] job {jobs} stopped: {exc}", file=sys.stderr)
