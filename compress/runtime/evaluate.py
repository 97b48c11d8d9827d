"""Accuracy of a deployed ONNX model, measured on ONNX Runtime (what ships is what counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.data.bundle import Split
from compress.runtime.sessions import make_session


def onnx_predictions(path: str | Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of an ONNX model over `x`, batched, on the CPU provider (all cores)."""
    session = make_session(path, "cpu", threads=None)
    name = session.get_inputs()[0].name
    outputs = [
        session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs)


def onnx_accuracy(path: str | Path, split: Split) -> float:
    """Top-1 accuracy of an ONNX model on a split."""
    logits = onnx_predictions(path, split.x.numpy())
    return float((logits.argmax(1) == split.y.numpy()).mean())
