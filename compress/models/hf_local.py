"""What the Hugging Face families (hf-encoder, hf-causal-lm) share: loading offline, and a
state dict of some layers renumbered.

Example:
    >>> renumber_layers({"model.layers.3.w": 1, "model.layers.1.w": 2, "lm_head.w": 3},
    ...                 [3], prefix="model.layers.")
    {'model.layers.0.w': 1, 'lm_head.w': 3}
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def offline() -> None:
    """Nothing may reach a hub at run time: every load is from a local folder. Its
    progress bars and notes stay out of the user's terminal."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


def renumber_layers(
    state: dict[str, T], layers: list[int], *, prefix: str, drop: tuple[str, ...] = ()
) -> dict[str, T]:
    """`state` with layer `layers[i]` (keys `{prefix}{index}.…`) renamed to layer i, the
    other layers and keys starting with any of `drop` left out; every other key as it is.
    Works on any dict keyed by parameter name (weights, GGUF blocks)."""
    position = {str(source): str(target) for target, source in enumerate(layers)}
    out = {}
    for key, value in state.items():
        if key.startswith(drop) and drop:
            continue
        if key.startswith(prefix):
            index, _, rest = key[len(prefix) :].partition(".")
            if index not in position:
                continue
            key = f"{prefix}{position[index]}.{rest}"
        out[key] = value
    return out
