"""Does the quantize stage's default int8 make a ResNet-18 faster? Measured, not assumed.

A torchvision-shaped ResNet-18 (7x7 stem, max-pool, 4 stages of 2 basic blocks,
224x224 input) with random weights (latency does not depend on them) is exported,
quantized static QDQ with u8 activations and s8 per-channel weights (min-max over
32 random images), with 8-bit and with 7-bit weights (`reduce_range`, the stage's
default where the CPU lacks VNNI), and, for comparison, with signed activations
(s8s8, ORT's own default). All are timed interleaved on ONNX Runtime's CPU
provider, 1 thread, batch 1. The CPU's int8-relevant ISA flags are printed first:
the int8 speed-up depends on them (VNNI, AMX).

Usage:
    python scripts/bench_resnet18_int8.py [--rounds 7 --repeats 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.quantization.static import count_runtime_ops, quantize_static_onnx
from compress.runtime.latency import measure_latency, speedup
from compress.runtime.machine import int8_saturates, machine_info
from compress.runtime.onnx_export import export_onnx


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))  # fmt: skip

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (self.down(x) if self.down is not None else x))


class ResNet18(nn.Module):
    """torchvision's resnet18 layout, written out (torchvision does not install here)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )  # fmt: skip
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    info = machine_info()
    print(f"CPU {info['cpu']}, int8-relevant ISA: {', '.join(info['isa']) or 'none'}; "
          f"stage default reduce_range: {int8_saturates()}", flush=True)  # fmt: skip
    torch.manual_seed(0)
    model = ResNet18().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.1, 0.1)
    shape = (3, 224, 224)
    calibration = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-resnet18-") as scratch:
        scratch = Path(scratch)
        fp32 = export_onnx(model, shape, scratch / "fp32.onnx")
        paths, names = [fp32], ["fp32"]
        variants = (
            ("uint8", False, "u8s8, 8-bit weights"),
            ("uint8", True, "u8s8, 7-bit weights"),
            ("int8", False, "s8s8 (ORT default)"),
        )
        for activation, reduce_range, name in variants:
            path = scratch / f"{activation}-{reduce_range}.onnx"
            quantize_static_onnx(
                fp32, path, calibration, activation_type=activation, reduce_range=reduce_range
            )
            ops = count_runtime_ops(path)
            print(f"{name}: int8 compute nodes {ops['int8_compute_nodes']}, "
                  f"float compute nodes {ops['float_compute_nodes']}", flush=True)  # fmt: skip
            paths.append(path)
            names.append(name)
        stats = measure_latency(paths, shape, threads=1, batch_size=1, warmup=3,
                                repeats=args.repeats, rounds=args.rounds)  # fmt: skip
    print("| model | p50 ms | speed-up vs fp32 (spread) |\n|---|---|---|")
    for name, stat in zip(names, stats):
        ratio = speedup(stats[0], stat)
        print(f"| {name} | {stat.p50_ms:.2f} | {ratio['median']:.2f}x "
              f"({ratio['min']:.2f}-{ratio['max']:.2f}) |")  # fmt: skip


if __name__ == "__main__":
    main()
