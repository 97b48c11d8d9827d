"""Regression diff of a run against a baseline run: accuracy, p50 latency, size.

Latency is never compared across two separate timings (this VM drifts up to
1.8x): both final models are re-measured interleaved in one process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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
    current: dict[str, Any],
    baseline_dir: Path,
    baseline: dict[str, Any],
    limits: RegressionLimits,
    rounds: int = 7,
    repeats: int = 100,
) -> list[Comparison]:
    """Compare the final models of two runs; latency re-measured interleaved."""
    from compress.runtime.latency import measure_latency, model_signature, speedup

    new, old = current["final"], baseline["final"]
    rows = []
    if old["metrics"].get("accuracy") is not None and new["metrics"].get("accuracy") is not None:
        drop = old["metrics"]["accuracy"] - new["metrics"]["accuracy"]
        rows.append(
            Comparison(
                "accuracy",
                old["metrics"]["accuracy"],
                new["metrics"]["accuracy"],
                f"{-drop * 100:+.2f} pts",
                f"drop <= {limits.accuracy_drop * 100:.2f} pts",
                drop > limits.accuracy_drop,
            )
        )  # runs on data without labels have no accuracy to compare
    size_change = new["metrics"]["size_bytes"] / old["metrics"]["size_bytes"] - 1
    rows.append(
        Comparison(
            "size_bytes",
            old["metrics"]["size_bytes"],
            new["metrics"]["size_bytes"],
            f"{size_change * 100:+.1f}%",
            f"increase <= {limits.size_increase * 100:.0f}%",
            size_change > limits.size_increase,
        )
    )
    runtime = current["runtime"]
    old_path, new_path = baseline_dir / old["path"], current_dir / new["path"]
    old_stats, new_stats = measure_latency(
        [old_path, new_path],
        model_signature(new_path),
        threads=runtime["threads"],
        batch_size=runtime["batch_size"],
        warmup=runtime["warmup"],
        repeats=repeats,
        rounds=rounds,
    )
    slower = 1 / speedup(old_stats, new_stats)["median"] - 1
    rows.append(
        Comparison(
            "latency_p50_ms (interleaved)",
            old_stats.p50_ms,
            new_stats.p50_ms,
            f"{slower * 100:+.1f}%",
            f"increase <= {limits.latency_increase * 100:.0f}%",
            slower > limits.latency_increase,
        )
    )
    return rows


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
