"""A decoder's quality on ONNX Runtime: perplexity, and agreement / KL against a reference.

Measured on the deployed graph, window by window (empty past, attention mask of
ones), so at most two windows' logits are held at once: SmolLM2's 49,152-token
vocabulary makes one 512-token window's logits 100 MB, and 32 windows 3.2 GB.
Every window scores its T - 1 next-token predictions (position t predicts token
t + 1); agreement and KL are taken over the same positions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compress.errors import DataError
from compress.runtime.lm_io import LOGITS, DecoderIO


@dataclass
class LMQuality:
    """Quality of one decoder on a set of windows.

    Attributes:
        perplexity: exp(mean next-token negative log-likelihood).
        tokens: predictions scored (windows x (window length - 1)).
        agreement: share of positions whose top-1 token equals the reference's
            (None without a reference).
        kl_mean: mean KL(reference || model) per position, in nats (None without one).
    """

    perplexity: float
    tokens: int
    agreement: float | None = None
    kl_mean: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def lm_quality(
    onnx_path: str | Path,
    windows: np.ndarray,
    *,
    reference: str | Path | None = None,
    threads: int = 1,
) -> LMQuality:
    """Perplexity of the decoder `onnx_path` over `windows`, and side by side with
    `reference` (another exported model.onnx) top-1 agreement and mean KL.

    Args:
        onnx_path: an exported decoder (genai_config.json beside it).
        windows: int64 token ids [n, T], T >= 2.
        reference: the model the agreement and KL are taken against (the baseline).
        threads: intra-op threads of each session.

    Example:
        >>> q = lm_quality("int4/model.onnx", windows, reference="fp32/model.onnx")  # doctest:+SKIP
        >>> round(q.perplexity, 2), q.agreement  # doctest: +SKIP
        (41.03, 0.96)
    """
    if reference is None:
        return lm_quality_side_by_side([onnx_path], windows, threads=threads)[0]
    return lm_quality_side_by_side([onnx_path], windows, reference=reference, threads=threads)[1]


def lm_quality_side_by_side(
    onnx_paths: list[str | Path],
    windows: np.ndarray,
    *,
    reference: str | Path | None = None,
    threads: int = 1,
) -> list[LMQuality]:
    """`lm_quality` of several decoders against one reference, which runs once per
    window instead of once per model.

    Returns:
        With a reference: its own LMQuality (agreement 1, KL 0) first, then one per
        path; without one: one per path (agreement and KL None).

    Example:
        >>> fp32, int4, int8 = lm_quality_side_by_side(  # doctest: +SKIP
        ...     ["int4/model.onnx", "int8/model.onnx"], windows, reference="fp32/model.onnx")
    """
    from compress.runtime.sessions import make_session

    windows = np.asarray(windows)
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.shape[0] == 0:
        raise DataError(f"perplexity needs token windows [n, T >= 2], got shape {windows.shape}")
    paths = list(onnx_paths) if reference is None else [reference, *onnx_paths]
    runners = [_Runner(make_session(path, "cpu", threads=threads), path) for path in paths]
    sums = np.zeros((len(paths), 3))  # per model: nll, agreeing positions, KL
    for window in windows.astype(np.int64):
        targets = window[1:]
        ref_top, ref_log_probs = None, None
        for index, runner in enumerate(runners):
            logits = runner.logits(window)[:-1]
            log_probs = _log_softmax(logits)
            top = logits.argmax(-1)
            del logits
            sums[index, 0] -= log_probs[np.arange(targets.size), targets].sum(dtype=np.float64)
            if reference is None:
                continue
            if index == 0:
                ref_top, ref_log_probs = top, log_probs
            sums[index, 1] += int((top == ref_top).sum())
            sums[index, 2] += _kl_sum(ref_log_probs, log_probs)
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    return [
        LMQuality(
            perplexity=math.exp(nll / tokens),
            tokens=tokens,
            agreement=None if reference is None else float(agree / tokens),
            kl_mean=None if reference is None else float(kl / tokens),
        )
        for nll, agree, kl in sums
    ]


class _Runner:
    """One session and its decoder layout: the logits [T, vocab] of one window."""

    def __init__(self, session, path) -> None:
        self.session = session
        self.io = DecoderIO.from_session(session, path)

    def logits(self, window: np.ndarray) -> np.ndarray:
        feed = self.io.feed(window[None, :])
        return self.session.run([LOGITS], feed)[0][0]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32, the normaliser summed in float64 (a 49k-term
    sum in float32 would lose the digits perplexity is compared on)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    normaliser = np.log(np.exp(shifted).sum(axis=-1, keepdims=True, dtype=np.float64))
    return (shifted - normaliser).astype(np.float32)


def _kl_sum(ref_log_probs: np.ndarray, log_probs: np.ndarray) -> float:
    """sum over positions of KL(ref || model) = sum_v p_ref (log p_ref - log p_model)."""
    terms = np.exp(ref_log_probs) * (ref_log_probs - log_probs)
    return float(terms.sum(dtype=np.float64))
