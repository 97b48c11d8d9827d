"""Latency of candidate architectures on ORT CPU (fp32 and u8s8 int8), interleaved.

Random weights (latency does not depend on them); every model is timed in every round
(A B C ... A B C ...), 1 thread, batch 1, and speed-ups are medians of per-round ratios
against the first model. This is how the Fashion-MNIST student shape and round_to = 8
were chosen (docs/results.md).

Usage: python scripts/bench_architectures.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from compress.models import build_model
from compress.models.stats import count_macs, count_params
from compress.quantization.static import quantize_static_onnx
from compress.recipe.schema import CNNConfig, ResNetConfig
from compress.runtime.latency import measure_latency, speedup
from compress.runtime.onnx_export import export_onnx

SHAPE = (1, 28, 28)
CANDIDATES = {
    "teacher cnn [32,64,128] x2": CNNConfig(widths=[32, 64, 128], convs_per_block=2),
    "cnn [16,32,64] x2": CNNConfig(widths=[16, 32, 64], convs_per_block=2),
    "cnn [12,24,48] x2": CNNConfig(widths=[12, 24, 48], convs_per_block=2),
    "cnn [9,18,36] x2 (odd widths)": CNNConfig(widths=[9, 18, 36], convs_per_block=2),
    "cnn [8,16,32] x2": CNNConfig(widths=[8, 16, 32], convs_per_block=2),
    "cnn [16,32,64] x1": CNNConfig(widths=[16, 32, 64], convs_per_block=1),
    "cnn [16,32,96] x1": CNNConfig(widths=[16, 32, 96], convs_per_block=1),
    "cnn [16,32,128] x1": CNNConfig(widths=[16, 32, 128], convs_per_block=1),
    "cnn [16,48,96] x1": CNNConfig(widths=[16, 48, 96], convs_per_block=1),
    "cnn [24,48,96] x1": CNNConfig(widths=[24, 48, 96], convs_per_block=1),
    "resnet [16,32,64] stem stride 2": ResNetConfig(widths=[16, 32, 64], stem_stride=2),
}


def main() -> None:
    torch.manual_seed(0)
    calibration = np.random.default_rng(0).standard_normal((256, *SHAPE), dtype=np.float32)
    rows, paths = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, config) in enumerate(CANDIDATES.items()):
            model = build_model(config, SHAPE, 10).eval()
            fp32 = export_onnx(model, SHAPE, Path(scratch) / f"{index}.onnx")
            int8 = Path(scratch) / f"{index}.int8.onnx"
            quantize_static_onnx(fp32, int8, calibration)
            rows.append((name, count_params(model), count_macs(model, SHAPE), fp32, int8))
            paths += [fp32, int8]
        stats = measure_latency(
            paths, SHAPE, threads=1, batch_size=1, warmup=20, repeats=100, rounds=7
        )
        print(
            "| model | params | MACs | fp32 p50 ms | fp32 speed-up | int8 p50 ms "
            "| int8 speed-up | int8 bytes |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for (name, params, macs, fp32, int8), i in zip(rows, range(0, len(paths), 2)):
            base = stats[0]
            print(
                f"| {name} | {params:,} | {macs:,} | {stats[i].p50_ms:.4f} "
                f"| {speedup(base, stats[i])['median']:.2f}x | {stats[i + 1].p50_ms:.4f} "
                f"| {speedup(base, stats[i + 1])['median']:.2f}x | {int8.stat().st_size:,} |"
            )


if __name__ == "__main__":
    main()
