"""Training jobs, sent by rank 0 to the other ranks; and the loop those ranks run.

A job is the model to train (its structure spec as JSON plus its weights as
safetensors bytes: no pickle crosses the wire), the training config, the seed and,
for distillation, the teacher. Every rank then runs the same `fit` on the same
global batches; the engine (`parallel.py`) splits the work.

Waiting for the next job goes through the rendezvous store, not a collective, so
the minutes rank 0 spends exporting and measuring between stages cannot hit the
collective timeout; a rank that dies still ends the job at once (torchrun stops the
others).
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from compress.distributed.session import Session
from compress.errors import StageError
from compress.models.checkpoint import describe_model, rebuild_model, spec_of
from compress.recipe.schema import TrainingConfig
from compress.recipe.stages import DistillConfig
from compress.training.strategy import TrainingJob

_TRAIN, _SHUTDOWN = "train", "shutdown"


class _Mailbox:
    """Numbered messages from rank 0 through the default store, plus byte broadcasts."""

    def __init__(self, session: Session):
        self.session = session
        self.store = dist.distributed_c10d._get_default_store()
        self.sequence = 0

    def post(self, kind: str) -> None:
        self.sequence += 1
        self.store.set(f"compress/job/{self.sequence}", kind)

    def wait(self) -> str:
        self.sequence += 1
        key = f"compress/job/{self.sequence}"
        while not self.store.check([key]):
            time.sleep(0.02)
        return self.store.get(key).decode()

    def broadcast_bytes(self, payload: bytes | None) -> bytes:
        size = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64)
        dist.broadcast(size, 0)
        if payload is not None:
            buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        else:
            buffer = torch.empty(int(size.item()), dtype=torch.uint8)
        dist.broadcast(buffer, 0)
        return payload if payload is not None else buffer.numpy().tobytes()


_mailboxes: dict[int, _Mailbox] = {}


def _mailbox(session: Session) -> _Mailbox:
    return _mailboxes.setdefault(id(session), _Mailbox(session))


def _training_fields(config: TrainingConfig) -> dict[str, Any]:
    dumped = config.model_dump(mode="json")
    return {key: dumped[key] for key in TrainingConfig.model_fields}


def _described(model: nn.Module, role: str) -> dict[str, Any]:
    spec = spec_of(model)
    if spec is None:  # every model compress builds or loads carries its spec
        raise StageError(
            f"distributed training: the {role} ({type(model).__name__}) was not built by "
            "compress.models (no spec to rebuild it on the other ranks)"
        )
    return describe_model(model, spec)


def send_job(session: Session, job: TrainingJob) -> None:
    """Rank 0: hand the other ranks everything they need to join this `fit`."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in job.model.state_dict().items()}
    message: dict[str, Any] = {
        "model": _described(job.model, "model"),
        "config": _training_fields(job.config),
        "seed": job.seed,
        "augment": job.augment,
        "distill": None,
        "teacher": None,
        "checkpoint_dir": job.checkpoint_dir,
    }
    teacher, distill = job.teacher, job.distill
    if teacher is not None and distill is not None:
        message["distill"] = {"temperature": distill.temperature, "alpha": distill.alpha}
        message["teacher"] = _described(teacher, "teacher")
        tensors |= {
            f"teacher.{k}": v.detach().contiguous() for k, v in teacher.state_dict().items()
        }
    mailbox = _mailbox(session)
    mailbox.post(_TRAIN)
    mailbox.broadcast_bytes(json.dumps(message).encode())
    mailbox.broadcast_bytes(save_tensors({k: v.clone() for k, v in tensors.items()}))


def send_shutdown(session: Session) -> None:
    """Rank 0: no more jobs; the other ranks return from `serve`."""
    _mailbox(session).post(_SHUTDOWN)


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def receive_job(session: Session) -> TrainingJob | None:
    """Other ranks: block until rank 0 sends a job or shuts down (None)."""
    mailbox = _mailbox(session)
    if mailbox.wait() == _SHUTDOWN:
        return None
    job = json.loads(mailbox.broadcast_bytes(None).decode())
    tensors = load_tensors(mailbox.broadcast_bytes(None))
    origin = f"rank {session.rank}: training job from rank 0"
    model = rebuild_model(job["model"], _prefixed(tensors, "model."), origin)
    received = TrainingJob(
        model, TrainingConfig.model_validate(job["config"]), job["seed"], job["augment"],
        checkpoint_dir=job["checkpoint_dir"],
    )  # fmt: skip
    if job["teacher"] is not None:
        received.teacher = rebuild_model(job["teacher"], _prefixed(tensors, "teacher."), origin)
        received.distill = DistillConfig.model_validate(job["distill"])
    return received
