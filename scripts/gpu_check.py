"""GPU runtime check: ORT latency of one model on every provider present, interleaved.

Run on a machine with an NVIDIA GPU and `pip install -e '.[gpu]'` (onnxruntime-gpu):
    python scripts/gpu_check.py [--batch-sizes 1 32] [--rounds 7] [--repeats 100]
It exports the Fashion-MNIST teacher shape (random weights: latency does not depend on
them) and prints p50/p90 per provider and batch size, CPU as the baseline. Providers
that are missing are listed with the reason, never silently skipped. Finishes in about
a minute on CPU alone.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from compress.models import build_model
from compress.recipe.schema import CNNConfig
from compress.runtime.latency import measure_latency
from compress.runtime.machine import machine_info
from compress.runtime.onnx_export import export_onnx
from compress.runtime.sessions import INSTALL_HINT, PROVIDERS, available_providers

SHAPE = (1, 28, 28)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    machine = machine_info()
    print(
        f"CPU {machine['cpu']} ({' '.join(machine['isa'])}); onnxruntime "
        f"{machine['onnxruntime']}; ORT providers {machine['providers_available']}"
    )
    have = available_providers()
    for name in PROVIDERS:
        if name not in have:
            print(f"{name}: unavailable ({INSTALL_HINT.get(name, 'not in this build')})")
    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[32, 64, 128], convs_per_block=2), SHAPE, 10).eval()
    with tempfile.TemporaryDirectory() as scratch:
        path = export_onnx(model, SHAPE, Path(scratch) / "teacher.onnx")
        print("| provider | batch | p50 ms | p90 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for batch in args.batch_sizes:
            results = {}
            for provider in have:
                (stats,) = measure_latency(
                    [path],
                    SHAPE,
                    provider=provider,
                    threads=1,
                    batch_size=batch,
                    warmup=20,
                    repeats=args.repeats,
                    rounds=args.rounds,
                )
                results[provider] = stats
            for provider, stats in results.items():
                print(
                    f"| {provider} | {batch} | {stats.p50_ms:.4f} | {stats.p90_ms:.4f} "
                    f"| {stats.p99_ms:.4f} |"
                )


if __name__ == "__main__":
    main()
