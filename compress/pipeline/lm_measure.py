"""The measurement of a language model's deployed folder (task `causal-lm`).

A causal LM ships as a folder (model.onnx with its KV cache, genai_config.json and the
tokenizer: `compress.runtime.lm_export`). Its figures, on the test windows and the
recipe's generation profile (`[runtime.generation]`):

- perplexity, and beside the baseline's file window by window: next-token top-1
  agreement and mean KL (`runtime.lm_quality`); `perplexity_increase` is relative to
  the baseline's perplexity (0.01: 1% higher);
- prefill ms and decode tokens/s through onnxruntime-genai, interleaved with the
  baseline's and the stage's input's folders (A B C A B C, `runtime.lm_speed`); the
  decode speed-ups are the stage's `speedup` / `speedup_vs_input`, so `speedup_min`,
  `speedup_vs_input_min` and the slower-than-input flag read them unchanged; the
  latency entry is milliseconds per decoded token (so latency budgets read that);
- size: the folder's model files (model.onnx and any external data), not the tokenizer.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from compress.artifacts import sha256_file
from compress.models.stats import count_macs, count_params
from compress.report.records import Latency, Metrics, Profile, Spread

# A stage whose perplexity exceeds its input's by more than this (relative) is flagged:
# perplexity on ONNX Runtime is deterministic, so only real changes pass this.
PERPLEXITY_TOLERANCE = 1e-4


def model_bytes(onnx_path: Path) -> int:
    """Bytes of the model files of a deployed folder: model.onnx and its external data."""
    files = [onnx_path, *onnx_path.parent.glob(onnx_path.name + ".data")]
    return sum(path.stat().st_size for path in files if path.is_file())


def test_windows(split) -> np.ndarray:
    """The token windows of a text-corpus split, int64 (n, window)."""
    ids = split.inputs[0]
    return ids.numpy().astype(np.int64) if hasattr(ids, "numpy") else np.asarray(ids, np.int64)


def prompt_ids(windows: np.ndarray, length: int) -> list[int]:
    """The first `length` tokens of the split (across windows when one is shorter)."""
    flat = windows.reshape(-1)
    if flat.size < length:
        raise ValueError(f"the test split has {flat.size} tokens, fewer than the prompt's {length}")
    return [int(token) for token in flat[:length]]


def _latency(stats: Any, generation, provider: str) -> Latency:
    """Milliseconds per decoded token as a latency record (one value per round)."""
    rates = [float(r["decode_tokens_per_s"]) for r in stats.rounds]
    per_token = [1000.0 / r for r in rates if r > 0] or [float("nan")]
    load = [r.get("other_load") for r in stats.rounds]
    ordered = sorted(per_token)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    return Latency(
        provider=provider, threads=generation.threads, batch_size=generation.batch,
        p50_ms=statistics.median(per_token), p90_ms=pick(0.9), p99_ms=pick(0.99),
        mean_ms=statistics.fmean(per_token),
        std_ms=statistics.pstdev(per_token) if len(per_token) > 1 else 0.0,
        n=len(per_token), round_p50_ms=per_token,
        other_load=load if all(x is not None for x in load) else None,
        throughput=float(stats.decode_tokens_per_s) * generation.batch,
    )  # fmt: skip


class LMMeasurement:
    """Measures a run's language-model stages the same way (see the module docstring).

    Args:
        recipe: its `[runtime.generation]` says how to time.
    """

    def __init__(self, recipe):
        self.recipe = recipe
        self.generation = recipe.runtime.generation_profile()
        # a file's quality figures by (content hash, is it the baseline): deterministic,
        # so a stage that passes its input's model through is not measured twice
        self._quality: dict[tuple[str, bool], Any] = {}

    def evaluate(self, result, onnx_path: Path, ctx, baseline: Metrics | None) -> Metrics:
        """Perplexity, fidelity, size, counts and decode speed of a stage's folder."""
        from compress.runtime.lm_quality import lm_quality

        windows = test_windows(ctx.data.test)
        reference = ctx.baseline_onnx if ctx.baseline_onnx not in (None, onnx_path) else None
        key = (sha256_file(onnx_path), reference is None)
        quality = self._quality.get(key)
        if quality is None:  # the same bytes again (export of a quantized folder): reused
            quality = lm_quality(onnx_path, windows, reference=reference,
                                 threads=self.generation.threads)  # fmt: skip
            self._quality[key] = quality
        metrics = Metrics(
            perplexity=float(quality.perplexity),
            perplexity_tokens=int(quality.tokens),
            agreement=1.0 if reference is None else float(quality.agreement),
            kl_mean=0.0 if reference is None else float(quality.kl_mean),
            size_bytes=model_bytes(onnx_path),
            primary_provider="cpu",
            latency={},
        )
        if result.model is not None:
            metrics.params = count_params(result.model)
            metrics.macs = count_macs(result.model, result.spec.signature)
        reference_metrics = baseline or metrics
        metrics.perplexity_increase = metrics.perplexity / reference_metrics.perplexity - 1.0
        metrics.size_ratio = reference_metrics.size_bytes / metrics.size_bytes
        self._speed(metrics, onnx_path, ctx, windows)
        return metrics

    def _speed(self, metrics: Metrics, onnx_path: Path, ctx, windows: np.ndarray) -> None:
        """Decode speed at the generation profile, interleaved with the baseline's and
        the input's folders; the speed-ups land where speed budgets read them."""
        from compress.runtime.lm_speed import decode_speed, decode_speedup

        generation = self.generation
        here = onnx_path.parent
        baseline = ctx.baseline_onnx.parent if ctx.baseline_onnx is not None else None
        given = ctx.input_onnx.parent if ctx.input_onnx is not None else None
        if given is not None and given != here and _same_model(given, here, onnx_path.name):
            given = here  # the input's very model (export of a quantized folder): 1.00x
        folders = list(dict.fromkeys(f for f in (baseline, given, here) if f is not None))
        timed = decode_speed(
            folders, prompt_ids(windows, generation.prompt), generate=generation.generate,
            batch=generation.batch, threads=generation.threads, rounds=generation.rounds,
            warmup=generation.warmup,
        )  # fmt: skip
        stats = dict(zip(folders, timed))
        mine = stats[here]
        metrics.prefill_ms = float(mine.prefill_ms)
        metrics.decode_tokens_per_s = float(mine.decode_tokens_per_s)
        metrics.generation = generation.model_dump()
        latency = _latency(mine, generation, metrics.provider)
        metrics.latency = {metrics.provider: latency}
        profile = Profile(batch=generation.batch, threads=generation.threads,
                          latency=dict(metrics.latency))  # fmt: skip
        one = Spread(median=1.0, min=1.0, max=1.0, rounds=0)
        if baseline is not None and baseline != here:
            profile.speedup = Spread(**decode_speedup(stats[baseline], mine))
            profile.teacher_decode_tokens_per_s_interleaved = stats[baseline].decode_tokens_per_s
        else:
            profile.speedup = one
        if given is not None:
            same = given == here
            ratio = one if same else Spread(**decode_speedup(stats[given], mine))
            profile.speedup_vs_input = ratio
            profile.input_decode_tokens_per_s_interleaved = stats[given].decode_tokens_per_s
            profile.slower_than_input = (not same) and _is_slower(ratio)
        metrics.profiles = {generation.label: profile}
        for key in ("speedup", "speedup_vs_input", "slower_than_input",
                    "teacher_decode_tokens_per_s_interleaved",
                    "input_decode_tokens_per_s_interleaved"):  # fmt: skip
            if getattr(profile, key, None) is not None:
                setattr(metrics, key, getattr(profile, key))
        if profile.slower_than_input is not None:
            metrics.slower_profiles = [generation.label] if profile.slower_than_input else []


def _same_model(a: Path, b: Path, name: str) -> bool:
    """Whether two deployed folders hold the same model file (by content)."""
    first, second = a / name, b / name
    if not (first.is_file() and second.is_file()):
        return False
    return first.stat().st_size == second.stat().st_size and sha256_file(first) == sha256_file(
        second
    )


def _is_slower(ratio: Spread) -> bool:
    from compress.runtime.latency import is_slower

    return is_slower(ratio.model_dump())
