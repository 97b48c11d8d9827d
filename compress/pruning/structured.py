"""Structured pruning with Torch-Pruning's dependency graph: channels removed physically.

The dependency graph decides which layers shrink together (a conv, its
BatchNorm, the next conv's inputs, both sides of a residual add, a depthwise
conv's groups), so the pruned model stays valid and really is smaller and
faster on dense runtimes. Attention layers lose whole heads (each keeps its
dimension) at `head_ratio`, FFN layers their intermediate width at `ffn_ratio`;
which layers those are, and which write the residual stream and so are never
pruned, is each attention family's call (`compress.pruning.attention`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from compress.errors import StageError
from compress.pruning.attention import attention_plan, sync_heads_, unconverted_attention
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


# Open enough that torch-pruning always visits a head group (it removes heads only
# in a group whose channel ratio removes something); with prune_head_dims=False
# no channel goes but whole heads, at `head_ratio`.
_HEAD_GATE = 0.999


def _family_ratios(plan, ignored, head_ratio: float, ffn_ratio: float | None):
    """The ignored layers and per-layer ratios the attention families ask for.

    FFN layers get their own ratio only when `ffn_ratio` is set; otherwise they are
    layers like any other (the stage's `ratio`, global ranking included).
    """
    ignored = [*ignored, *plan.residual]
    ratios: dict[nn.Module, float] = {}
    for linear in plan.heads:
        if head_ratio == 0:
            ignored.append(linear)
        else:
            ratios[linear] = _HEAD_GATE
    for linear in plan.ffn if ffn_ratio is not None else []:
        if ffn_ratio == 0:
            ignored.append(linear)
        else:
            ratios[linear] = ffn_ratio
    return ignored, ratios


def _as_tuple(inputs) -> tuple:
    """A model's positional inputs: one tensor, or a tuple of them (token ids, mask)."""
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


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
        head_ratio: final share of each attention layer's heads removed (whole heads;
            None: `ratio`; 0: heads kept).
        ffn_ratio: final share of each FFN layer's intermediate width removed
            (None: `ratio`; 0: kept).

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
        head_ratio: float | None = None,
        ffn_ratio: float | None = None,
    ):
        import torch_pruning as tp

        self.ratios = pruning_schedule(ratio, steps, schedule)
        self.importance = importance
        self.gradient_batches = gradient_batches or []
        if importance in IMPORTANCE_NEEDS_GRADIENTS and not self.gradient_batches:
            raise ValueError("taylor importance needs gradient_batches")
        plan = attention_plan(model)  # may convert modules (nn.MultiheadAttention)
        unsupported = unconverted_attention(model)
        if unsupported:  # skipped with a reason, never a shape crash mid-run
            import warnings

            warnings.warn(
                f"nn.MultiheadAttention layers {unsupported} are not pruned (only the "
                "self-attention of nn.TransformerEncoderLayer without kdim/vdim/bias_kv "
                "becomes head-prunable)",
                stacklevel=2,
            )
            ignored = [*ignored, *(dict(model.named_modules())[n] for n in unsupported)]
        head_ratio = ratio if head_ratio is None else head_ratio
        ignored, ratios = _family_ratios(plan, ignored, head_ratio, ffn_ratio)
        ratios.update(layer_ratios or {})  # the recipe's own layer_ratios win
        # torch-pruning ignores every submodule of an ignored module: so do the heads
        skipped = {id(sub) for module in ignored for sub in module.modules()}
        heads = {m: n for m, n in plan.heads.items() if id(m) not in skipped}
        self.families = plan.families
        self._initial_heads = dict(heads)
        self._head_ratios = pruning_schedule(head_ratio, steps, schedule) if heads else []
        self.global_pruning = global_pruning

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
                    pruning_ratio_dict=ratios or None,
                    iterative_steps=steps,
                    iterative_pruning_ratio_scheduler=scheduler,
                    ignored_layers=ignored,
                    global_pruning=global_pruning,
                    round_to=round_to,
                    num_heads=heads,
                    prune_num_heads=bool(heads),
                    prune_head_dims=False,
                    head_pruning_ratio=head_ratio if heads else 0.0,
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

    def _set_head_step(self) -> None:
        """Ask torch-pruning for exactly the heads this step should remove.

        With local pruning it removes ceil(cumulative ratio x heads left) per layer,
        which over-prunes from the second step on (12 heads at 0.5 in 2 steps: 12 ->
        9 -> 4); so each step gets the share of the heads left that reaches
        ceil(ratio x initial heads), at least one head kept. Global pruning counts
        from the initial total itself.
        """
        if not self._initial_heads or self.global_pruning:
            return
        step = self._pruner.current_step + 1  # torch-pruning counts before pruning
        target = self._head_ratios[step - 1]
        table = {}
        for linear, initial in self._initial_heads.items():
            left = self._pruner.num_heads[linear]
            removed_total = min(math.ceil(target * initial - 1e-9), initial - 1)
            remove = removed_total - (initial - left)
            share = (remove - 0.5) / left if remove > 0 else 0.0  # ceil(share*left) == remove
            table[linear] = [share] * (len(self._head_ratios) + 1)
        self._pruner.head_pruning_ratio_dict = table

    def _accumulate_gradients(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.model.eval()  # BatchNorm statistics stay fixed while ranking
        loss_fn = nn.CrossEntropyLoss()
        for x, y in self.gradient_batches:
            loss_fn(self.model(*_as_tuple(x)), y).backward()

    def step(self) -> float:
        """Prune to the next scheduled ratio; returns that ratio.

        Raises StageError (naming the problem) if the pruned model no longer runs,
        rather than letting a shape error surface later mid-run.
        """
        with torch.enable_grad():
            if self.importance in IMPORTANCE_NEEDS_GRADIENTS:
                self._accumulate_gradients()
            self.model.eval()
            self._set_head_step()
            try:
                self._pruner.step()
            except Exception as exc:  # torch-pruning's errors on unsupported layers vary
                raise StageError(
                    f"torch-pruning failed at step {self.done + 1}: {type(exc).__name__}: {exc}"
                ) from exc
            sync_heads_(self.model, getattr(self._pruner, "num_heads", {}))
        self.model.zero_grad(set_to_none=True)
        try:
            with torch.no_grad():
                self.model(*_as_tuple(self.example_input))
        except Exception as exc:
            raise StageError(
                f"the model no longer runs after pruning step {self.done + 1} "
                f"({type(exc).__name__}: {exc}); add the offending layer to ignored_layers"
            ) from exc
        self.done += 1
        return self.ratios[self.done - 1]
