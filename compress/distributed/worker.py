"""What every rank but 0 runs: load the recipe's data, then train whatever rank 0 sends."""

from __future__ import annotations

import sys

from compress.data import load_data
from compress.distributed.jobs import receive_job
from compress.distributed.session import Session
from compress.errors import AgreedStop
from compress.stages.base import seed_everything
from compress.training.loop import train_on


def serve_recipe(session: Session, recipe) -> None:
    """Load the recipe's data exactly as rank 0 does, then `serve`."""
    import torch

    if recipe.runtime.train_threads:
        torch.set_num_threads(recipe.runtime.train_threads)
    seed_everything(recipe.seed)
    serve(session, load_data(recipe.data, recipe.seed))


def serve(session: Session, data) -> None:
    """Join each training job rank 0 starts until it says the run is over.

    Any error but an agreed stop propagates: this rank exits non-zero and torchrun
    ends the whole job, instead of leaving rank 0 waiting on a collective.
    """
    jobs = 0
    while (job := receive_job(session)) is not None:
        jobs += 1
        try:
            train_on(
                job["model"],
                data,
                job["config"],
                job["seed"],
                job["augment"],
                job["teacher"],
                job["distill"],
                session=session,
            )
        except AgreedStop as exc:  # rank 0 stopped at the same step and reports it
            print(f"[rank {session.rank}] job {jobs} stopped: {exc}", file=sys.stderr)
