"""Structured pruning with Torch-Pruning's dependency graph: channels removed physically.

The dependency graph decides which layers shrink together (a conv, its
BatchNorm, the next conv's inputs, both sides of a residual add), so the
pruned model stays valid and really is smaller and faster on dense runtimes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.errors import StageError
from compress.pruning.schedule import pruning_schedule


def _importance_table() -> dict[str, Callable[[], object]]:
    import torch_pruning as tp

    return {
        "l1": lambda: tp.importance.MagnitudeImportance(p=1),
        "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    }


def resolve_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Modules by exact name or `re:` pattern; an unmatched entry is an error naming it."""
    import re

    named = dict(model.named_modules())
    found: list[nn.Module] = []
    for entry in names:
        if entry.startswith("re:"):
            pattern = re.compile(entry[3:])
            matches = [module for name, module in named.items() if name and pattern.fullmatch(name)]
        else:
            matches = [named[entry]] if entry in named else []
        if not matches:
            raise StageError(f"ignored_layers entry {entry!r} matches no module")
        found.extend(matches)
    return found


class StructuredPruner:
    """Iterative channel pruning: each `step()` moves to the next scheduled ratio.

    Args:
        model: pruned in place.
        example_input: one batch, to trace the dependency graph.
        ratio: final share of channels removed from each prunable layer.
        steps, schedule: how the ratio is reached ("linear" or "agp").
        importance: "l1" or "l2" channel magnitude.
        ignored: modules never pruned (the classifier must be among them).
        global_pruning: rank channels across layers instead of within each.
        round_to: keep channel counts multiples of this.

    Example:
        >>> pruner = StructuredPruner(model, torch.randn(1, 1, 28, 28), 0.5, 2,
        ...                           "linear", "l1", [model.classifier])  # doctest: +SKIP
        >>> pruner.step(); pruner.step()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: torch.Tensor,
        ratio: float,
        steps: int,
        schedule: str,
        importance: str,
        ignored: list[nn.Module],
        global_pruning: bool = False,
        round_to: int | None = None,
    ):
        import torch_pruning as tp

        self.ratios = pruning_schedule(ratio, steps, schedule)
        table = _importance_table()
        ratios = self.ratios  # torch-pruning wants the cumulative ratios, 0 first
        with torch.enable_grad():  # the dependency graph is traced through autograd
            try:
                self._pruner = tp.pruner.MetaPruner(
                    model,
                    example_input,
                    importance=table[importance](),
                    pruning_ratio=ratio,
                    iterative_steps=steps,
                    iterative_pruning_ratio_scheduler=lambda _ratio, _steps: [0.0, *ratios],
                    ignored_layers=ignored,
                    global_pruning=global_pruning,
                    round_to=round_to,
                )
            except Exception as exc:  # tracing failures come in many types
                raise StageError(
                    f"torch-pruning cannot build a dependency graph for this model: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
        self.model = model
        self.done = 0

    def step(self) -> float:
        """Prune to the next scheduled ratio; returns that ratio."""
        self.model.eval()
        with torch.enable_grad():
            self._pruner.step()
        self.done += 1
        return self.ratios[self.done - 1]
