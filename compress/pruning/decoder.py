"""Structured pruning of a Llama-style decoder that its config can still describe.

Two units are removed, the same count in every layer, so the pruned model is a plain
`LlamaForCausalLM` of a smaller config (`save_pretrained` + `from_pretrained` give the
same logits, and every exporter that reads the config keeps working):

- a **KV group**: one key/value head and the query heads that share it under grouped-
  query attention (transformers repeats KV head `g` for query heads
  `g * r ... g * r + r - 1`, `r = num_attention_heads // num_key_value_heads`). Removing
  group `g` drops its rows of `k_proj`/`v_proj`, its `r` heads' rows of `q_proj` and the
  same heads' input columns of `o_proj`. The query-per-KV ratio and `head_dim` stay.
- an **FFN channel**: a row of `gate_proj` and `up_proj` and the column of `down_proj`.

Which units go is chosen per layer (the count is uniform, the indices are not) by one of
`IMPORTANCE` (a table keyed by name):

- `magnitude`: the L2 norm of every weight the unit owns (rows and columns above);
- `activation`: Wanda's |W|·|X| summed over the unit, on calibration windows: the mean
  |input| of each `o_proj` / `down_proj` channel times the L2 norm of its column, i.e.
  how much the unit writes into the residual stream on real text.

Measured on SmolLM2-135M (scripts/bench_decoder_prune.py, Hamlet perplexity 38.4): FFN
-25% by magnitude gives 214,798, by activation 84.0; KV 1 of 3: 539 vs 99.5. Magnitude
removes most of each layer's five highest-|W|·|X| channels (up to 75x the median
channel in layer 29): the channels that carry the most have small weights. Use
`activation` for language models.

A model whose layers differ (a config cannot describe that) or that is not a Llama-style
decoder is refused with a `RecipeError` saying why; so is a ratio that leaves no group.

Example:
    >>> summary = prune_decoder_(model, kv_groups_ratio=1 / 3, ffn_ratio=0.25)  # doctest: +SKIP
    >>> model.config.num_key_value_heads, model.config.intermediate_size  # doctest: +SKIP
    (2, 1152)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from compress.errors import RecipeError

if TYPE_CHECKING:
    import torch
    from torch import nn

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a Llama-style causal LM (`model.model.layers`), after
    checking each has the projections this module prunes and that the config says
    what the weights are (uniform layers).

    Raises:
        RecipeError: not a Llama-style decoder, or layers a config cannot describe.
    """
    config = getattr(model, "config", None)
    layers = getattr(getattr(model, "model", None), "layers", None)
    if config is None or layers is None or len(layers) == 0:
        raise RecipeError(
            f"{type(model).__name__} is not a Llama-style decoder (expected "
            "`model.model.layers` and a `config`, as transformers' LlamaForCausalLM)"
        )
    for index, layer in enumerate(layers):
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        missing = [f"self_attn.{n}" for n in _ATTENTION if not hasattr(attention, n)]
        missing += [f"mlp.{n}" for n in _MLP if not hasattr(mlp, n)]
        if missing:
            raise RecipeError(
                f"{type(model).__name__} layer {index} has no {', '.join(missing)}: "
                "decoder pruning handles Llama-style layers (q/k/v/o + gate/up/down)"
            )
    _check_uniform(model, layers)
    return list(layers)


def _check_uniform(model: nn.Module, layers) -> None:
    config = model.config
    head_dim = _head_dim(config)
    expected = {
        "q_proj": config.num_attention_heads * head_dim,
        "k_proj": config.num_key_value_heads * head_dim,
        "v_proj": config.num_key_value_heads * head_dim,
        "gate_proj": config.intermediate_size,
        "up_proj": config.intermediate_size,
    }
    if config.num_attention_heads % config.num_key_value_heads:
        raise RecipeError(
            f"num_attention_heads {config.num_attention_heads} is not a multiple of "
            f"num_key_value_heads {config.num_key_value_heads}"
        )
    for index, layer in enumerate(layers):
        for name, rows in expected.items():
            module = getattr(layer.self_attn if name in _ATTENTION else layer.mlp, name)
            if module.weight.shape[0] != rows:
                raise RecipeError(
                    f"layer {index} {name} has {module.weight.shape[0]} outputs, the config "
                    f"says {rows}: layers of different widths cannot be described by one "
                    "config (save_pretrained could not reload them), so decoder pruning "
                    "refuses them"
                )


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _drop_count(total: int, ratio: float, what: str, multiple_of: int = 1) -> int:
    """How many of `total` units `ratio` removes (rounded; the kept count a multiple of
    `multiple_of` when possible). Raises if nothing would be left."""
    if not 0.0 <= ratio < 1.0:
        raise RecipeError(f"{what} ratio {ratio}: must be in [0, 1)")
    keep = total - round(ratio * total)
    if multiple_of > 1 and keep > multiple_of:
        keep = max(multiple_of, round(keep / multiple_of) * multiple_of)
    if keep <= 0:
        raise RecipeError(
            f"{what} ratio {ratio} removes all {total} {what}s of each layer; "
            f"the largest ratio that keeps one is {(total - 1) / total:.3f}"
        )
    return total - keep


def _check_describable(config, groups_left: int) -> None:
    """transformers' LlamaConfig refuses hidden_size % num_attention_heads != 0 even with
    an explicit head_dim, so such a model could be pruned but never reloaded."""
    heads = config.num_attention_heads // config.num_key_value_heads * groups_left
    if config.hidden_size % heads:
        fits = [g for g in range(1, config.num_key_value_heads + 1)
                if config.hidden_size % (heads // groups_left * g) == 0]  # fmt: skip
        raise RecipeError(
            f"keeping {groups_left} of {config.num_key_value_heads} KV groups leaves {heads} "
            f"query heads, which do not divide hidden_size {config.hidden_size}: transformers' "
            f"config validation would refuse to reload the model; KV groups that can be kept: "
            f"{fits}"
        )


# ---- importance: one score per unit per layer, higher = keep -------------------------------


def _group_rows(group: int, per_group: int, head_dim: int) -> list[int]:
    start = group * per_group * head_dim
    return list(range(start, start + per_group * head_dim))


def _magnitude(model: nn.Module, layers, windows) -> tuple[list, list]:
    import torch

    config = model.config
    head_dim, groups = _head_dim(config), config.num_key_value_heads
    per_group = config.num_attention_heads // groups
    attention, ffn = [], []
    for layer in layers:
        a, m = layer.self_attn, layer.mlp
        q = a.q_proj.weight.view(groups, per_group * head_dim, -1).pow(2).sum(dim=(1, 2))
        k = a.k_proj.weight.view(groups, head_dim, -1).pow(2).sum(dim=(1, 2))
        v = a.v_proj.weight.view(groups, head_dim, -1).pow(2).sum(dim=(1, 2))
        o = a.o_proj.weight.view(a.o_proj.weight.shape[0], groups, -1).pow(2).sum(dim=(0, 2))
        attention.append(torch.sqrt(q + k + v + o))
        channel = (
            m.gate_proj.weight.pow(2).sum(1) + m.up_proj.weight.pow(2).sum(1)
            + m.down_proj.weight.pow(2).sum(0)
        )  # fmt: skip
        ffn.append(torch.sqrt(channel))
    return attention, ffn


def _activation(model: nn.Module, layers, windows) -> tuple[list, list]:
    """Wanda-style: mean |x| of each o_proj / down_proj input channel on `windows`,
    times the L2 norm of the weight column it multiplies, summed over the unit."""

    if windows is None:
        raise RecipeError("importance 'activation' needs calibration windows (token ids)")
    config = model.config
    groups = config.num_key_value_heads
    sums: dict[Any, torch.Tensor] = {}
    count = [0]

    def hook(module, args):
        x = args[0].detach().abs().flatten(0, -2)
        sums[module] = sums.get(module, 0) + x.double().sum(0)

    handles = []
    for layer in layers:
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(hook))
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(hook))
    try:
        for batch in iter_windows(windows):
            count[0] += batch.numel()
            run_logits(model, batch, logits=False)
    finally:
        for handle in handles:
            handle.remove()
    attention, ffn = [], []
    for layer in layers:
        o, d = layer.self_attn.o_proj, layer.mlp.down_proj
        score_o = (sums[o] / count[0]).float() * o.weight.norm(dim=0)
        attention.append(score_o.view(groups, -1).sum(1))
        ffn.append((sums[d] / count[0]).float() * d.weight.norm(dim=0))
    return attention, ffn


IMPORTANCE: dict[str, Callable] = {"magnitude": _magnitude, "activation": _activation}


# ---- windows and forward helpers ----------------------------------------------------------


def iter_windows(windows, batch_size: int = 4):
    """Batches of token ids (int64 tensors [b, T]) from an array or tensor [n, T], or an
    `(input_ids, attention_mask)` pair (the text-corpus split's `x`; full windows)."""
    import numpy as np
    import torch

    if isinstance(windows, tuple | list) and len(windows) == 2 and np.ndim(windows[0]) == 2:
        windows = windows[0]
    ids = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    if ids.dim() != 2:
        raise RecipeError(f"calibration windows must be [n, T] token ids, got {tuple(ids.shape)}")
    for start in range(0, len(ids), batch_size):
        yield ids[start : start + batch_size]


def run_logits(model: nn.Module, ids: torch.Tensor, logits: bool = True):
    """The model's logits on `ids` without gradients or a KV cache (None if `logits`
    is False: only the forward's side effects, e.g. hooks, are wanted)."""
    import torch

    with torch.no_grad():
        out = model(input_ids=ids, use_cache=False, logits_to_keep=0 if logits else 1)
    return out.logits if logits else None


# ---- the pruning itself ---------------------------------------------------------------------


def _take(linear: nn.Module, index: torch.Tensor, dim: int) -> nn.Module:
    """A new Linear with only `index` rows (dim 0) or input columns (dim 1) of `linear`."""
    import torch
    from torch import nn

    weight = linear.weight.detach().index_select(dim, index).clone()
    out_features, in_features = weight.shape
    bias = linear.bias is not None
    new = nn.Linear(in_features, out_features, bias=bias, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias:
            source = linear.bias.detach()
            new.bias.copy_(source.index_select(0, index) if dim == 0 else source)
    new.train(linear.training)
    return new


def _prune_attention_(attention: nn.Module, keep_groups: list[int], config) -> None:
    import torch

    head_dim = _head_dim(config)
    per_group = config.num_attention_heads // config.num_key_value_heads
    device = attention.q_proj.weight.device
    q_rows = torch.tensor(
        [r for g in keep_groups for r in _group_rows(g, per_group, head_dim)], device=device
    )
    kv_rows = torch.tensor([r for g in keep_groups for r in _group_rows(g, 1, head_dim)],
                           device=device)  # fmt: skip
    attention.q_proj = _take(attention.q_proj, q_rows, 0)
    attention.k_proj = _take(attention.k_proj, kv_rows, 0)
    attention.v_proj = _take(attention.v_proj, kv_rows, 0)
    attention.o_proj = _take(attention.o_proj, q_rows, 1)


def _prune_mlp_(mlp: nn.Module, keep: list[int]) -> None:
    import torch

    index = torch.tensor(keep, device=mlp.gate_proj.weight.device)
    mlp.gate_proj = _take(mlp.gate_proj, index, 0)
    mlp.up_proj = _take(mlp.up_proj, index, 0)
    mlp.down_proj = _take(mlp.down_proj, index, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(keep)


def _keep(scores: torch.Tensor, drop: int) -> list[int]:
    """Indices of the `len(scores) - drop` highest scores, in their original order."""
    order = scores.argsort(descending=True)[: len(scores) - drop]
    return sorted(order.tolist())


def prune_decoder_(
    model: nn.Module,
    *,
    kv_groups_ratio: float = 0.0,
    ffn_ratio: float = 0.0,
    importance: str = "magnitude",
    windows=None,
    ffn_multiple_of: int = 1,
) -> dict:
    """Remove KV groups and FFN channels, the same count in every layer, in place.

    Args:
        model: a transformers Llama-style causal LM (LlamaForCausalLM and its kin).
        kv_groups_ratio: fraction of KV groups (a KV head + its query heads) to remove
            per layer, rounded to whole groups (1/3 of SmolLM2's 3 groups removes 1).
        ffn_ratio: fraction of FFN channels to remove per layer.
        importance: `magnitude` or `activation` (see the module docstring).
        windows: calibration token ids [n, T] (needed by `activation`).
        ffn_multiple_of: round the kept FFN width to a multiple of this (e.g. 32, a
            4-bit block, so quantization blocks stay whole).

    Returns:
        What changed: heads / KV heads / FFN width before and after, parameters before and
        after, and per layer the kept group and channel indices.

    Raises:
        RecipeError: not a Llama-style decoder, non-uniform layers, an unknown importance,
            or a ratio that leaves no group / channel.

    Example:
        >>> prune_decoder_(model, kv_groups_ratio=0.5, ffn_ratio=0.25)["kv_heads"]  # doctest: +SKIP
        [2, 1]
    """
    layers = decoder_layers(model)
    if importance not in IMPORTANCE:
        raise RecipeError(f"importance {importance!r}: one of {', '.join(IMPORTANCE)}")
    config = model.config
    groups, width = config.num_key_value_heads, config.intermediate_size
    drop_groups = _drop_count(groups, kv_groups_ratio, "KV group")
    drop_ffn = _drop_count(width, ffn_ratio, "FFN channel", ffn_multiple_of)
    _check_describable(config, groups - drop_groups)
    params_before = sum(p.numel() for p in model.parameters())
    heads_before = config.num_attention_heads
    kept: list[dict] = []
    if drop_groups or drop_ffn:
        attention_scores, ffn_scores = IMPORTANCE[importance](model, layers, windows)
        for layer, a_score, f_score in zip(layers, attention_scores, ffn_scores, strict=True):
            keep_groups, keep_ffn = _keep(a_score, drop_groups), _keep(f_score, drop_ffn)
            if drop_groups:
                _prune_attention_(layer.self_attn, keep_groups, config)
            if drop_ffn:
                _prune_mlp_(layer.mlp, keep_ffn)
            kept.append({"kv_groups": keep_groups, "ffn_removed": sorted(
                set(range(width)) - set(keep_ffn))})  # fmt: skip
    head_dim = _head_dim(config)
    per_group = heads_before // groups
    # head_dim is written explicitly: with fewer heads, hidden_size // num_attention_heads
    # would no longer be it
    config.head_dim = head_dim
    config.num_key_value_heads = groups - drop_groups
    config.num_attention_heads = per_group * (groups - drop_groups)
    config.intermediate_size = width - drop_ffn
    decoder_layers(model)  # the config now describes the weights
    return {
        "importance": importance,
        "heads": [heads_before, config.num_attention_heads],
        "kv_heads": [groups, config.num_key_value_heads],
        "intermediate_size": [width, config.intermediate_size],
        "params": [params_before, sum(p.numel() for p in model.parameters())],
        "layers": kept,
    }
