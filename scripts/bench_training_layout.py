"""Is channels-last training faster on this CPU? Measured, not assumed.

Times one SGD step (forward, backward, Nesterov update) of the Fashion-MNIST recipe's
three model shapes (the teacher, the distilled student, the pruned student) with
NCHW (`channels_last = false`) and NHWC (`channels_last = true`, the default)
tensors, interleaved A B A B in one process; reports each layout's median step time
as seconds per 54,000-image epoch and the ratio. The training loop's own layout
switch (compress.training.loop) is what the recipe gets; this script times the same
two layouts on the bare models so nothing else is in the measurement.

Usage:
    python scripts/bench_training_layout.py [--rounds 7 --steps 8 --batch-size 128]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from compress.models.architectures import CNN
from compress.recipe.schema import CNNConfig
from compress.runtime.machine import machine_info

SHAPES = {
    "teacher": dict(widths=[32, 64, 128], convs_per_block=2, hidden=512, pool="flatten"),
    "student": dict(widths=[32, 64, 128], convs_per_block=1),
    "pruned": dict(widths=[16, 32, 96], convs_per_block=1),
}
EPOCH_IMAGES = 54_000


def step_seconds(model, optimizer, x, y, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    info = machine_info()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {info.get('cpu')}")
    print(f"ISA: {info.get('isa')}")
    print("| model | NCHW s/epoch | NHWC s/epoch | NCHW / NHWC |")
    print("|---|---|---|---|")
    for name, shape in SHAPES.items():
        torch.manual_seed(0)
        runs = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            model = CNN(CNNConfig(architecture="cnn", **shape), (1, 28, 28), 10).train()
            model.to(memory_format=layout)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            x = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=layout)
            y = torch.randint(0, 10, (args.batch_size,))
            step_seconds(model, optimizer, x, y, 2)  # warm-up: oneDNN picks its kernels
            runs[layout] = (model, optimizer, x, y, [])
        for _ in range(args.rounds):  # interleaved: drift hits both layouts alike
            for model, optimizer, x, y, times in runs.values():
                times.append(step_seconds(model, optimizer, x, y, args.steps))
        per_epoch = {
            layout: statistics.median(run[4]) / args.batch_size * EPOCH_IMAGES
            for layout, run in runs.items()
        }
        ratios = [a / b for a, b in zip(runs[torch.contiguous_format][4],
                                        runs[torch.channels_last][4])]  # fmt: skip
        print(
            f"| {name} | {per_epoch[torch.contiguous_format]:.1f} | "
            f"{per_epoch[torch.channels_last]:.1f} | {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f}) |"
        )


if __name__ == "__main__":
    main()
