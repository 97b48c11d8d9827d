"""User models for the failure tests: fine on rank 0, broken on rank 1."""

from __future__ import annotations

import os
import signal

from torch import nn


def killed_on_rank1(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Rank 1 dies with SIGKILL when it builds the model for its first training job."""
    if os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    return _mlp(num_classes, input_shape)


def raises_on_rank1(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Rank 1's copy of the user's code raises (a missing file on one node, say)."""
    if os.environ.get("RANK") == "1":
        raise FileNotFoundError("/data/only-on-node-0.bin")
    return _mlp(num_classes, input_shape)


def _mlp(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    features = 1
    for dim in input_shape:
        features *= dim
    return nn.Sequential(
        nn.Flatten(), nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, num_classes)
    )
