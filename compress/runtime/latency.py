"""Latency on ONNX Runtime, measured interleaved so ratios survive machine drift.

Timings on shared 2-core VMs drift up to 1.8x minutes apart. Measuring models
one after another would fold that drift into their ratio, so every model is
timed in each round (A B A B ...) and a ratio is the median of per-round ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from compress.models.signature import (
    InputSignature,
    Samples,
    as_feeds,
    as_signature,
    sample_count,
)
from compress.runtime.machine import LoadMeter
from compress.runtime.sessions import make_session


@dataclass
class LatencyStats:
    """Latency of one model on one provider, in milliseconds."""

    provider: str
    threads: int
    batch_size: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    n: int
    round_p50_ms: list[float] = field(default_factory=list)
    percentiles: dict[str, float] = field(default_factory=dict)
    other_load: list[float] = field(default_factory=list)
    disturbed_rounds: int = 0

    @property
    def throughput(self) -> float:
        """Items per second at the median latency (batch / p50)."""
        return self.batch_size * 1000.0 / self.p50_ms if self.p50_ms > 0 else float("nan")

    def throughput_spread(self) -> dict[str, float]:
        """Items per second of the slowest and the fastest round (batch / round p50)."""
        rates = [self.batch_size * 1000.0 / p for p in self.round_p50_ms if p > 0]
        if not rates:
            return {"min": float("nan"), "max": float("nan")}
        return {"min": min(rates), "max": max(rates)}

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "throughput": self.throughput,
            "throughput_rounds": self.throughput_spread(),
        }


def _stats(samples_ns: list[int], round_p50: list[float], provider: str, threads: int, batch: int):
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    return LatencyStats(
        provider=provider,
        threads=threads,
        batch_size=batch,
        p50_ms=float(np.percentile(ms, 50)),
        p90_ms=float(np.percentile(ms, 90)),
        p99_ms=float(np.percentile(ms, 99)),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        n=int(ms.size),
        round_p50_ms=round_p50,
        percentiles={f"p{q}": float(np.percentile(ms, q)) for q in (1, 5, 25, 50, 75, 95, 99)},
    )


def measure_latency(
    paths: Sequence[str | Path],
    signature: InputSignature | tuple[int, ...],
    *,
    provider: str = "cpu",
    threads: int = 1,
    batch_size: int = 1,
    warmup: int = 10,
    repeats: int = 50,
    rounds: int = 5,
    seed: int = 0,
    max_other_load: float = 0.25,
    retries: int = 2,
    samples: Samples | None = None,
) -> list[LatencyStats]:
    """Time each model `repeats` times per round, interleaved over `rounds` rounds.

    Args:
        paths: ONNX files, measured in this order within each round.
        signature: the models' inputs (a per-sample shape stands for one image
            input); random inputs of `batch_size` rows are drawn from it.
        provider, threads, batch_size: the session and input under test.
        samples: real inputs to time on instead of random ones: up to `MAX_BATCHES`
            batches of `batch_size` rows drawn (seeded) from them, each trimmed of the
            padding no row of it needs (`real_batches`); each timed run takes the next
            batch in turn, the same sequence for every model.
        warmup: untimed runs per model before the first round.
        repeats, rounds: timed runs per model per round, and the number of rounds.
        max_other_load: a round during which other processes used more than this
            share of a core (from /proc/stat) is flagged disturbed and run again,
            up to `retries` times; the last try is kept and counted as disturbed.

    Example:
        >>> teacher, student = measure_latency(["t.onnx", "s.onnx"], (1, 28, 28))  # doctest: +SKIP
        >>> speedup(teacher, student)["median"]  # doctest: +SKIP
    """
    signature = as_signature(signature)
    if samples is None:
        batches = [signature.random_feed(signature.sizes(batch_size), seed)]
    else:
        batches = real_batches(samples, signature.names, batch_size, seed)
    sessions = [make_session(path, provider, threads) for path in paths]
    feeds = [[_feed_for(session, batch) for batch in batches] for session in sessions]
    for session, session_feeds in zip(sessions, feeds):
        for index in range(warmup):
            session.run(None, session_feeds[index % len(session_feeds)])
    timings: list[list[int]] = [[] for _ in sessions]
    round_p50: list[list[float]] = [[] for _ in sessions]
    loads: list[float] = []
    disturbed = 0
    clock = time.perf_counter_ns
    meter = LoadMeter()
    for _ in range(rounds):
        for attempt in range(retries + 1):
            meter.start()
            round_times = []
            for session, session_feeds in zip(sessions, feeds):
                times = []
                for index in range(repeats):
                    feed = session_feeds[index % len(session_feeds)]
                    start = clock()
                    session.run(None, feed)
                    times.append(clock() - start)
                round_times.append(times)
            load = meter.other_share()
            if load is None or load <= max_other_load:
                break
        if load is not None and load > max_other_load:
            disturbed += 1
        loads.append(load if load is not None else float("nan"))
        for index, times in enumerate(round_times):
            timings[index].extend(times)
            round_p50[index].append(statistics.median(times) / 1e6)
    results = [_stats(s, r, provider, threads, batch_size) for s, r in zip(timings, round_p50)]
    for result in results:
        result.other_load, result.disturbed_rounds = loads, disturbed
    return results


# Distinct real batches a measurement cycles through: enough texts of different
# lengths for a representative median, few enough to hold in memory at batch 32.
MAX_BATCHES = 8
MASK_NAME = "attention_mask"


def real_batches(
    samples: Samples, names: list[str], batch_size: int, seed: int = 0, count: int = MAX_BATCHES
) -> list[dict[str, np.ndarray]]:
    """Up to `count` batches of `batch_size` real rows (a seeded draw without
    replacement; rows repeat only when there are fewer than `batch_size`), each padded
    per batch: where the inputs have an `attention_mask`, the trailing columns no row
    of the batch attends to are cut from every input as wide as the mask, as a server
    batching real texts pads them to the batch's longest.

    Example:
        >>> ids = np.array([[5, 6, 0, 0], [7, 0, 0, 0]])
        >>> batch = real_batches({"input_ids": ids, "attention_mask": (ids > 0) * 1},
        ...                      ["input_ids", "attention_mask"], 2)[0]
        >>> batch["input_ids"].shape
        (2, 2)
    """
    feeds = as_feeds(samples, names)
    rows = sample_count(feeds)
    if rows == 0:
        raise ValueError("no samples to time on")
    order = np.random.default_rng(seed).permutation(rows)
    if rows < batch_size:
        order = np.resize(order, batch_size)
    batches = []
    for start in range(0, min(len(order) // batch_size, count) * batch_size, batch_size):
        chosen = np.sort(order[start : start + batch_size])
        batches.append(_trim_padding({k: np.asarray(v)[chosen] for k, v in feeds.items()}))
    return batches


def _trim_padding(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mask = batch.get(MASK_NAME)
    if mask is None or mask.ndim != 2:
        return batch
    used = np.flatnonzero(mask.any(axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    return {
        name: value[:, :width] if value.ndim == 2 and value.shape[1] == mask.shape[1] else value
        for name, value in batch.items()
    }


def _feed_for(session, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The feed under this session's input names (a quantized file keeps the names;
    a renamed single input still takes the one array)."""
    names = [i.name for i in session.get_inputs()]
    if set(names) == set(feed):
        return feed
    if len(names) == len(feed) == 1:
        return {names[0]: next(iter(feed.values()))}
    raise ValueError(f"model inputs {names} do not match the signature's {sorted(feed)}")


def measure_with_runtime(
    paths: Sequence[str | Path],
    signature: InputSignature | tuple[int, ...],
    runtime,
    provider: str | None = None,
    seed: int = 0,
    profile=None,
    samples: Samples | None = None,
) -> list[LatencyStats]:
    """`measure_latency` with threads, batch size, warm-up, repeats and rounds taken from
    a recipe's `[runtime]` table (provider: its first one unless given; batch and
    threads: its first deployment profile unless one is given; repeats and rounds: the
    profile's own where it sets them). `samples`: real inputs to time on."""
    profile = profile or runtime.deployment_profiles()[0]
    return measure_latency(
        paths,
        signature,
        provider=provider or runtime.providers[0],
        threads=profile.threads,
        batch_size=profile.batch,
        warmup=runtime.warmup,
        repeats=getattr(profile, "repeats", None) or runtime.repeats,
        rounds=getattr(profile, "rounds", None) or runtime.rounds,
        seed=seed,
        samples=samples,
    )


def model_signature(path: str | Path) -> InputSignature:
    """An ONNX model's inputs as its file declares them (for `compress bench`)."""
    return InputSignature.from_onnx(path)


def speedup(baseline: LatencyStats, candidate: LatencyStats) -> dict[str, float]:
    """baseline p50 / candidate p50, per round; median and spread across rounds.

    Only meaningful when both were measured in the same `measure_latency` call.
    """
    return ratio_spread(
        [b / c for b, c in zip(baseline.round_p50_ms, candidate.round_p50_ms) if c > 0]
    )


def ratio_spread(ratios: list[float]) -> dict[str, float]:
    """Median, min and max of per-round ratios (the shape of `report.records.Spread`);
    NaN with 0 rounds when there are none."""
    if not ratios:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "rounds": 0}
    return {
        "median": float(statistics.median(ratios)),
        "min": float(min(ratios)),
        "max": float(max(ratios)),
        "rounds": len(ratios),
    }


# A model is slower than another when every interleaved round timed it slower and the
# median by more than this: identical work drifts a few percent round to round.
SLOWDOWN_MARGIN = 0.03


def is_slower(ratio: dict[str, float]) -> bool:
    """Slower beyond the measured spread: every round's reference/candidate p50 ratio
    (`speedup`) below 1 and the median below 1 - SLOWDOWN_MARGIN."""
    return ratio["rounds"] > 0 and ratio["max"] < 1.0 and ratio["median"] < 1 - SLOWDOWN_MARGIN
