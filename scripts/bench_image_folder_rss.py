"""Does peak memory stay flat as an image folder grows? Measured, not assumed.

Writes Fashion-MNIST (the Debian package's IDX files; `scripts/get-fashion-mnist.sh`
installs them) as PNG folders `train/<class>/*.png` with the first 10,000 and all
60,000 training images, and `test/<class>/*.png` with the same first `--test`
official test images for both. Then runs one short recipe on each folder (a small
CNN, 1 epoch over every training image, static int8, export), each as its own
process under `/usr/bin/time -v compress run ...`, and reports the maximum resident
set size, wall time and final accuracy of each, and the RSS difference (the lazy
path's promise: < 300 MB apart). With `--in-memory` it also runs the same recipe on
`source = "fashion-mnist"` (the array path: every image in memory), with
`max_train_samples = 10000` and without, for comparison.

Usage:
    python scripts/bench_image_folder_rss.py [--work /tmp/compress-bench-images]
        [--sizes 10000 60000] [--test 2000] [--workers 1] [--in-memory]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tomli_w

from compress.data.sources import FASHION_MNIST_DIR, _read_idx
from compress.runtime.machine import machine_info

CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat",
           "sandal", "shirt", "sneaker", "bag", "ankle-boot"]  # fmt: skip


def write_pngs(images: np.ndarray, labels: np.ndarray, folder: Path) -> None:
    """`images[i]` as `folder/<class>/<i>.png` (skipped when the folder is complete)."""
    from PIL import Image

    marker = folder / ".complete"
    if marker.exists() and marker.read_text() == str(len(images)):
        return
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for index, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(folder / CLASSES[label] / f"{index:05d}.png")
    marker.write_text(str(len(images)))


def recipe(data: dict, workers: int) -> dict:
    """The short recipe both folders run: 1 epoch of a small CNN, int8, export."""
    return {
        "name": "bench-image-folder",
        "seed": 0,
        "data": data,
        "model": {"architecture": "cnn", "widths": [8, 16]},
        "runtime": {
            "threads": 1,
            "train_threads": 1,
            "batch_size": 1,
            "warmup": 2,
            "repeats": 5,
            "rounds": 2,
        },  # fmt: skip
        "stages": [
            {
                "type": "train",
                "epochs": 1,
                "batch_size": 128,
                "optimizer": {"name": "adam", "lr": 0.01},
            },  # fmt: skip
            {"type": "quantize", "mode": "static", "calibration": {"samples": 256}},
            # the point is memory, not int8 fidelity: a 1-epoch model on a small folder
            # can disagree with its int8 copy on a few % of validation images
            {"type": "export", "agreement_min": 0.9},
        ],
    }


def run(label: str, recipe_dict: dict, work: Path) -> dict:
    """One `compress run` under /usr/bin/time -v: peak RSS, wall time, accuracy."""
    path = work / f"{label}.toml"
    path.write_text(tomli_w.dumps(recipe_dict))
    out = work / f"run-{label}"
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "compress", "run", str(path),
               "--out", str(out), "--no-cache"]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    if done.returncode != 0 or rss is None:
        sys.exit(f"{label}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {
        "label": label,
        "train_images": report["data"]["sizes"]["train"],
        "sizes": report["data"]["sizes"],
        "max_rss_mb": int(rss.group(1)) / 1024,
        "wall_s": wall,
        "accuracy": report["stages"][-1]["metrics"]["accuracy"],
        "teacher_accuracy": report["stages"][0]["metrics"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/compress-bench-images"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=1, help="data.num_workers")
    parser.add_argument("--in-memory", action="store_true", help="also the array path")
    args = parser.parse_args()

    source = Path(FASHION_MNIST_DIR)
    if not (source / "train-images-idx3-ubyte.gz").exists():
        sys.exit(f"{source}: no Fashion-MNIST; run scripts/get-fashion-mnist.sh first")
    x_train = _read_idx(source / "train-images-idx3-ubyte.gz", 3)
    y_train = _read_idx(source / "train-labels-idx1-ubyte.gz", 1)
    x_test = _read_idx(source / "t10k-images-idx3-ubyte.gz", 3)
    y_test = _read_idx(source / "t10k-labels-idx1-ubyte.gz", 1)
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for size in args.sizes:
        root = args.work / f"fashion-{size}"
        started = time.monotonic()
        write_pngs(x_train[:size], y_train[:size], root / "train")
        write_pngs(x_test[: args.test], y_test[: args.test], root / "test")
        print(f"{root}: PNGs ready in {time.monotonic() - started:.0f} s", flush=True)
        data = {"source": "image-folder", "path": str(root), "channels": 1,
                "num_workers": args.workers}  # fmt: skip
        results.append(run(f"folder-{size}", recipe(data, args.workers), args.work))
        print(json.dumps(results[-1]), flush=True)
    if args.in_memory:
        for size in args.sizes:
            data = {"source": "fashion-mnist"}
            if size < len(x_train):
                data["max_train_samples"] = int(size * 0.85)  # the folder run's train split
            results.append(run(f"arrays-{size}", recipe(data, args.workers), args.work))
            print(json.dumps(results[-1]), flush=True)

    folders = [r for r in results if r["label"].startswith("folder")]
    difference = folders[-1]["max_rss_mb"] - folders[0]["max_rss_mb"]
    cpu = machine_info().get("cpu", "unknown CPU")
    print(f"\nCPU: {cpu}\n")
    print("| run | train images | max RSS | wall | teacher acc | final acc |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label']} | {r['train_images']} | {r['max_rss_mb']:.0f} MB | "
            f"{r['wall_s']:.0f} s | {r['teacher_accuracy']:.2%} | {r['accuracy']:.2%} |"
        )
    print(f"\nimage-folder RSS difference, {folders[-1]['label']} - {folders[0]['label']}: "
          f"{difference:+.0f} MB (limit 300 MB)")  # fmt: skip
    (args.work / "results.json").write_text(json.dumps(
        {"cpu": cpu, "results": results, "rss_difference_mb": difference}, indent=2))  # fmt: skip
    if abs(difference) >= 300:
        sys.exit(1)


if __name__ == "__main__":
    main()
