"""Datasets as splits, with the contract that turns raw data into input.

A split is in memory (tensors) or lazy (a `RowReader` decodes rows on demand, e.g.
image files): consumers see one `Split` type either way. Small uses read rows with
`take`; anything that walks a whole split streams it with `chunks` (or `batches`
for a training epoch's plan), so peak memory does not grow with the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from compress.errors import DataError
from compress.models.signature import InputSignature

Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor]  # (inputs in forward order, labels)


class RowReader(Protocol):
    """Decodes rows of a lazy split on demand (`data.image_folder.ImageRows`).

    Attributes:
        shapes: each input's per-row shape, e.g. ((3, 224, 224),).
        num_workers: DataLoader worker processes that decode batches in parallel
            (0: in this process).
    """

    shapes: tuple[tuple[int, ...], ...]
    num_workers: int

    def __len__(self) -> int: ...

    def read(self, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """The inputs of `rows` (positions in this split), stacked in that order.

        Raises:
            DataError: a row that cannot be decoded, naming its file.
        """
        ...


@dataclass
class _Failed:
    """A DataError raised in a DataLoader worker, carried back as a value so the main
    process raises it with its own one-line message (not a worker traceback)."""

    message: str


class _PlannedBatches(torch.utils.data.Dataset):
    """Item i is batch `plan[i]`, decoded whole by the reader (one worker per batch)."""

    def __init__(self, reader: RowReader, plan: Sequence[torch.Tensor]):
        self.reader, self.plan = reader, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int):
        try:
            return self.reader.read(self.plan[i].tolist())
        except DataError as exc:
            return _Failed(str(exc))


def _as_is(item):  # a module-level function: DataLoader workers may pickle it
    return item


@dataclass
class Split:
    """One split: the model's inputs and int64 labels.

    `x` is one tensor (normalised float32 images or features) or, for a model with
    several inputs, a tuple of tensors in `forward` order (token ids and mask). A
    lazy split has `x = None` and a `reader` that decodes rows on demand.
    `labeled = False` marks images without labels: `y` is -1 everywhere.

    Example:
        >>> split = Split(torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64))
        >>> [len(y) for _, y in split.chunks(2)]
        [2, 2, 1]
    """

    x: torch.Tensor | tuple[torch.Tensor, ...] | None
    y: torch.Tensor
    # tokens per row of a padded text split (None otherwise): training draws
    # length-bucketed batches from it and trims each batch's padding columns
    lengths: torch.Tensor | None = None
    reader: RowReader | None = None
    labeled: bool = True

    def __post_init__(self) -> None:
        if self.x is None and self.reader is None:
            raise TypeError("a Split needs its tensors (x) or a reader")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def lazy(self) -> bool:
        """True when rows are decoded on demand (no tensors held)."""
        return self.x is None

    @property
    def input_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each input's per-row shape, without decoding anything."""
        if self.x is None:
            return tuple(tuple(s) for s in self.reader.shapes)
        return tuple(tuple(int(d) for d in t.shape[1:]) for t in self.inputs)

    @property
    def inputs(self) -> tuple[torch.Tensor, ...]:
        """The inputs as a tuple, whatever their count.

        On a lazy split this decodes every row into memory: for small splits only;
        walk big ones with `chunks`.
        """
        if self.x is None:
            parts = [inputs for inputs, _ in self.chunks(256)]
            if not parts:
                return tuple(torch.empty(0, *s) for s in self.reader.shapes)
            return tuple(torch.cat(column) for column in zip(*parts))
        return self.x if isinstance(self.x, tuple) else (self.x,)

    def take(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Rows `index` of every input (decoded, on a lazy split)."""
        if self.x is None:
            return self.reader.read(torch.as_tensor(index).reshape(-1).tolist())
        return tuple(x[index] for x in self.inputs)

    def chunks(self, batch_size: int = 256) -> Iterator[Batch]:
        """(inputs, labels) of consecutive rows, `batch_size` at a time, in row order.

        The one way to walk a whole split: tensor slices in memory; a lazy split
        decodes chunk by chunk (`batches`), so at most a few chunks are alive at once.
        """
        count = len(self)
        if self.x is not None:
            for start in range(0, count, batch_size):
                stop = start + batch_size
                yield tuple(t[start:stop] for t in self.inputs), self.y[start:stop]
            return
        plan = [torch.arange(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]
        yield from self.batches(plan)

    def batches(self, plan: Sequence[torch.Tensor]) -> Iterator[Batch]:
        """(inputs, labels) of each batch of row indices in `plan`, in plan order.

        A lazy split decodes them in a torch DataLoader with the reader's
        `num_workers` (each worker decodes whole batches; at most
        2 x num_workers batches are decoded ahead).
        """
        if self.x is not None:
            for index in plan:
                yield self.take(index), self.y[index]
            return
        workers = int(getattr(self.reader, "num_workers", 0))
        loader = torch.utils.data.DataLoader(
            _PlannedBatches(self.reader, plan),
            batch_size=None,
            shuffle=False,
            num_workers=workers,
            collate_fn=_as_is,
        )
        for index, inputs in zip(plan, loader):
            if isinstance(inputs, _Failed):
                raise DataError(inputs.message)
            yield tuple(inputs), self.y[index]


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
    labeled: bool = True  # False: no labels (every y is -1): calibrate, distil with alpha = 1
    class_names: list[str] | None = None  # class index -> name, where the source has names
    # extra entries of the contract's `preprocessing` (an image folder's decode, resize,
    # crop and where mean/std came from)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    # what the model does with the inputs: "classification" (one row -> class logits) or
    # "causal-lm" (token windows -> next-token logits at every position; data.text_corpus)
    task: str = "classification"

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
            # a causal LM's logits: one row of vocabulary logits per position
            per_row = ["sequence"] if self.task == "causal-lm" else []
            return {
                **first,
                "inputs": signature.contract(),
                "layout": "NS (batch, sequence)",
                "preprocessing": self.text.contract(),
                "output": {
                    "name": signature.output,
                    "shape": ["batch", *per_row, self.num_classes],
                },
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
                **self.preprocessing,
            },
            "output": self._output(signature),
        }

    def _output(self, signature: InputSignature) -> dict[str, Any]:
        out: dict[str, Any] = {"name": signature.output, "shape": ["batch", self.num_classes]}
        if self.class_names is not None:
            out["classes"] = list(self.class_names)  # logit i is class_names[i]
        if not self.labeled:
            out["labeled"] = False  # the data had no labels: classes come from the model
        return out


def content_identity(*arrays: np.ndarray) -> str:
    """A short hash of the arrays' bytes and shapes, naming the data for caches/reports."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
