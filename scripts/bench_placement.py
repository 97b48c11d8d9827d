"""Does int8 placement (`format = "placement"`) beat full int8? Measured, not assumed.

For each model the quantize stage's placement search runs as the stage runs it
(`compress.quantization.placement.search_placement`, the stage's default static
settings: u8s8 QDQ, per-channel weights, 7-bit weights where the CPU lacks VNNI),
then fp32, full int8 and the searched placement are timed interleaved in one
`measure_latency` call (1 thread, batch 1, median of the per-round ratios and their
spread). Models:

- ResNet-18 at 224x224: torchvision's layout (scripts/bench_resnet18_int8.py's
  `ResNet18`), random weights with non-trivial BatchNorm statistics, calibrated on 32
  random images (latency does not depend on the weights).
- The ResNet-shaped net of tests/unit/test_quantization_placement.py (widths 16-64,
  one block per stage, 3x3 stem of stride 2), random weights.
- The Fashion-MNIST student of recipes/fashion-mnist.toml, and the same CNN at the
  widths the recipe's pruning leaves ([16, 32, 96]), **untrained** (latency does not
  depend on the weights), calibrated and validated on real Fashion-MNIST images when
  /usr/share/datasets/fashion-mnist exists (skipped otherwise).

Untrained and random-weight models have no accuracy to keep, so the accuracy limit is
off (1.0) and the table shows agreement with fp32's predictions instead.

Usage:
    python scripts/bench_placement.py [--rounds 7 --repeats 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.models import build_model
from compress.quantization.placement import SearchInputs, search_placement
from compress.recipe.schema import CNNConfig, DataConfig, ResNetConfig, RuntimeConfig
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.machine import int8_saturates, machine_info
from compress.runtime.onnx_export import export_onnx

FASHION = Path("/usr/share/datasets/fashion-mnist")
STUDENT = {"widths": [32, 64, 128], "convs_per_block": 1, "pool": "flatten", "hidden": 128,
           "dropout": 0.2}  # fmt: skip


def _with_bn_statistics(model: nn.Module) -> nn.Module:
    with torch.no_grad():  # non-trivial BatchNorm statistics, as a trained model has
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_var.uniform_(0.5, 2.0)
                module.running_mean.uniform_(-0.1, 0.1)
    return model.eval()


def _resnet18() -> nn.Module:
    # the earlier benchmark's model; run as a script, scripts/ is on sys.path
    from bench_resnet18_int8 import ResNet18

    torch.manual_seed(0)
    return _with_bn_statistics(ResNet18())


def _models():
    """(name, model, per-sample shape, calibration images, validation images)."""
    rng = np.random.default_rng(0)
    shape = (3, 224, 224)
    images = rng.standard_normal((64, *shape)).astype(np.float32)
    yield "ResNet-18 224x224 (random weights)", _resnet18(), shape, images[:32], images[32:]
    torch.manual_seed(0)
    small = build_model(ResNetConfig(widths=[16, 32, 64], stem_stride=2), shape, 10)
    name = "ResNet [16, 32, 64] 224x224, stem stride 2 (random weights; the unit test's net)"
    yield name, _with_bn_statistics(small), shape, images[:32], images[32:]
    if not FASHION.exists():
        print(f"{FASHION} not found: Fashion-MNIST rows skipped", flush=True)
        return
    from compress.data import load_data

    data = load_data(DataConfig(source="fashion-mnist"), seed=0)
    calibration, val = data.train.x[:256].numpy(), data.val.x[:1000].numpy()
    for name, widths in (("student", STUDENT["widths"]), ("pruned-shape student", [16, 32, 96])):
        torch.manual_seed(0)
        config = CNNConfig(**{**STUDENT, "widths": widths})
        model = build_model(config, (1, 28, 28), 10).eval()
        yield f"Fashion-MNIST {name} {widths} (untrained)", model, (1, 28, 28), calibration, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    info = machine_info()
    reduce_range = int8_saturates()
    print(f"CPU {info['cpu']}, {info['cpu_count']} cores, int8-relevant ISA: "
          f"{', '.join(info['isa']) or 'none'}; onnxruntime {info['onnxruntime']}; "
          f"7-bit weights (stage default here): {reduce_range}", flush=True)  # fmt: skip
    runtime = RuntimeConfig(threads=1, batch_size=1, warmup=10, repeats=args.repeats,
                            rounds=args.rounds)  # fmt: skip
    settings = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True,
                "reduce_range": reduce_range}  # fmt: skip
    table = ["| model | variant | int8 layers | p50 ms | speed-up vs fp32 (spread) | "
             "agreement with fp32 |", "|---|---|---|---|---|---|"]  # fmt: skip
    notes = []
    for name, model, shape, calibration, val in _models():
        with tempfile.TemporaryDirectory(prefix="bench-placement-") as scratch:
            fp32 = export_onnx(model, shape, Path(scratch) / "fp32.onnx")
            labels = onnx_predictions(fp32, val).argmax(1)  # agreement with fp32
            start = time.perf_counter()
            inputs = SearchInputs(calibration, val, labels, runtime, shape, 1.0)
            report = search_placement(fp32, Path(scratch) / "out.onnx", inputs, settings)
            seconds = time.perf_counter() - start
        layers = len(report["layers"])
        table.append(f"| {name} | fp32 | 0 / {layers} | {report['fp32_p50_ms']:.3f} | 1.00x | - |")
        for row in report["models"]:
            ratio = row["speedup"]
            table.append(
                f"| {name} | {row['model']} | {row['int8_layers']} / {layers} | "
                f"{row['p50_ms']:.3f} | {ratio['median']:.2f}x ({ratio['min']:.2f}-"
                f"{ratio['max']:.2f}) | {row['val_accuracy']:.1%} |"
            )
        if not any(row["model"] == "int8 placement" for row in report["models"]):
            table.append(f"| {name} | int8 placement | = full int8 (no layer returned) | | | |")
        fp32_rows = [r for r in report["layers"] if r["searched"] == "fp32"]
        notes.append(
            f"- {name}: chose **{report['format']}** ({report['reason']}); search "
            f"{len(report['trials'])} candidates, {seconds:.0f} s. Returned to fp32: "
            + ("; ".join(f"{r['node']} ({r['why']})" for r in fp32_rows) or "none")
        )
        for trial in report["trials"]:
            ratio = trial["speedup"]
            print(f"  {name}: {len(trial['fp32_layers'])} layer(s) {trial['fp32_layers'][:3]}"
                  f"{'...' if len(trial['fp32_layers']) > 3 else ''} -> fp32: "
                  f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}) "
                  f"{'kept' if trial['kept'] else 'rejected'}", flush=True)  # fmt: skip
    print("\n".join(table))
    print("\n".join(notes))


if __name__ == "__main__":
    main()
