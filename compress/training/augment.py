"""Batch augmentation for image training: random shifts and horizontal flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 2 pixels (zero padded) and, for crop-flip, h-flips."""
    if kind == "none" or x.ndim != 4:
        return x
    pad = 2
    padded = F.pad(x, (pad, pad, pad, pad))
    height, width = x.shape[2], x.shape[3]
    offsets = torch.randint(0, 2 * pad + 1, (x.shape[0], 2), generator=generator)
    out = torch.empty_like(x)
    for dy in range(2 * pad + 1):  # group samples by offset: 25 slices, not one per sample
        for dx in range(2 * pad + 1):
            rows = ((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).nonzero().flatten()
            if len(rows):
                out[rows] = padded[rows, :, dy : dy + height, dx : dx + width]
    if kind == "crop-flip":
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).nonzero().flatten()
        out[flip] = out[flip].flip(-1)
    return out
