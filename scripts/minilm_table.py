"""Print a run's per-stage table (accuracy, MB, b1 p50, batch-N texts/s, speed-ups) as
Markdown, from its report.json: how docs/results.md's MiniLM table was made.

Usage:
    python scripts/minilm_table.py /tmp/minilm-run [--wide b32-t1] [--narrow b1-t1]

Speed-ups are the runner's own: each stage's model timed interleaved with the teacher's
(the first stage's) file at that profile, median of the per-round p50 ratios, with the
slowest and fastest round in brackets.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _spread(ratio: dict | None) -> str:
    if not ratio or not ratio.get("rounds"):
        return "1.00x"
    return f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f})"


def table(report: dict, wide: str, narrow: str) -> list[str]:
    """The Markdown lines of the table (one row per stage that was measured)."""
    lines = [
        f"| stage | accuracy | vs teacher (pts) | MB | {narrow} p50 ms | {narrow} speed-up "
        f"| {wide} texts/s (rounds) | {wide} speed-up | stage s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in report["stages"]:
        m = stage.get("metrics") or {}
        if not m:
            continue
        profiles = m.get("profiles", {})
        b1 = profiles[narrow]["latency"]["cpu"]
        bn = profiles[wide]["latency"]["cpu"]
        rates = bn.get("throughput_rounds", {})
        lines.append(
            f"| {stage['name']} | {m['accuracy'] * 100:.2f}% | "
            f"{m['accuracy_change'] * 100:+.2f} | {m['size_bytes'] / 1e6:.1f} | "
            f"{b1['p50_ms']:.2f} | {_spread(profiles[narrow].get('speedup'))} | "
            f"{bn['throughput']:.1f} ({rates.get('min', float('nan')):.1f}-"
            f"{rates.get('max', float('nan')):.1f}) | {_spread(profiles[wide].get('speedup'))} | "
            f"{stage.get('duration_s', float('nan')):.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run folder (holds report.json)")
    parser.add_argument("--wide", default="b32-t1", help="the batch profile's name")
    parser.add_argument("--narrow", default="b1-t1", help="the batch-1 profile's name")
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text(encoding="utf-8"))
    env = report.get("environment", {})
    print(f"status {report['status']} (exit {report.get('exit_code')}), "
          f"{report.get('duration_s', 0) / 60:.1f} min; {env.get('cpu')} "
          f"({', '.join(i for i in env.get('isa', []) if 'vnni' in i or 'amx' in i)}), "
          f"{env.get('cpu_count')} cores, torch {env.get('torch')}, "
          f"onnxruntime {env.get('onnxruntime')}")  # fmt: skip
    print(report.get("data", {}).get("description", ""))
    print("\n".join(table(report, args.wide, args.narrow)))
    final = report.get("final") or {}
    for check in final.get("budgets", []):
        print(f"- {'pass' if check['passed'] else 'FAIL'}: {check['message']}")


if __name__ == "__main__":
    main()
