"""Inference in torch during training: logits, validation metrics, cached teacher logits.

Everything that runs a model over a whole split goes through `split_logits`, which
streams the split in chunks (`Split.chunks`): a lazy split (image files) is decoded a
chunk at a time and only the logits (rows x classes) are kept.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compress.data.bundle import Split
from compress.training.checkpoint import fingerprint

Inputs = torch.Tensor | Sequence[torch.Tensor]


def as_inputs(x: Inputs) -> tuple[torch.Tensor, ...]:
    """One tensor or several (a model's `forward` arguments) as a tuple."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


@torch.no_grad()
def predict_logits(
    model: nn.Module, x: Inputs, batch_size: int = 512, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of `model` in eval mode over `x` (one tensor, or a tuple of inputs), batched.

    With `lengths` (padded token ids: tokens per row), rows run in order of length,
    each batch trimmed to its longest row; the logits come back in the rows' order.
    """
    inputs = as_inputs(x)
    was_training = model.training
    model.eval()
    count = len(inputs[0])
    device = next(model.parameters(), torch.empty(0)).device  # batches go where the model is
    order = torch.argsort(lengths, stable=True) if lengths is not None else None
    outputs = []
    for i in range(0, count, batch_size):
        if order is None:
            batch = tuple(t[i : i + batch_size] for t in inputs)
        else:
            rows = order[i : i + batch_size]
            width = max(int(lengths[rows].max()), 1)
            batch = tuple(t[rows, :width] for t in inputs)
        outputs.append(model(*(t.to(device) for t in batch)).cpu())
    model.train(was_training)
    if not outputs:
        return torch.empty(0)
    logits = torch.cat(outputs)
    if order is not None:
        logits = logits[torch.argsort(order)]
    return logits


@torch.no_grad()
def split_logits(model: nn.Module, split: Split, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` in eval mode over every row of `split`, in row order.

    An in-memory split runs exactly as `predict_logits` over its tensors (same
    batches, same results); a lazy one is decoded and run chunk by chunk.

    Example:
        >>> split = Split(torch.zeros(3, 2), torch.zeros(3, dtype=torch.int64))
        >>> split_logits(nn.Linear(2, 4), split).shape
        torch.Size([3, 4])
    """
    if not split.lazy:
        extra = {} if split.lengths is None else {"lengths": split.lengths}
        return predict_logits(model, split.inputs, batch_size, **extra)
    was_training = model.training
    model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    outputs = [
        model(*(t.to(device) for t in inputs)).cpu() for inputs, _ in split.chunks(batch_size)
    ]
    model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0)


class TeacherLogits:
    """A frozen teacher's logits over fixed training inputs, computed once per run.

    Distillation, each pruning step's fine-tune and QAT distil from the same teacher
    over the same un-augmented inputs; on Fashion-MNIST each recomputation was ~25 s of
    teacher inference. Keyed by the teacher's structure and weights and by the input
    tensors themselves (held, so their ids cannot be reused while the entry lives);
    a lazy split is keyed by its reader and its logits computed chunk by chunk.
    """

    def __init__(self, capacity: int = 2):
        self.capacity = capacity
        self.entries: dict[tuple, tuple[tuple[torch.Tensor, ...], torch.Tensor]] = {}

    def get(self, teacher: nn.Module, x: Inputs | Split, lengths: torch.Tensor | None = None):
        """The teacher's logits over `x`: tensors (`lengths`: see `predict_logits`) or
        a split (its tensors, or a lazy split's rows, streamed)."""
        if isinstance(x, Split) and not x.lazy:
            x, lengths = x.inputs, x.lengths
        held = (x.reader,) if isinstance(x, Split) else as_inputs(x)
        key = (fingerprint(teacher, repr(teacher)), *(id(t) for t in held))
        if key in self.entries:  # the entry holds the inputs: no other object has their ids
            return self.entries[key][1]
        shapes = x.input_shapes if isinstance(x, Split) else [t.shape[1:] for t in held]
        if len(shapes) == 1 and len(shapes[0]) == 3:
            # a copy in NHWC: 1.2-1.7x faster convolutions, the teacher untouched
            teacher = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
        if isinstance(x, Split):
            logits = split_logits(teacher, x)
        else:
            extra = {} if lengths is None else {"lengths": lengths}
            logits = predict_logits(teacher, held, **extra)
        if len(self.entries) >= self.capacity:
            self.entries.pop(next(iter(self.entries)))
        self.entries[key] = (held, logits)
        return logits


teacher_logits_memo = TeacherLogits()


def evaluate(model: nn.Module, split: Split) -> dict[str, float | None]:
    """Accuracy and cross-entropy of `model` on a split (torch, eval mode), streamed.

    A split without labels (`labeled = False`) has neither: both are None.
    """
    logits = split_logits(model, split)
    if not split.labeled:
        return {"accuracy": None, "loss": None}
    return {
        "accuracy": float((logits.argmax(1) == split.y).float().mean()),
        "loss": float(F.cross_entropy(logits, split.y)),
    }
