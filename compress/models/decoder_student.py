"""A shallower student of a Llama-style decoder: some of the teacher's layers, chosen by
measurement.

- `layer_importance(model, windows, method=...)`: one score per layer, higher = more
  needed. `perplexity` (default) measures the relative perplexity increase on the
  calibration windows when that layer alone is skipped (one forward per layer: the
  truth, 30 forwards for SmolLM2); `cosine` measures 1 - cos(input, output) of each
  layer's hidden states in one forward (ShortGPT's "block influence": a layer that
  barely turns its input does little; cheap, an estimate).
- `layers_to_keep(scores, keep)`: the `keep` highest-scoring layers in model order.
- `student_from_layers(teacher, layers)`: a new model of the same class holding those
  teacher layers (weights copied) with the teacher's embeddings, final norm and head;
  `num_hidden_layers` updated so `save_pretrained` / `from_pretrained` reload it.

Example:
    >>> scores = layer_importance(teacher, windows)  # doctest: +SKIP
    >>> student = student_from_layers(teacher, layers_to_keep(scores, 20))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

from compress.errors import RecipeError
from compress.pruning.decoder import decoder_layers, iter_windows, run_logits

if TYPE_CHECKING:
    from torch import nn


def window_perplexity(model: nn.Module, windows, batch_size: int = 4) -> float:
    """exp(mean next-token cross-entropy) of `model` over every position of `windows`."""
    import torch.nn.functional as F

    total, count = 0.0, 0
    for ids in iter_windows(windows, batch_size):
        logits = run_logits(model, ids)[:, :-1]
        loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")
        total, count = total + loss.item(), count + ids[:, 1:].numel()
    return math.exp(total / count)


def _skip_perplexity(model: nn.Module, windows) -> list[float]:
    from torch import nn

    base = window_perplexity(model, windows)
    layers = model.model.layers
    scores = []
    try:
        for index in range(len(layers)):
            # the model iterates `layers[:num_hidden_layers]`: a shorter list skips one
            model.model.layers = nn.ModuleList(m for i, m in enumerate(layers) if i != index)
            scores.append(window_perplexity(model, windows) / base - 1.0)
    finally:
        model.model.layers = layers
    return scores


def _cosine(model: nn.Module, windows) -> list[float]:
    import torch

    layers = decoder_layers(model)
    sums = [0.0] * len(layers)
    batches = 0

    def hook(index):
        def record(module, args, kwargs, output):
            # hooks rather than output_hidden_states: the last of those is after the
            # final norm, not the last layer's own output
            before = kwargs.get("hidden_states", args[0] if args else None)
            after = output[0] if isinstance(output, tuple) else output
            cos = torch.nn.functional.cosine_similarity(before, after, dim=-1).mean()
            sums[index] += cos.item()

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True)
               for i, layer in enumerate(layers)]  # fmt: skip
    try:
        for ids in iter_windows(windows):
            run_logits(model, ids, logits=False)
            batches += 1
    finally:
        for handle in handles:
            handle.remove()
    return [1.0 - s / batches for s in sums]


LAYER_IMPORTANCE = {"perplexity": _skip_perplexity, "cosine": _cosine}


def layer_importance(model: nn.Module, windows, method: str = "perplexity") -> list[float]:
    """One score per decoder layer of `model`, measured on `windows`; higher = more needed.

    Args:
        model: a Llama-style causal LM (eval mode).
        windows: calibration token ids [n, T] (never the evaluation text).
        method: `perplexity` (relative perplexity increase when the layer is skipped)
            or `cosine` (1 - cosine similarity of the layer's input and output).

    Example:
        >>> layer_importance(model, windows)[:2]  # doctest: +SKIP
        [3.1, 0.04]
    """
    decoder_layers(model)
    if method not in LAYER_IMPORTANCE:
        raise RecipeError(f"layer importance {method!r}: one of {', '.join(LAYER_IMPORTANCE)}")
    return LAYER_IMPORTANCE[method](model, windows)


def layers_to_keep(scores: list[float], keep: int, always: tuple[int, ...] = ()) -> list[int]:
    """The `keep` layers with the highest `scores`, plus `always`, in model order.

    Example:
        >>> layers_to_keep([5.0, 0.1, 0.3, 2.0], 2)
        [0, 3]
    """
    if not 0 < keep <= len(scores):
        raise RecipeError(f"keep {keep} layers: must be in 1..{len(scores)}")
    chosen = set(always)
    for index in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if len(chosen) >= keep:
            break
        chosen.add(index)
    return sorted(chosen)


def student_from_layers(teacher: nn.Module, layers: list[int]) -> nn.Module:
    """A new model of `teacher`'s class made of the teacher `layers` (in that order),
    with copies of its embeddings, final norm and LM head.

    Args:
        teacher: a Llama-style causal LM (pruned or not: its config describes it).
        layers: teacher layer indices, e.g. `[0, 1, 3, 5]`; each at most once.

    Returns:
        The student in the teacher's mode and dtype; `config.num_hidden_layers` =
        `len(layers)`; the teacher is unchanged.

    Example:
        >>> student = student_from_layers(teacher, [0, 2, 4])  # doctest: +SKIP
        >>> student.config.num_hidden_layers  # doctest: +SKIP
        3
    """
    import torch

    count = len(decoder_layers(teacher))
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < count for i in layers):
        raise RecipeError(
            f"student layers {layers}: distinct indices of the teacher's {count} layers"
        )
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):  # per-layer attention kinds follow the layers
        config.layer_types = [config.layer_types[i] for i in layers]
    dtype = next(teacher.parameters()).dtype
    with torch.device(next(teacher.parameters()).device):
        student = type(teacher)(config).to(dtype)
    state = {}
    prefix = "model.layers."
    for name, tensor in teacher.state_dict().items():
        if not name.startswith(prefix):
            state[name] = tensor
            continue
        index, rest = name[len(prefix) :].split(".", 1)
        if int(index) in layers:
            state[f"{prefix}{layers.index(int(index))}.{rest}"] = tensor
    student.load_state_dict(state, strict=True)
    if getattr(config, "tie_word_embeddings", False):
        student.tie_weights()
    return student.train(teacher.training)
