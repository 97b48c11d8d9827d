"""In-memory datasets as tensors, with the contract that turns raw data into input."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from compress.models.signature import InputSignature


@dataclass
class Split:
    """One split: the model's inputs and int64 labels.

    `x` is one tensor (normalised float32 images or features) or, for a model with
    several inputs, a tuple of tensors in `forward` order (token ids and mask).
    """

    x: torch.Tensor | tuple[torch.Tensor, ...]
    y: torch.Tensor
    # tokens per row of a padded text split (None otherwise): training draws
    # length-bucketed batches from it and trims each batch's padding columns
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The inputs as a tuple, whatever their count."""
        return self.x if isinstance(self.x, tuple) else (self.x,)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows `index` of every input."""
        return tuple(x[index] for x in self.inputs)


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
    origin: str = ""  # where the arrays came from, first in every data error ("npz x.npz")


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
    inputs: InputSignature | None = None  # set by sources whose samples are not one tensor
    warnings: list[str] = field(default_factory=list)  # found at load time, for the report
    text: Any = None  # data.text.TextInfo for tokenized texts: how to tokenize, what to ship

    @property
    def signature(self) -> InputSignature:
        """What a model fed from this data takes (one image tensor unless set)."""
        return self.inputs or InputSignature.image(self.input_shape)

    def input_contract(self, signature: InputSignature | None = None) -> dict[str, Any]:
        """The `final.input` entry of report.json: enough to feed the model without us.

        A one-input model keeps the flat keys (name, shape, dtype); every model also
        lists `inputs`, one entry per named input.
        """
        signature = signature or self.signature
        first = signature.contract()[0]
        if self.text is not None:  # token ids: the tokenizer is the preprocessing
            return {
                **first,
                "inputs": signature.contract(),
                "layout": "NS (batch, sequence)",
                "preprocessing": self.text.contract(),
                "output": {"name": signature.output, "shape": ["batch", self.num_classes]},
            }
        return {
            **first,
            "inputs": signature.contract(),
            "layout": "NCHW" if len(self.input_shape) == 3 else "NF",
            "preprocessing": {
                "formula": "(raw * scale - mean[c]) / std[c]",
                "scale": self.scale,
                "mean": self.mean,
                "std": self.std,
            },
            "output": {"name": signature.output, "shape": ["batch", self.num_classes]},
        }


def content_identity(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' bytes and shapes, naming the data for caches/reports."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
