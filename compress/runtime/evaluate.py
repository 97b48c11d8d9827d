"""Accuracy of a deployed ONNX model, measured on ONNX Runtime (what ships is what counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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


def split_samples(split: Split, signature: InputSignature | None = None) -> Samples:
    """A split's inputs as ONNX Runtime takes them: keyed by the signature's names, or
    the one array of a one-input split."""
    if signature is not None:
        return signature.feed(split.inputs)
    (x,) = split.inputs
    return x.numpy()


def onnx_logits(
    path: str | Path, split: Split, signature: InputSignature | None = None, batch_size: int = 256
) -> np.ndarray:
    """Logits of an ONNX model over a whole split."""
    return onnx_predictions(path, split_samples(split, signature), batch_size)


def onnx_accuracy(path: str | Path, split: Split, signature: InputSignature | None = None) -> float:
    """Top-1 accuracy of an ONNX model on a split."""
    logits = onnx_predictions(path, split_samples(split, signature))
    return float((logits.argmax(1) == split.y.numpy()).mean())
