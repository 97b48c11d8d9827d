"""The process group of a distributed run: who this process is and how ranks talk.

compress distributes only training. Rank 0 runs the whole pipeline (evaluation, ONNX,
latency, the run directory); every other rank loads the same recipe and data, then
waits for the training jobs rank 0 starts (`compress.distributed.jobs`).
"""

from __future__ import annotations

import atexit
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

import torch
import torch.distributed as dist

from compress.errors import RecipeError
from compress.recipe.schema import DistributedConfig

# Strategies the CPU (gloo) build can run. FSDP shards parameters with collectives
# (reduce-scatter) that gloo lacks or runs unreliably, so it is refused there.
CPU_STRATEGIES = ("ddp", "pipeline")


@dataclass
class Session:
    """This process's place in the job.

    Attributes:
        rank: global rank; 0 drives the pipeline.
        world_size: number of processes in the job.
        local_world_size: processes on this machine (they share its cores).
        config: the recipe's [distributed] table, strategy resolved.
    """

    rank: int
    world_size: int
    local_world_size: int
    config: DistributedConfig
    failed: bool = False  # a job broke mid-way: ranks may disagree, do not talk again

    @property
    def is_driver(self) -> bool:
        return self.rank == 0

    @property
    def strategy(self) -> str:
        return self.config.strategy


_current: Session | None = None


def current() -> Session | None:
    """The active session, or None in an ordinary single-process run."""
    return _current


def launched_by_torchrun() -> bool:
    """True inside a process torchrun (or our own --nproc launcher) started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve(config: DistributedConfig, where: str = "recipe") -> DistributedConfig:
    """The config with strategy and backend made concrete; checked before any process
    starts, so a strategy this machine cannot run is a recipe error (exit 2).

    Raises:
        RecipeError: the strategy or backend cannot run on this machine.
    """
    strategy = "ddp" if config.strategy == "none" else config.strategy
    backend = "gloo" if config.backend == "auto" else config.backend
    gpus = torch.cuda.device_count()
    if backend == "nccl":
        raise RecipeError(
            f"{where}: distributed.backend: 'nccl' (one process per GPU) is not built in this "
            f"version (this machine's torch sees {gpus} GPU(s)); one GPU trains with "
            "[training] device = 'cuda', several processes with backend 'gloo' (or 'auto')"
        )
    if strategy not in CPU_STRATEGIES:
        raise RecipeError(
            f"{where}: distributed.strategy: {strategy!r} needs CUDA GPUs and nccl, not "
            f"built in this version (torch sees {gpus} GPU(s)); on CPU/gloo use one of "
            f"{', '.join(CPU_STRATEGIES)}"
        )
    return config.model_copy(update={"strategy": strategy, "backend": backend})


def start(config: DistributedConfig, where: str = "recipe") -> Session:
    """Join the process group torchrun described in the environment."""
    global _current
    resolved = resolve(config, where)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    # Ranks on one machine share its cores: more threads than cores makes OpenMP spin.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(local_world, 1)))
    if not dist.is_initialized():
        dist.init_process_group(resolved.backend, timeout=timedelta(seconds=config.timeout_s))
    _current = Session(dist.get_rank(), dist.get_world_size(), local_world, resolved)
    return _current


def stop() -> None:
    """Leave the process group (only when no job broke: a broken one cannot agree)."""
    global _current
    session, _current = _current, None
    if session is not None and not session.failed and dist.is_initialized():
        dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """Leave the group (`stop`) and end this rank's process with `code`.

    Python's exit handlers and buffered output run as at a normal exit; C++ static
    destructors do not. After the GPipe schedule's gloo send/recv traffic, a gloo
    thread is sometimes still joinable when the interpreter tears torch down, and
    std::terminate aborts the process ("terminate called without an active
    exception", SIGABRT, 2 of ~180 runs of the GPipe test script on 2 cores, on
    either rank; in CI too). The work is finished and saved by then, but torchrun
    would report the job failed.
    """
    stop()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
