"""Accuracy of a deployed ONNX model, measured on ONNX Runtime (what ships is what counts).

Whole splits are streamed (`Split.chunks`): a lazy split (image files) is decoded a
chunk at a time, and only the logits (rows x classes) are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from compress.data.bundle import Split
from compress.models.signature import InputSignature, Samples, as_feeds, sample_count, slice_samples
from compress.runtime.sessions import make_session


def onnx_predictions(path: str | Path, x: Samples, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX model over `x` (one array, or arrays keyed by input name),
    batched, on the CPU provider (all cores)."""
    session = make_session(path, "cpu", threads=None)
    feeds = as_feeds(x, [i.name for i in session.get_inputs()])
    outputs = [
        session.run(None, slice_samples(feeds, i, i + batch_size))[0]
        for i in range(0, sample_count(feeds), batch_size)
    ]
    return np.concatenate(outputs)


def _feed(inputs: tuple[torch.Tensor, ...], signature: InputSignature | None) -> Samples:
    if signature is not None:
        return signature.feed(inputs)
    (x,) = inputs
    return x.numpy()


def onnx_logits(
    path: str | Path, split: Split, signature: InputSignature | None = None, batch_size: int = 256
) -> np.ndarray:
    """Logits of an ONNX model over every row of `split`, in row order, streamed.

    The same batches as `onnx_predictions(path, split_samples(split, signature))`
    (so the same numbers for an in-memory split), without ever holding the split's
    inputs whole.

    Example:
        >>> logits = onnx_logits("model.onnx", data.test, signature)  # doctest: +SKIP
        >>> logits.shape  # (rows, classes)
    """
    session = make_session(path, "cpu", threads=None)
    names = [i.name for i in session.get_inputs()]
    outputs = [
        session.run(None, as_feeds(_feed(inputs, signature), names))[0]
        for inputs, _ in split.chunks(batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.empty((0, 0), dtype=np.float32)


def split_samples(
    split: Split, signature: InputSignature | None = None, max_rows: int | None = None
) -> Samples:
    """A split's inputs as ONNX Runtime takes them: keyed by the signature's names, or
    the one array of a one-input split. With `max_rows`, only the first `max_rows`
    rows (a lazy split decodes only those): materialize whole splits only when small.
    """
    if max_rows is not None and max_rows < len(split):
        inputs = split.take(torch.arange(max_rows))
    else:
        inputs = split.inputs
    return _feed(inputs, signature)


def onnx_accuracy(
    path: str | Path, split: Split, signature: InputSignature | None = None
) -> float | None:
    """Top-1 accuracy of an ONNX model on a split (streamed); None for a split without
    labels (`split.labeled` is False)."""
    logits = onnx_logits(path, split, signature)
    if not split.labeled:
        return None
    return float((logits.argmax(1) == split.y.numpy()).mean())
