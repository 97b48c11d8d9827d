"""`compress bench`'s table: interleaved latency of ONNX models, ratios vs the first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from compress.runtime.latency import LatencyStats, speedup
from compress.runtime.machine import machine_info


def print_bench(
    console: Console,
    models: list[Path],
    stats: list[LatencyStats],
    provider: str,
    threads: int,
    repeats: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Print the machine line, the table and the load line; return (rows, machine)."""
    batch_size, rounds = stats[0].batch_size, len(stats[0].round_p50_ms)
    table = Table(
        title=f"{provider}, {threads} thread(s), batch {batch_size}, "
        f"{rounds} interleaved rounds x {repeats} runs"
    )
    for column in ("model", "bytes", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "n"):
        table.add_column(column)
    table.add_column("speed-up vs first (min-max)")
    rows = []
    for path, stat in zip(models, stats):
        ratio = speedup(stats[0], stat)
        rows.append(
            {
                "model": str(path),
                "bytes": path.stat().st_size,
                **stat.to_dict(),
                "speedup_vs_first": ratio,
            }
        )
        table.add_row(
            str(path),
            f"{path.stat().st_size:,}",
            f"{stat.p50_ms:.4g}",
            f"{stat.p90_ms:.4g}",
            f"{stat.p99_ms:.4g}",
            f"{stat.mean_ms:.4g}",
            f"{stat.std_ms:.3g}",
            str(stat.n),
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})",
        )
    machine = machine_info()
    console.print(
        f"CPU {machine['cpu']} ({machine['cpu_count']} cores; {' '.join(machine['isa'])}), "
        f"onnxruntime {machine['onnxruntime']}",
        markup=False,
    )
    console.print(table)
    loads = stats[0].other_load
    finite = [load for load in loads if load == load]
    console.print(
        f"other processes' CPU during rounds: max {max(finite, default=0):.2f} cores; "
        f"{stats[0].disturbed_rounds} of {len(loads)} rounds disturbed after retries",
        markup=False,
    )
    return rows, machine
