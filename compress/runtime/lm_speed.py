"""Decode speed of exported decoders through onnxruntime-genai, and greedy generation.

Speed is measured the way a user runs the model: onnxruntime-genai's Generator on
the exported folder, its KV cache in one preallocated buffer. Models are timed
interleaved (A B A B ...), every one in every round, because timings on a shared
machine drift between minutes; a ratio is the median of per-round ratios (as
`runtime.latency`). Each round generates exactly `generate` new tokens:
min_length = max_length keeps EOS from ending a round early, and the count is
checked.

Prefill is the time to the first new token (`append_tokens` of the prompt, then
the first `generate_next_token`, which picks the token from the prompt's logits);
decode is the remaining `generate - 1` steps, one forward pass each, so decode
tokens/s = batch x (generate - 1) / decode seconds (genai's benchmark_e2e counts
the same way).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import StageError, UsageError
from compress.runtime.machine import LoadMeter


@dataclass
class DecodeStats:
    """Generation speed of one exported folder at one profile.

    Attributes:
        folder: the exported folder.
        prompt_tokens, generate, batch, threads: the profile.
        prefill_ms: median time to the first new token, milliseconds.
        decode_tokens_per_s: median decode rate after it (all sequences of the batch).
        rounds: per round: prefill_ms, decode_ms, decode_tokens_per_s, other_load
            (cores' worth of CPU other processes used meanwhile; None if unknown).
    """

    folder: str
    prompt_tokens: int
    generate: int
    batch: int
    threads: int
    prefill_ms: float = float("nan")
    decode_tokens_per_s: float = float("nan")
    rounds: list[dict[str, float | None]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decode_speed(
    folders: list[Path],
    prompt_ids: list[int],
    *,
    generate: int = 128,
    batch: int = 1,
    threads: int = 1,
    rounds: int = 5,
    warmup: int = 1,
) -> list[DecodeStats]:
    """Time greedy generation of every folder, interleaved, `rounds` times.

    Args:
        folders: exported folders (model.onnx + genai_config.json + tokenizer).
        prompt_ids: the prompt's token ids; every sequence of the batch is this prompt.
        generate: new tokens per sequence and round (>= 2), exactly.
        batch: sequences generated together.
        threads: intra-op threads, given to onnxruntime-genai as a config overlay
            (the folders are not written: a run's final/ keeps its hashes).
        rounds: timed rounds; each times every folder once, in the order given.
        warmup: untimed rounds first (allocations, kernel caches).

    Returns:
        One DecodeStats per folder, in order.

    Example:
        >>> fp32, int4 = decode_speed([Path("fp32"), Path("int4")], ids[:64])  # doctest: +SKIP
        >>> decode_speedup(fp32, int4)["median"]  # doctest: +SKIP
        3.4
    """
    if generate < 2 or not prompt_ids or rounds < 1:
        raise UsageError(
            f"decode speed needs generate >= 2, a non-empty prompt and rounds >= 1; got "
            f"generate={generate}, {len(prompt_ids)} prompt tokens, rounds={rounds}"
        )
    models = [load_genai_model(folder, threads) for folder in folders]
    stats = [DecodeStats(str(f), len(prompt_ids), generate, batch, threads) for f in folders]
    prompt = np.tile(np.asarray(prompt_ids, dtype=np.int32), (batch, 1))
    meter = LoadMeter()
    for index in range(warmup + rounds):
        for model, record in zip(models, stats, strict=True):
            meter.start()
            prefill_ns, decode_ns = _time_generation(model, prompt, generate, record.folder)
            if index < warmup:
                continue
            record.rounds.append(
                {
                    "prefill_ms": prefill_ns / 1e6,
                    "decode_ms": decode_ns / 1e6,
                    "decode_tokens_per_s": batch * (generate - 1) * 1e9 / decode_ns,
                    "other_load": meter.other_share(),
                }
            )
    for record in stats:
        record.prefill_ms = statistics.median(r["prefill_ms"] for r in record.rounds)
        record.decode_tokens_per_s = statistics.median(
            r["decode_tokens_per_s"] for r in record.rounds
        )
    return stats


def decode_speedup(base: DecodeStats, new: DecodeStats, *, of: str = "decode") -> dict:
    """Per-round speed-up of `new` over `base` from one `decode_speed` call: median,
    min, max and the number of rounds (the shape of `report.records.Spread`).

    Args:
        base, new: measured in the same call (their rounds are paired).
        of: "decode" (tokens/s ratio) or "prefill" (base ms / new ms).

    Example:
        >>> decode_speedup(fp32, int4)  # doctest: +SKIP
        {'median': 3.4, 'min': 3.1, 'max': 3.6, 'rounds': 5}
    """
    if of == "decode":
        pairs = [(n["decode_tokens_per_s"], b["decode_tokens_per_s"])
                 for b, n in zip(base.rounds, new.rounds)]  # fmt: skip
    elif of == "prefill":
        pairs = [(b["prefill_ms"], n["prefill_ms"]) for b, n in zip(base.rounds, new.rounds)]
    else:
        raise ValueError(f"of must be 'decode' or 'prefill', got {of!r}")
    from compress.runtime.latency import ratio_spread

    return ratio_spread([top / bottom for top, bottom in pairs if bottom > 0])


def generate_ids(folder: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation of `prompt_ids` by onnxruntime-genai alone: the new token
    ids, at most `max_new_tokens` (fewer where the model emits its EOS).

    Example:
        >>> generate_ids(Path("run/final"), [504, 3250], 3)  # doctest: +SKIP
        [28, 253, 1812]
    """
    return _greedy(load_genai_model(folder, threads=1), prompt_ids, max_new_tokens, folder)


def generate_text(folder: Path, prompt: str, max_new_tokens: int) -> str:
    """Greedy continuation of `prompt` by onnxruntime-genai alone (the folder's own
    tokenizer): the new text, without the prompt.

    Example:
        >>> generate_text(Path("run/final"), "To be, or not to be", 20)  # doctest: +SKIP
        ', that is the question:'
    """
    import onnxruntime_genai as og

    model = load_genai_model(folder, threads=1)
    tokenizer = og.Tokenizer(model)
    prompt_ids = [int(token) for token in tokenizer.encode(prompt)]
    new = _greedy(model, prompt_ids, max_new_tokens, folder)
    return tokenizer.decode(np.asarray(new, dtype=np.int32))


def _greedy(model, prompt_ids: list[int], max_new_tokens: int, folder) -> list[int]:
    """The new token ids of one greedy generation (batch 1, stops at EOS)."""
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    total = len(prompt_ids) + max_new_tokens
    params.set_search_options(max_length=total, do_sample=False, num_beams=1)
    try:
        generator = og.Generator(model, params)
        generator.append_tokens(np.asarray([prompt_ids], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
    except Exception as exc:  # onnxruntime-genai raises RuntimeError for every failure
        raise StageError(f"{folder}: onnxruntime-genai could not generate: {exc}") from exc
    return [int(token) for token in generator.get_sequence(0)[len(prompt_ids) :]]


def load_genai_model(folder: Path, threads: int):
    """An onnxruntime_genai.Model of `folder` with `threads` intra-op threads and one
    inter-op thread, set through a config overlay."""
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        raise UsageError(
            f"generation needs onnxruntime-genai ({exc}): pip install 'compress[llm]'"
        ) from exc
    options = {"intra_op_num_threads": int(threads), "inter_op_num_threads": 1}
    try:
        config = og.Config(str(folder))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
        return og.Model(config)
    except Exception as exc:  # onnxruntime-genai raises RuntimeError for every failure
        raise StageError(f"{folder}: onnxruntime-genai cannot load it: {exc}") from exc


def _time_generation(model, prompt: np.ndarray, generate: int, folder: str) -> tuple[int, int]:
    """(prefill ns, decode ns) of one greedy generation of exactly `generate` tokens."""
    import onnxruntime_genai as og

    total = prompt.shape[1] + generate
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=total, min_length=total, do_sample=False,
                              num_beams=1, batch_size=prompt.shape[0])  # fmt: skip
    try:
        generator = og.Generator(model, params)
        start = time.perf_counter_ns()
        generator.append_tokens(prompt)
        generator.generate_next_token()
        first = time.perf_counter_ns()
        while not generator.is_done():
            generator.generate_next_token()
        end = time.perf_counter_ns()
    except Exception as exc:  # onnxruntime-genai raises RuntimeError for every failure
        raise StageError(f"{folder}: onnxruntime-genai could not generate: {exc}") from exc
    produced = [len(generator.get_sequence(row)) - prompt.shape[1] for row in range(len(prompt))]
    if produced != [generate] * len(prompt):
        raise StageError(f"{folder}: generated {produced} new tokens per sequence, not {generate}")
    return first - start, end - first
