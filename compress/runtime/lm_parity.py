"""Does an exported decoder compute what its torch model computes, KV cache included?

Logits and the present KV are compared at two prompt lengths with an empty past,
and once after a non-empty past: torch's own cache from a prefix is fed to ONNX
Runtime as `past_key_values.*` with the rest of the sequence as input, which is how
onnxruntime-genai decodes. A batch of 2 keeps the batch axis honest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.errors import StageError
from compress.runtime.lm_io import LOGITS, DecoderIO


def check_lm_parity(
    model,
    onnx_path: str | Path,
    *,
    seed: int = 0,
    prompt_lengths: tuple[int, ...] = (7, 19),
    past_length: int = 5,
    batch: int = 2,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> float:
    """Compare ONNX Runtime's logits and present KV with torch's; return the largest
    absolute difference over every case.

    Args:
        model: the transformers causal LM that was exported (eval mode, fp32).
        onnx_path: its exported model.onnx (genai_config.json beside it).
        seed: seed of the random token ids.
        prompt_lengths: sequence lengths run with an empty past.
        past_length: the prefix length of the cases with a past (0 skips them): one
            new token at `batch` (a decode step) and `prompt_lengths[0]` new tokens
            at batch 1 (ONNX Runtime's CPU attention continues a batch one token
            at a time).
        batch: sequences per case.
        atol, rtol: the tolerance, as numpy.allclose.

    Raises:
        StageError: a mismatch (case, tensor, max |diff| and its index) or a shape
            the graph rejects; the same type `onnx_export.check_parity` raises.

    Example:
        >>> check_lm_parity(model, "onnx/model.onnx")  # doctest: +SKIP
        3.1e-06
    """
    from compress.runtime.sessions import make_session

    session = make_session(onnx_path, "cpu", threads=1)
    io = DecoderIO.from_session(session, onnx_path)
    model = model.eval()
    vocab = int(model.config.vocab_size)
    rng = np.random.default_rng(seed)
    cases = [(batch, 0, length) for length in prompt_lengths]
    if past_length:
        # ONNX Runtime's CPU GroupQueryAttention takes a past with several new tokens
        # only at batch 1 ("batch_size must be 1 when sequence_length > 1 and past
        # context is given"): a batch continues one token at a time, as genai decodes
        cases += [(batch, past_length, 1), (1, past_length, prompt_lengths[0])]
    worst = 0.0
    for rows, past_len, length in cases:
        ids = rng.integers(0, vocab, size=(rows, past_len + length), dtype=np.int64)
        label = f"batch {rows} past {past_len} sequence {length}"
        expected, past = _torch_run(model, ids, past_len, io)
        try:
            got = session.run(list(expected), io.feed(ids[:, past_len:], past))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise StageError(f"{onnx_path}: the ONNX decoder fails at {label}: {exc}") from exc
        for (name, want), have in zip(expected.items(), got, strict=True):
            worst = max(worst, _compare(name, want, have, label, atol, rtol))
    return worst


def _torch_run(model, ids: np.ndarray, past_len: int, io: DecoderIO):
    """torch's logits and present KV for `ids[:, past_len:]` after the cache of
    `ids[:, :past_len]`, keyed by the graph's output names; and that past as the
    graph's feed (None when `past_len` is 0)."""
    import torch

    with torch.no_grad():
        cache, past = None, None
        if past_len:
            prefix = model(input_ids=torch.from_numpy(ids[:, :past_len]), use_cache=True)
            cache = prefix.cache
            past = dict(zip(io.past, _cache_arrays(cache), strict=True))
        out = model(input_ids=torch.from_numpy(ids[:, past_len:]), cache=cache, use_cache=True)
    expected = {LOGITS: out.logits.numpy()}
    expected.update(zip(io.present, _cache_arrays(out.cache), strict=True))
    return expected, past


def _cache_arrays(cache) -> list[np.ndarray]:
    """A transformers cache as arrays in the graph's order: layer 0 key, layer 0
    value, layer 1 key, ... each [batch, kv_heads, length, head_dim]."""
    arrays = []
    for layer in cache.layers:
        arrays += [layer.keys.numpy().copy(), layer.values.numpy().copy()]
    return arrays


def _compare(name: str, want: np.ndarray, have: np.ndarray, label: str, atol, rtol) -> float:
    """max |have - want|; raise StageError where the tolerance is exceeded."""
    if have.shape != want.shape:
        raise StageError(f"ONNX {name} has shape {have.shape}, torch {want.shape} at {label}")
    diff = np.abs(have - want)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.allclose(have, want, atol=atol, rtol=rtol):
        where = tuple(int(i) for i in np.unravel_index(int(np.argmax(diff)), diff.shape))
        raise StageError(
            f"ONNX/torch decoder parity failed at {label}: {name} max |diff| = {worst:.3g} "
            f"at index {where} (torch {want[where]:.6g}, ONNX {have[where]:.6g}), "
            f"exceeds atol {atol} + rtol {rtol}"
        )
    return worst
