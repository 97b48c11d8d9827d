"""Training strategies over torch.distributed ranks: data parallel and GPipe.

Rank 0 drives the pipeline; before each `fit` it sends the job to the other ranks,
which train it with the same loop (`compress.distributed.worker`). The engines in
`parallel.py` split each global batch (DDP) or the model (pipeline) across ranks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from compress.distributed.checkpoint import RankCheckpoint
from compress.distributed.jobs import send_job, send_shutdown
from compress.distributed.parallel import DataParallelEngine, PipelineEngine
from compress.distributed.session import Session
from compress.training.strategy import Strategy, TrainingJob

_ENGINES = {
    "ddp": lambda model, session, shape, batch: DataParallelEngine(model, session),
    "pipeline": PipelineEngine,
}


class DistributedStrategy(Strategy):
    """Every rank of the session trains each job; rank 0 drives.

    Args:
        session: this process's place in the process group.
    """

    def __init__(self, session: Session):
        self.session = session
        self.name = session.strategy
        self.world_size = session.world_size

    @property
    def is_driver(self) -> bool:
        return self.session.is_driver

    @property
    def channels_last(self) -> bool:
        return False  # activations travel between ranks in the default layout

    def checkpoint_for(self, folder):
        return RankCheckpoint(folder, self.session) if folder is not None else None

    def launch(self, job: TrainingJob) -> None:
        if self.is_driver:
            send_job(self.session, job)

    def engine(self, model: nn.Module, sample_shape: tuple[int, ...], batch_size: int):
        return _ENGINES[self.session.strategy](model, self.session, sample_shape, batch_size)

    @property
    def rank(self) -> int:
        return self.session.rank

    def reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.detach().to(torch.float64).clone()
        dist.all_reduce(summed)
        return summed.to(tensor.dtype)

    def share(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(tensor, 0)
        return tensor.tolist()

    def abort(self) -> None:
        self.session.failed = True

    def identity(self) -> dict[str, Any]:
        return {
            "strategy": self.session.strategy,
            "world_size": self.session.world_size,
            "micro_batches": self.session.config.micro_batches,
        }

    def shutdown(self) -> None:
        """Driver, after the run: release the other ranks from `serve`."""
        send_shutdown(self.session)
