"""How one training step runs on several ranks: data parallel or a GPipe pipeline.

Both engines are handed the *global* batch, identical on every rank (same seed, same
augmentation draws), and return the global mean loss. That keeps a distributed run
equivalent to a single process on the same batch: DDP weights each rank's loss by
its share of the batch so the averaged gradient is the full batch's gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from compress.distributed.session import Session
from compress.errors import AgreedStop
from compress.models.stats import count_macs, count_params

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def _non_finite(value: float) -> AgreedStop:
    return AgreedStop(
        f"training loss became {value} (non-finite); lower the learning rate or add grad_clip"
    )


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks (as SyncBatchNorm)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        summed = tensor.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        summed = grad.clone()
        dist.all_reduce(summed)
        return summed


def _global_batch_norm(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the whole global batch, its statistics all-reduced across ranks.

    torch's SyncBatchNorm does this on GPUs only. Without it each rank would normalise
    by its own shard's statistics and DDP would train a different model than one
    process on the same batches. The collectives are autograd-aware, so gradients flow
    through the shared statistics as they do in one process.
    """
    if not self.training:
        return type(self).forward(self, x)
    all_reduce = _AllReduceSum.apply
    dims = [0, *range(2, x.ndim)]
    shape = [1, -1] + [1] * (x.ndim - 2)
    local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])
    summed = all_reduce(local)
    count = summed[-1]
    mean = summed[:-1] / count
    centered = x - mean.view(shape)
    var = all_reduce((centered * centered).sum(dims)) / count  # two passes: stable
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:  # cumulative average, as nn.BatchNorm does
                momentum = 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - momentum).add_(mean * momentum)
            unbiased = var * count / max(float(count) - 1, 1.0)
            self.running_var.mul_(1 - momentum).add_(unbiased * momentum)
    out = centered / torch.sqrt(var.view(shape) + self.eps)
    if self.affine:
        out = out * self.weight.view(shape) + self.bias.view(shape)
    return out


class DataParallelEngine:
    """torch DistributedDataParallel: every rank holds the model, trains on its shard."""

    def __init__(self, model: nn.Module, session: Session):
        from torch.nn.parallel import DistributedDataParallel

        self.model = model
        self.rank, self.world = session.rank, session.world_size
        # Patched per instance (not swapped for another class) so the model keeps its
        # modules and state-dict names; `close` removes the patch.
        self.batch_norms = [
            m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]
        for module in self.batch_norms:
            module.forward = _global_batch_norm.__get__(module)
        self.wrapped = DistributedDataParallel(model)  # broadcasts rank 0's weights

    def close(self) -> None:
        for module in self.batch_norms:
            del module.forward

    takes = "data parallel needs 2 rows per rank in a batch (BatchNorm trains on each shard)"

    def usable(self, batch: int, batch_size: int) -> bool:
        return batch >= 2 * self.world  # every shard >= 2 samples: BatchNorm needs 2

    def forward_backward(self, inputs, y, target, loss_fn: LossFn) -> float:
        n = len(y)
        rows = torch.tensor_split(torch.arange(n), self.world)[self.rank]
        shard_target = target[rows] if target is not None else None
        loss = loss_fn(self.wrapped(*(x[rows] for x in inputs)), y[rows], shard_target)
        total = loss.detach().double() * len(rows)
        dist.all_reduce(total)
        value = total.item() / n
        if not math.isfinite(value):  # every rank sees the same sum: all stop together
            raise _non_finite(value)
        # DDP averages gradients over ranks; this weighting makes the average the
        # gradient of the whole batch's mean loss, even when shards differ in size.
        (loss * (len(rows) * self.world / n)).backward()
        return value

    def clip_grads(self, max_norm: float, optimizer=None) -> None:
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)  # grads already equal

    def step(self, optimizer) -> None:
        optimizer.step()

    def end_epoch(self) -> None:
        pass  # weights, gradients and BatchNorm statistics are the same on every rank


def pipeline_parts(model: nn.Module) -> list[nn.Module]:
    """The model as an ordered list of modules whose composition is its forward pass."""
    if hasattr(model, "pipeline_parts"):
        return list(model.pipeline_parts())
    if isinstance(model, nn.Sequential):
        return list(model)
    raise AgreedStop(
        f"distributed.strategy 'pipeline': cannot split a {type(model).__name__} into "
        "stages; give it a pipeline_parts() method returning its layers in order, or "
        "use strategy 'ddp'"
    )


def split_parts(parts: list[nn.Module], input_shape: tuple[int, ...], stages: int) -> list[int]:
    """Start index of each stage's run of parts, balancing compute (MACs) over stages.

    A stage never starts with an in-place activation: it would write into the
    tensor received from the previous stage, which autograd forbids.
    """
    if len(parts) < stages:
        raise AgreedStop(
            f"distributed.strategy 'pipeline': the model has {len(parts)} layers to "
            f"split over {stages} ranks"
        )
    costs, x = [], torch.zeros(1, *input_shape)
    with torch.no_grad():
        for part in parts:
            was_training = part.training
            part.eval()
            costs.append(count_macs(part, tuple(x.shape[1:])) + count_params(part) + 1)
            x = part(x)
            part.train(was_training)
    total, cumulative, starts = sum(costs), [], [0]
    for cost in costs:
        cumulative.append((cumulative[-1] if cumulative else 0) + cost)
    for k in range(1, stages):
        # first part after which k/stages of the compute is done, leaving room for the rest
        cut = next(i + 1 for i, done in enumerate(cumulative) if done >= total * k / stages)
        cut = min(max(cut, starts[-1] + 1), len(parts) - (stages - k))
        while getattr(parts[cut], "inplace", False) and cut + 1 <= len(parts) - (stages - k):
            cut += 1
        if getattr(parts[cut], "inplace", False):
            raise AgreedStop(
                "distributed.strategy 'pipeline': every split point falls before an "
                "in-place activation; use fewer ranks or strategy 'ddp'"
            )
        starts.append(cut)
    return starts


class PipelineEngine:
    """torch.distributed.pipelining with the GPipe schedule: rank r runs stage r."""

    def __init__(
        self, model: nn.Module, session: Session, input_shape: tuple[int, ...], batch_size: int
    ):
        from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

        self.model = model
        self.rank, self.world = session.rank, session.world_size
        self.micro_batches = session.config.micro_batches
        if batch_size % self.micro_batches:
            raise AgreedStop(
                f"batch_size {batch_size} is not a multiple of distributed.micro_batches "
                f"{self.micro_batches}: GPipe needs equal micro-batches"
            )
        parts = pipeline_parts(model)
        starts = split_parts(parts, input_shape, self.world) + [len(parts)]
        self.stage_parts = [nn.Sequential(*parts[a:b]) for a, b in zip(starts, starts[1:])]
        self.own = self.stage_parts[self.rank]
        # Stage shapes given up front: left to infer them, torch runs each stage once on
        # uninitialised tensors, and BatchNorm folds that garbage into its statistics.
        shapes = _stage_io(self.stage_parts, (batch_size // self.micro_batches, *input_shape))
        stage = PipelineStage(
            self.own,
            self.rank,
            self.world,
            torch.device("cpu"),
            # requires_grad marks which tensors carry gradients between stages
            input_args=torch.empty(shapes[self.rank], requires_grad=self.rank > 0),
            output_args=torch.empty(shapes[self.rank + 1], requires_grad=True),
        )
        self.schedule = ScheduleGPipe(stage, self.micro_batches, loss_fn=self._micro_loss)
        self.loss_fn: LossFn | None = None

    takes = "GPipe takes full batches only (its micro-batch shapes are fixed at the first step)"

    def usable(self, batch: int, batch_size: int) -> bool:
        # GPipe fixes the micro-batch shapes at the first step: keep full batches only.
        return batch == batch_size and batch >= 2 * self.micro_batches

    def _micro_loss(self, output: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        target = packed[:, 1:] if packed.shape[1] > 1 else None
        return self.loss_fn(output, packed[:, 0].long(), target)

    def forward_backward(self, inputs, y, target, loss_fn: LossFn) -> float:
        if len(inputs) != 1:
            raise AgreedStop(
                "distributed.strategy 'pipeline' splits one-input models; this one takes "
                f"{len(inputs)} inputs: use strategy 'ddp'"
            )
        (x,) = inputs
        self.loss_fn = loss_fn
        # Labels and teacher logits travel as one tensor so GPipe splits them together.
        extra = target if target is not None else torch.empty(len(y), 0)
        packed = torch.cat([y.double().unsqueeze(1), extra.double()], 1)
        last = self.world - 1
        losses: list[torch.Tensor] = []
        if self.rank == 0:
            self.schedule.step(x)
        elif self.rank == last:
            self.schedule.step(target=packed, losses=losses)
        else:
            self.schedule.step()
        value = torch.zeros(1, dtype=torch.float64)
        if self.rank == last:
            value[0] = torch.stack([loss.detach().double() for loss in losses]).mean()
        dist.broadcast(value, last)
        if not math.isfinite(value.item()):
            raise _non_finite(value.item())
        return value.item()

    def step(self, optimizer) -> None:
        optimizer.step()

    def clip_grads(self, max_norm: float, optimizer=None) -> None:
        grads = [p.grad for p in self.own.parameters() if p.grad is not None]
        squared = torch.zeros(1, dtype=torch.float64)
        for grad in grads:
            squared += grad.double().pow(2).sum()
        dist.all_reduce(squared)  # the norm of the whole model's gradient, as in one process
        scale = max_norm / (math.sqrt(squared.item()) + 1e-6)
        if scale < 1:
            for grad in grads:
                grad.mul_(scale)

    def close(self) -> None:
        pass

    def end_epoch(self) -> None:
        # Each rank trained only its stage: share every stage's weights so all ranks
        # hold the whole model (rank 0 evaluates it; every rank keeps the best epoch).
        for owner, part in enumerate(self.stage_parts):
            for tensor in part.state_dict().values():
                dist.broadcast(tensor, owner)


def _stage_io(stages: list[nn.Module], micro_batch_shape: tuple[int, ...]) -> list[tuple]:
    """Shapes flowing between stages: input of stage 0, output of each stage."""
    shapes, x = [micro_batch_shape], torch.zeros(micro_batch_shape)
    with torch.no_grad():
        for stage in stages:
            was_training = stage.training
            stage.eval()  # no BatchNorm statistics touched
            x = stage(x)
            stage.train(was_training)
            shapes.append(tuple(x.shape))
    return shapes
