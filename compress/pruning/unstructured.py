"""Unstructured magnitude pruning: weights set to zero, made permanent before export.

Dense runtimes gain no speed from zeros (measured: ONNX Runtime's kernels and
storage are dense), so the benefit is compressibility; the stage reports
sparsity and says so instead of implying a speed-up.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)


def prunable_weights(model: nn.Module, ignored: list[nn.Module]) -> list[tuple[nn.Module, str]]:
    """(module, "weight") pairs of every conv/linear not ignored."""
    skip = {id(module) for module in ignored}
    return [
        (module, "weight")
        for module in model.modules()
        if isinstance(module, PRUNABLE) and id(module) not in skip
    ]


def magnitude_prune_(
    model: nn.Module, target: float, previous: float, ignored: list[nn.Module], global_scope: bool
) -> None:
    """Raise the sparsity of the prunable weights from `previous` to `target` (L1 magnitude).

    torch's pruning containers apply `amount` to the still-unpruned weights, so
    the increment is rescaled to land exactly on the cumulative target.
    """
    amount = (target - previous) / (1.0 - previous)
    parameters = prunable_weights(model, ignored)
    if global_scope:
        prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=amount)
    else:
        for module, name in parameters:
            prune.l1_unstructured(module, name, amount=amount)


def make_permanent_(model: nn.Module) -> None:
    """Fold the masks into the weights and drop the pruning hooks (export needs plain weights)."""
    for module in model.modules():
        if isinstance(module, PRUNABLE) and prune.is_pruned(module):
            prune.remove(module, "weight")


def sparsity_by_layer(model: nn.Module) -> dict[str, float]:
    """Share of exactly-zero weights in every conv/linear layer."""
    return {
        name: float((module.weight == 0).float().mean())
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE)
    }


def overall_sparsity(model: nn.Module, ignored: list[nn.Module]) -> float:
    """Share of zero weights over the prunable (non-ignored) layers."""
    weights = [getattr(module, name) for module, name in prunable_weights(model, ignored)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0
