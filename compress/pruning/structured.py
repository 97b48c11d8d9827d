"""Structured pruning with Torch-Pruning's dependency graph: channels removed physically.

The dependency graph decides which layers shrink together (a conv, its
BatchNorm, the next conv's inputs, both sides of a residual add, a depthwise
conv's groups), so the pruned model stays valid and really is smaller and
faster on dense runtimes. Attention layers lose whole heads.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from compress.errors import StageError
from compress.pruning.schedule import pruning_schedule
from compress.recipe.per_layer import match_names, resolve_per_layer


def _importance_table() -> dict[str, Callable[[], object]]:
    import torch_pruning as tp

    imp = tp.importance
    return {
        "l1": lambda: imp.MagnitudeImportance(p=1),
        "l2": lambda: imp.MagnitudeImportance(p=2),
        "taylor": lambda: imp.TaylorImportance(),
        "bn-scale": lambda: imp.BNScaleImportance(),
        "lamp": lambda: imp.LAMPImportance(p=2),
        "fpgm": lambda: imp.FPGMImportance(p=2),
        "random": lambda: imp.RandomImportance(),
    }


IMPORTANCE_NEEDS_GRADIENTS = {"taylor"}


def _named_submodules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module but the root (whose name is ""), by name, in model order."""
    return {name: module for name, module in model.named_modules() if name}


def resolve_modules(model: nn.Module, entries: list[str]) -> list[nn.Module]:
    """Modules by exact name or `re:` pattern (`ignored_layers`), in entry order.

    An entry matching no module is a RecipeError; see `compress.recipe.per_layer`.
    """
    named = _named_submodules(model)
    return [named[name] for name in match_names(entries, named, "ignored_layers", "module")]


def resolve_layer_ratios(
    model: nn.Module, overrides: dict[str, float | str]
) -> tuple[dict[nn.Module, float], list[nn.Module]]:
    """Per-layer ratios and skips from `layer_ratios`.

    Precedence (`compress.recipe.per_layer`): an exact module name beats a `re:`
    pattern, a pattern beats the stage's `ratio`; among patterns the first listed
    that matches wins. Modules no entry selects are in neither result.

    Returns:
        ({module: ratio}, [modules to skip])
    """
    named = _named_submodules(model)
    settings = resolve_per_layer(named, overrides, None, "layer_ratios", "module")
    ratios: dict[nn.Module, float] = {}
    skipped: list[nn.Module] = []
    for name, value in settings.items():
        if value == "skip":
            skipped.append(named[name])
        elif value is not None:
            ratios[named[name]] = float(value)
    return ratios, skipped


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """The fused qkv Linear of every attention layer (a module with `qkv`, `num_heads`
    and `head_dim`, as compress's and timm's) and its head count, so whole heads go."""
    return {
        m.qkv: m.num_heads
        for m in model.modules()
        if isinstance(getattr(m, "qkv", None), nn.Linear) and hasattr(m, "num_heads")
    }


def _sync_heads_(model: nn.Module, pruned_heads: dict[nn.Module, int]) -> None:
    """After a step, tell each attention module how many heads (and dims) it has left."""
    for module in model.modules():
        qkv = getattr(module, "qkv", None)
        if qkv in pruned_heads:
            module.num_heads = pruned_heads[qkv]
            module.head_dim = qkv.out_features // (3 * module.num_heads)


def unsupported_attention(model: nn.Module) -> list[str]:
    """nn.MultiheadAttention layers: Torch-Pruning shrinks their head_dim, not their heads."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


class StructuredPruner:
    """Iterative channel pruning: each `step()` moves to the next scheduled ratio.

    Args:
        model: pruned in place.
        example_input: one batch, to trace the dependency graph.
        ratio: final share of channels removed from each prunable layer.
        steps, schedule: how the ratio is reached ("linear" or "agp").
        importance: a criterion name (see `_importance_table`).
        ignored: modules never pruned (the classifier must be among them).
        layer_ratios: per-module final ratios overriding `ratio`.
        global_pruning: rank channels across layers instead of within each.
        round_to: keep channel counts multiples of this.
        gradient_batches: for "taylor": (x, y) batches whose loss gradients rank channels.

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
        layer_ratios: dict[nn.Module, float] | None = None,
        global_pruning: bool = False,
        round_to: int | None = None,
        gradient_batches: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        import torch_pruning as tp

        self.ratios = pruning_schedule(ratio, steps, schedule)
        self.importance = importance
        self.gradient_batches = gradient_batches or []
        if importance in IMPORTANCE_NEEDS_GRADIENTS and not self.gradient_batches:
            raise ValueError("taylor importance needs gradient_batches")
        heads = attention_heads(model)
        unsupported = unsupported_attention(model)
        if unsupported:  # skipped with a reason, never a shape crash mid-run
            import warnings

            warnings.warn(
                f"nn.MultiheadAttention layers {unsupported} are not pruned (heads cannot be "
                "removed as units); use a fused-qkv attention module to prune heads",
                stacklevel=2,
            )
            ignored = [*ignored, *(dict(model.named_modules())[n] for n in unsupported)]

        def scheduler(final: float, count: int) -> list[float]:
            # torch-pruning asks for the cumulative ratios, 0 first; each layer's own
            # final ratio (layer_ratios) follows the same curve.
            return [0.0, *pruning_schedule(final, count, schedule)]

        with torch.enable_grad():  # the dependency graph is traced through autograd
            try:
                self._pruner = tp.pruner.MetaPruner(
                    model,
                    example_input,
                    importance=_importance_table()[importance](),
                    pruning_ratio=ratio,
                    pruning_ratio_dict=layer_ratios or None,
                    iterative_steps=steps,
                    iterative_pruning_ratio_scheduler=scheduler,
                    ignored_layers=ignored,
                    global_pruning=global_pruning,
                    round_to=round_to,
                    num_heads=heads,
                    prune_num_heads=bool(heads),
                    prune_head_dims=False,
                    head_pruning_ratio=ratio if heads else 0.0,
                )
            except Exception as exc:  # tracing failures come in many types
                raise StageError(
                    "torch-pruning cannot build a dependency graph for this model "
                    f"({type(exc).__name__}: {exc}); name the layers it cannot handle in "
                    "ignored_layers"
                ) from exc
        self.model = model
        self.example_input = example_input
        self.done = 0

    def _accumulate_gradients(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.model.eval()  # BatchNorm statistics stay fixed while ranking
        loss_fn = nn.CrossEntropyLoss()
        for x, y in self.gradient_batches:
            loss_fn(self.model(x), y).backward()

    def step(self) -> float:
        """Prune to the next scheduled ratio; returns that ratio.

        Raises StageError (naming the problem) if the pruned model no longer runs,
        rather than letting a shape error surface later mid-run.
        """
        with torch.enable_grad():
            if self.importance in IMPORTANCE_NEEDS_GRADIENTS:
                self._accumulate_gradients()
            self.model.eval()
            try:
                self._pruner.step()
            except Exception as exc:  # torch-pruning's errors on unsupported layers vary
                raise StageError(
                    f"torch-pruning failed at step {self.done + 1}: {type(exc).__name__}: {exc}"
                ) from exc
            _sync_heads_(self.model, getattr(self._pruner, "num_heads", {}))
        self.model.zero_grad(set_to_none=True)
        try:
            with torch.no_grad():
                self.model(self.example_input)
        except Exception as exc:
            raise StageError(
                f"the model no longer runs after pruning step {self.done + 1} "
                f"({type(exc).__name__}: {exc}); add the offending layer to ignored_layers"
            ) from exc
        self.done += 1
        return self.ratios[self.done - 1]
