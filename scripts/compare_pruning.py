"""Compare pruning importance criteria, with and without KD fine-tuning, on one model.

Every variant prunes the same starting model to the same ratio in the same steps
with the same fine-tuning budget; accuracy is measured on the test split with
ONNX Runtime, latency interleaved across all variants (A B C ... A B C ...) on
one thread at batch 1, so the ratios survive machine drift.

Usage (after `compress run recipes/fashion-mnist.toml`):
    python scripts/compare_pruning.py --model runs/fashion-mnist/distill \
        --recipe recipes/fashion-mnist.toml --ratio 0.45 --steps 2 --epochs 1 \
        --out docs/pruning-comparison.md
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from compress.data import load_data
from compress.models import load_model
from compress.models.stats import count_macs, count_params
from compress.recipe import load_recipe
from compress.recipe.stages import PruneStageConfig
from compress.runtime.evaluate import onnx_accuracy
from compress.runtime.latency import measure_latency, speedup
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import RunContext
from compress.stages.prune import PruneStage

CRITERIA = ["l1", "l2", "taylor", "bn-scale", "lamp", "fpgm", "random"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stage folder (model.json)")
    parser.add_argument("--recipe", type=Path, required=True, help="for data and runtime")
    parser.add_argument("--ratio", type=float, default=0.45)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="fine-tune epochs per step")
    parser.add_argument("--criteria", nargs="*", default=CRITERIA)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/pruning-comparison.md"))
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    torch.set_num_threads(2)
    data = load_data(recipe.data, recipe.seed)
    base, spec = load_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-pruning-") as scratch:
        scratch = Path(scratch)
        base_onnx = export_onnx(base, spec.input_shape, scratch / "unpruned.onnx")
        rows.append(
            {
                "variant": "unpruned",
                "accuracy": onnx_accuracy(base_onnx, data.test),
                "params": count_params(base),
                "macs": count_macs(base, spec.input_shape),
                "onnx": base_onnx,
                "seconds": 0.0,
            }
        )
        variants = [(c, False) for c in args.criteria] + [(c, True) for c in args.criteria]
        for criterion, kd in variants:
            model = copy.deepcopy(base)
            config = PruneStageConfig(
                type="prune",
                ratio=args.ratio,
                steps=args.steps,
                importance=criterion,
                finetune={
                    "epochs": args.epochs,
                    "distill": kd,
                    "batch_size": 128,
                    "augment": "none",
                    "optimizer": {"name": "nesterov", "lr": 0.01, "weight_decay": 5e-4},
                    "schedule": {"name": "cosine"},
                },
            )
            name = f"{criterion}{' + KD' if kd else ''}"
            ctx = RunContext(recipe, data, model, spec, scratch / name, recipe.seed)
            ctx.teacher = base
            started = time.monotonic()
            result = PruneStage(config, "prune").run(ctx)
            onnx = export_onnx(result.model, spec.input_shape, scratch / f"{criterion}-{kd}.onnx")
            rows.append(
                {
                    "variant": name,
                    "accuracy": onnx_accuracy(onnx, data.test),
                    "params": count_params(result.model),
                    "macs": count_macs(result.model, spec.input_shape),
                    "onnx": onnx,
                    "seconds": time.monotonic() - started,
                }
            )
            print(f"{name}: accuracy {rows[-1]['accuracy']:.4f} ({rows[-1]['seconds']:.0f} s)")
        stats = measure_latency(
            [row["onnx"] for row in rows],
            spec.input_shape,
            threads=1,
            batch_size=1,
            warmup=20,
            repeats=args.repeats,
            rounds=args.rounds,
        )
    lines = [
        f"# Pruning comparison: ratio {args.ratio} in {args.steps} steps, "
        f"{args.epochs} fine-tune epoch(s) per step",
        "",
        f"Model: `{args.model}`; data: {data.description}; test accuracy on ONNX Runtime; "
        f"latency ORT CPU, 1 thread, batch 1, {args.rounds} interleaved rounds x "
        f"{args.repeats} runs (speed-up = median of per-round ratios vs unpruned).",
        "",
        f"Command: `python scripts/compare_pruning.py --model {args.model} --recipe "
        f"{args.recipe} --ratio {args.ratio} --steps {args.steps} --epochs {args.epochs}`",
        "",
        "| variant | test accuracy | vs unpruned (pts) | params | MACs | p50 ms | speed-up "
        "| prune+fine-tune s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, stat in zip(rows, stats):
        ratio = speedup(stats[0], stat)
        lines.append(
            f"| {row['variant']} | {row['accuracy'] * 100:.2f}% "
            f"| {(row['accuracy'] - rows[0]['accuracy']) * 100:+.2f} | {row['params']:,} "
            f"| {row['macs']:,} | {stat.p50_ms:.4g} | {ratio['median']:.2f}x "
            f"({ratio['min']:.2f}-{ratio['max']:.2f}) | {row['seconds']:.0f} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
