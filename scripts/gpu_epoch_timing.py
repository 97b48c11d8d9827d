"""One teacher epoch on CPU vs CUDA fp32 vs CUDA bf16: same seed, same batches.

Run: python scripts/gpu_epoch_timing.py [--recipe recipes/fashion-mnist.toml] [--json out.json]
Uses the recipe's data and first (train) stage, one epoch, and prints a Markdown table
of wall seconds and validation accuracy after the epoch per (device, precision). On a
machine without a GPU it times the CPU rows only and says so. Fashion-MNIST needs
scripts/get-fashion-mnist.sh; without it the digits recipe is used.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from compress.data.sources import FASHION_MNIST_DIR
from compress.pipeline.setup import initial_model, load_run_data
from compress.recipe import load_recipe
from compress.recipe.schema import TrainingPlacementConfig
from compress.runtime.machine import machine_info
from compress.training import SingleProcess, evaluate, fit
from compress.training.device import resolve_placement

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cpu-bf16", action="store_true", help="Also time bf16 on the CPU.")
    args = parser.parse_args()
    default = "fashion-mnist.toml" if Path(FASHION_MNIST_DIR).exists() else "digits.toml"
    recipe_path = args.recipe or ROOT / "recipes" / default
    recipe = load_recipe(recipe_path)
    train = recipe.stages[0].model_copy(update={"epochs": 1, "early_stopping": None})
    data = load_run_data(recipe)
    rows = [("cpu", "fp32")] + ([("cpu", "bf16")] if args.cpu_bf16 else [])
    if torch.cuda.is_available():
        rows += [("cuda", "fp32"), ("cuda", "bf16")]
    machine = machine_info()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none visible"
    isa = " ".join(machine["isa"])
    print(f"recipe {recipe_path.name}; CPU {machine['cpu']} ({isa}); torch {torch.__version__}; "
          f"CUDA: {gpu}")  # fmt: skip
    results = []
    for device, precision in rows:
        placement = resolve_placement(TrainingPlacementConfig(device=device, precision=precision))
        model, _ = initial_model(recipe, data)  # seeded: the same start for every row
        started = time.perf_counter()
        fit(model, data, train, seed=recipe.seed, strategy=SingleProcess(placement),
            augment=recipe.data.augment)  # fmt: skip
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        accuracy = evaluate(model, data.val)["accuracy"]
        results.append({"device": device, "precision": precision, "epoch_s": seconds,
                        "val_accuracy": accuracy})  # fmt: skip
        print(f"  {device} {precision}: {seconds:.1f} s, val {accuracy:.4f}", flush=True)
    base = results[0]["epoch_s"]
    print("\n| device | precision | epoch s | vs CPU fp32 | val accuracy after 1 epoch |")
    print("|---|---|---|---|---|")
    for row in results:
        print(f"| {row['device']} | {row['precision']} | {row['epoch_s']:.1f} "
              f"| {base / row['epoch_s']:.2f}x | {row['val_accuracy']:.4f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
