"""Regression diff of a run against a baseline run: accuracy, p50 latency, size.

Latency is never compared across two separate timings (this VM drifts up to
1.8x): both final models are re-measured interleaved in one process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compress.report.records import Metrics, Report, RuntimeFacts


@dataclass
class RegressionLimits:
    """How much worse than the baseline counts as a regression."""

    accuracy_drop: float = 0.005  # absolute fraction
    latency_increase: float = 0.10  # relative: 0.10 = 10% slower
    size_increase: float = 0.05  # relative


@dataclass
class Comparison:
    metric: str
    baseline: float
    current: float
    change: str
    limit: str
    regression: bool


def compare_runs(
    current_dir: Path,
    current: Report,
    baseline_dir: Path,
    baseline: Report,
    limits: RegressionLimits,
    rounds: int = 7,
    repeats: int = 100,
) -> list[Comparison]:
    """Compare the final models of two runs; latency re-measured interleaved.

    Example:
        >>> rows = compare_runs(Path("runs/new"), read_report(Path("runs/new")),
        ...                     Path("runs/old"), read_report(Path("runs/old")),
        ...                     RegressionLimits())  # doctest: +SKIP
    """
    new, old = current.final, baseline.final
    rows = _accuracy_rows(new.metrics, old.metrics, limits) + _size_rows(
        new.metrics, old.metrics, limits
    )
    rows.append(_latency_row(current_dir / new.path, baseline_dir / old.path, current.runtime,
                             limits, rounds, repeats))  # fmt: skip
    return rows


def _accuracy_rows(new: Metrics, old: Metrics, limits: RegressionLimits) -> list[Comparison]:
    if old.accuracy is None or new.accuracy is None:
        return []  # runs on data without labels have no accuracy to compare
    drop = old.accuracy - new.accuracy
    return [
        Comparison(
            "accuracy",
            old.accuracy,
            new.accuracy,
            f"{-drop * 100:+.2f} pts",
            f"drop <= {limits.accuracy_drop * 100:.2f} pts",
            drop > limits.accuracy_drop,
        )
    ]


def _size_rows(new: Metrics, old: Metrics, limits: RegressionLimits) -> list[Comparison]:
    if not old.size_bytes or new.size_bytes is None:
        return []  # a report that lost its size has nothing to compare
    size_change = new.size_bytes / old.size_bytes - 1
    return [
        Comparison(
            "size_bytes",
            old.size_bytes,
            new.size_bytes,
            f"{size_change * 100:+.1f}%",
            f"increase <= {limits.size_increase * 100:.0f}%",
            size_change > limits.size_increase,
        )
    ]


def _latency_row(new_path: Path, old_path: Path, runtime: RuntimeFacts,
                 limits: RegressionLimits, rounds: int, repeats: int) -> Comparison:  # fmt: skip
    """Both final models timed in the same interleaved rounds (never two timings)."""
    from compress.runtime.latency import measure_latency, model_signature, speedup

    old_stats, new_stats = measure_latency(
        [old_path, new_path],
        model_signature(new_path),
        threads=runtime.threads,
        batch_size=runtime.batch_size,
        warmup=runtime.warmup,
        repeats=repeats,
        rounds=rounds,
    )
    slower = 1 / speedup(old_stats, new_stats)["median"] - 1
    return Comparison(
        "latency_p50_ms (interleaved)",
        old_stats.p50_ms,
        new_stats.p50_ms,
        f"{slower * 100:+.1f}%",
        f"increase <= {limits.latency_increase * 100:.0f}%",
        slower > limits.latency_increase,
    )


def comparison_markdown(rows: list[Comparison], baseline_dir: Path) -> str:
    lines = [
        f"## Regression check against `{baseline_dir}`",
        "",
        "| metric | baseline | current | change | limit | regression |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.metric} | {row.baseline:.6g} | {row.current:.6g} | {row.change} "
            f"| {row.limit} | {'**REGRESSION**' if row.regression else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def comparison_dicts(rows: list[Comparison]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
