"""Fidelity to a reference model without labels: top-1 agreement and mean KL.

Where the data has no labels (calibration images only), a compressed model is judged
by how closely it follows the model it came from; where it has labels, the same two
numbers sit beside accuracy and say how much of the model's behaviour changed, not
only whether the right answers did.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable for large logits)."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def fidelity(reference: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """Top-1 agreement and mean KL(reference || model) over rows of logits.

    Example:
        >>> out = fidelity(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
        >>> out["agreement"]
        0.5
    """
    if reference.shape != logits.shape:
        raise ValueError(f"logits of shape {logits.shape} against reference {reference.shape}")
    agreement = float(np.mean(reference.argmax(axis=1) == logits.argmax(axis=1)))
    log_p, log_q = log_softmax(reference), log_softmax(logits)
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
    return {"agreement": agreement, "kl_mean": float(np.mean(kl))}
