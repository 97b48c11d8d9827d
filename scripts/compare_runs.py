"""Compare two run folders of one recipe: per-stage accuracies, every stage's ONNX file,
and, where the bytes differ, the files' outputs on the whole test split.

A change that alters only how a graph is serialized (onnx-ir writes no empty
doc strings, the exporter's metadata goes) changes the bytes but not the model: this
script tells the two apart. It exits 0 when every accuracy is equal and every file
either has the same bytes or computes bit-identical logits on every test row.

Usage:
    python scripts/compare_runs.py recipes/digits.toml runs/digits-before runs/digits-after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from compress.artifacts import sha256_file
from compress.pipeline.setup import load_run_data
from compress.recipe import load_recipe
from compress.runtime.evaluate import onnx_logits


def _stages(run: Path) -> dict[str, dict]:
    report = json.loads((run / "report.json").read_text())
    return {stage["name"]: stage for stage in report["stages"]}


def compare(recipe_path: Path, before: Path, after: Path) -> bool:
    """Print one line per stage and for the final model; True when they all agree."""
    recipe = load_recipe(recipe_path)
    data = load_run_data(recipe)
    old, new = _stages(before), _stages(after)
    same = list(old) == list(new)
    pairs = [(name, old[name]["artifacts"]["onnx"], new[name]["artifacts"]["onnx"])
             for name in old if name in new]  # fmt: skip
    pairs.append(("final", "final/model.onnx", "final/model.onnx"))
    for name, old_file, new_file in pairs:
        if name != "final":
            accuracies = old[name]["metrics"]["accuracy"], new[name]["metrics"]["accuracy"]
            same &= accuracies[0] == accuracies[1]
            print(f"{name}: accuracy {accuracies[0]!r} -> {accuracies[1]!r}")
        a, b = before / old_file, after / new_file
        if sha256_file(a) == sha256_file(b):
            print(f"  {new_file}: same bytes ({sha256_file(b)[:16]})")
            continue
        logits_a, logits_b = onnx_logits(a, data.test), onnx_logits(b, data.test)
        equal = logits_a.shape == logits_b.shape and np.array_equal(logits_a, logits_b)
        same &= equal
        print(
            f"  {new_file}: bytes differ ({a.stat().st_size} -> {b.stat().st_size}); "
            f"logits on all {len(logits_a)} test rows "
            + ("bit-identical" if equal else f"DIFFER (max {np.abs(logits_a - logits_b).max()})")
        )
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    sys.exit(0 if compare(args.recipe, args.before, args.after) else 1)


if __name__ == "__main__":
    main()
