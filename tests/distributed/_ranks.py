"""Run under torchrun by test_distributed.py: each mode trains on 2 ranks and rank 0
writes what it got (safetensors) for the test to compare with one process.

`all OUT_DIR` runs every mode in one launch, one after the other on the same process
group (torchrun's start, the imports and the group cost more than the training), and
writes OUT_DIR/<mode>.safetensors for each; `MODE OUT` runs one."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file

from compress.data import load_data
from compress.distributed import session as distributed
from compress.distributed.parallel import PipelineEngine
from compress.distributed.strategy import DistributedStrategy
from compress.distributed.worker import serve
from compress.models import new_model
from compress.recipe.schema import (
    CNNConfig,
    DataConfig,
    DistributedConfig,
    MLPConfig,
    TrainingConfig,
)
from compress.training import fit


def tiny_data():
    return load_data(DataConfig(source="sklearn-digits", max_train_samples=256), seed=0)


def model_and_spec(kind: str, data):
    config = (
        CNNConfig(widths=[8, 16], batch_norm=True) if kind == "cnn" else MLPConfig(hidden=[32, 16])
    )
    torch.manual_seed(0)
    return new_model(config, tuple(data.train.input_shapes[0]), data.num_classes)


def training_config(recalibrate: bool = True) -> TrainingConfig:
    """`recalibrate`: the closing BatchNorm recalibration (ranks average their shares,
    one process gets the same statistics); off where a test counts training batches."""
    return TrainingConfig(
        epochs=2,
        batch_size=64,
        optimizer={"name": "momentum", "lr": 0.05, "momentum": 0.9},
        grad_clip=5.0,
        batch_norm={"recalibrate": recalibrate},
    )


def train(strategy: str, kind: str, out: Path, lazy: bool = False) -> None:
    """fit() through the real job protocol: rank 0 drives, rank 1 serves. `lazy`: every
    rank reads the same splits through a row reader (as an image folder does)."""
    from compress.testing.images import as_lazy

    config = DistributedConfig(strategy=strategy, micro_batches=2)
    ranks = DistributedStrategy(distributed.start(config))
    data = as_lazy(tiny_data()) if lazy else tiny_data()
    if ranks.is_driver:
        model, _ = model_and_spec(kind, data)
        config = training_config(recalibrate=not (strategy == "pipeline" and kind == "cnn"))
        fit(model, data, config, seed=3, strategy=ranks)
        ranks.shutdown()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    else:
        serve(ranks, data)


def pipeline_step(out: Path) -> None:
    """One GPipe step on a 2-stage MLP: outputs, loss and every stage's gradients."""
    session = distributed.start(DistributedConfig(strategy="pipeline", micro_batches=4))
    data = tiny_data()
    model, _ = model_and_spec("mlp", data)
    engine = PipelineEngine(model, session, tuple(data.train.x.shape[1:]), 32)
    outputs = []

    def loss_fn(logits, y, target):
        outputs.append(logits.detach())
        return F.cross_entropy(logits, y)

    x, y = data.train.x[:32], data.train.y[:32]
    loss = engine.forward_backward((x,), y, None, loss_fn)
    result = {f"grad.{name}": p.grad for name, p in model.named_parameters() if p.grad is not None}
    if outputs:
        result["outputs"] = torch.cat(outputs)
    result["loss"] = torch.tensor([loss])
    save_file({k: v.contiguous() for k, v in result.items()}, f"{out}.rank{session.rank}")


TRAIN_MODES = ("ddp-cnn", "pipeline-mlp", "pipeline-cnn", "ddp-cnn-lazy")
MODES = (*TRAIN_MODES, "pipeline-step")


def run_mode(mode: str, out: Path) -> None:
    if mode == "pipeline-step":
        pipeline_step(out)
    else:
        strategy, kind, *lazy = mode.split("-")
        train(strategy, kind, out, lazy=bool(lazy))


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    if mode == "all":
        for each in MODES:
            run_mode(each, out / f"{each}.safetensors")
            dist.barrier()  # no message of one mode's protocol reaches the next
    else:
        run_mode(mode, out)
    distributed.exit_process(0)
