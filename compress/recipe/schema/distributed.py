"""The `[distributed]` table: how training stages use several processes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.recipe.schema.base import StrictModel


class DistributedConfig(StrictModel):
    """How training stages use several processes (torch.distributed).

    Only training is distributed: rank 0 runs the pipeline, evaluates, measures and
    writes the run directory; the other ranks join each training job it starts.
    """

    strategy: Literal["none", "ddp", "pipeline", "fsdp"] = Field(
        "none",
        description="'ddp': data parallel, each rank trains on its share of every batch. "
        "'pipeline': the model's layers split into one stage per rank, GPipe "
        "micro-batches. Both run on CPU/gloo. 'fsdp' (sharded parameters) needs CUDA "
        "GPUs and nccl, which this version does not train on: refused with an error. "
        "'none' with several processes means 'ddp'.",
    )
    nproc: int = Field(
        1,
        gt=0,
        description="Processes per node when `compress run` launches them itself "
        "(`--nproc` overrides); ignored under an external torchrun.",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Process-group backend; auto picks gloo, the CPU backend."
    )
    micro_batches: int = Field(
        4, gt=0, description="GPipe micro-batches per batch (pipeline strategy)."
    )
    timeout_s: float = Field(
        600.0,
        gt=0,
        description="A collective that waits longer than this ends the job: a rank that "
        "hangs (rather than crashes, which ends it at once) cannot stall it forever.",
    )
