"""In-memory datasets as tensors, with the contract that turns raw data into input."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class Split:
    """One split: normalised float32 inputs and int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class RawData:
    """What a data source returns: raw arrays plus how to scale them to [0, 1]-ish.

    `x_test`/`y_test` are the source's official test split when it has one;
    otherwise a stratified share of the training arrays becomes the test split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    scale: float = 1.0
    description: str = ""


@dataclass
class DataBundle:
    """Train/val/test splits plus everything needed to reproduce the input tensor.

    The input contract is `x = (raw * scale - mean[c]) / std[c]`, layout NCHW
    (or NF for flat features), float32.
    """

    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    scale: float
    mean: list[float]
    std: list[float]
    description: str = ""
    identity: str = field(default="")

    def input_contract(self, input_name: str = "input") -> dict[str, Any]:
        """The `final.input` entry of report.json: enough to feed the model without us."""
        return {
            "name": input_name,
            "shape": ["batch", *self.input_shape],
            "dtype": "float32",
            "layout": "NCHW" if len(self.input_shape) == 3 else "NF",
            "preprocessing": {
                "formula": "(raw * scale - mean[c]) / std[c]",
                "scale": self.scale,
                "mean": self.mean,
                "std": self.std,
            },
            "output": {"name": "logits", "shape": ["batch", self.num_classes]},
        }


def content_identity(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' bytes and shapes, naming the data for caches/reports."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
