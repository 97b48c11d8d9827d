"""How conv latency on ONNX Runtime (CPU) depends on the channel count: is a pruned
layer with 21 or 43 channels faster than one with 24 or 48?

Times two 3x3 conv layers (c -> c -> c, BN folded by ORT, ReLU) at batch 1 on one
thread for several channel counts, all models interleaved in each round (A B C ...),
and prints each count's p50 against the next multiple of 8 and of 16. This is what
the prune stage's default `round_to` rests on (docs/pruning-comparison.md).

Run: python scripts/bench_channel_rounding.py [--size 28] [--rounds 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

from compress.runtime.latency import measure_latency
from compress.runtime.machine import machine_info
from compress.runtime.onnx_export import export_onnx

COUNTS = [12, 15, 16, 20, 21, 24, 28, 30, 32, 36, 40, 43, 44, 48, 56, 60, 63, 64]


def conv_pair(channels: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
    ).eval()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28, help="Image height and width.")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    machine = machine_info()
    isa = " ".join(machine["isa"])
    print(f"CPU {machine['cpu']} ({isa}), onnxruntime {machine['onnxruntime']}")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        paths = []
        for channels in COUNTS:
            model = conv_pair(channels)
            paths.append(export_onnx(model, (channels, args.size, args.size),
                                     Path(scratch) / f"c{channels}.onnx"))  # fmt: skip
        # one input shape per model: measure each count on its own channels, interleaved
        stats = {}
        for _ in range(args.rounds):
            for channels, path in zip(COUNTS, paths):
                (s,) = measure_latency([path], (channels, args.size, args.size), warmup=20,
                                       repeats=args.repeats, rounds=1)  # fmt: skip
                stats.setdefault(channels, []).append(s.p50_ms)
    p50 = {c: sorted(v)[len(v) // 2] for c, v in stats.items()}
    size = f"{args.size}x{args.size}"
    print(f"\nbatch 1, 1 thread, {size}, median of {args.rounds} interleaved rounds")
    print("| channels | p50 ms | next x8 | its p50 | ratio | next x16 | its p50 | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for channels in COUNTS:
        up8, up16 = -(-channels // 8) * 8, -(-channels // 16) * 16
        row = [f"{channels}", f"{p50[channels]:.4f}"]
        for up in (up8, up16):
            if up in p50:
                row += [f"{up}", f"{p50[up]:.4f}", f"{p50[channels] / p50[up]:.2f}"]
            else:
                row += ["-", "-", "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
