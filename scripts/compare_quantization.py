"""Compare quantization methods on one trained model: accuracy, file size, latency.

Variants: fp32; static int8 (u8s8 QDQ) with 8-bit and with 7-bit weights
(`reduce_range`, the stage's default on CPUs without VNNI); 7-bit static with the
accuracy-aware fallback (validation drop <= 1 point); QAT (the quantize stage's
mode = "qat", distilling from the fp32 model); k-means weight sharing and
power-of-two weights at the given bit widths. Accuracy is
the test split on ONNX Runtime; latency is interleaved across all variants
(A B C ... A B C ...) on one thread at batch 1, median of per-round p50.

Usage (after a run that saved a stage folder, e.g. the Fashion-MNIST teacher):
    python scripts/compare_quantization.py --model runs/fashion-mnist/train \
        --recipe recipes/fashion-mnist.toml --out docs/quantization-comparison.md
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from compress.data import load_data
from compress.models import load_model
from compress.quantization.codebook import encode_onnx
from compress.quantization.fallback import restore_accuracy
from compress.quantization.static import quantize_static_onnx
from compress.recipe import load_recipe
from compress.recipe.stages import CalibrationConfig, QuantizeStageConfig
from compress.runtime.evaluate import onnx_accuracy
from compress.runtime.latency import measure_latency, speedup
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import RunContext
from compress.stages.quantize import QuantizeStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a stage folder (model.json)")
    parser.add_argument("--recipe", type=Path, required=True, help="for data")
    parser.add_argument("--bits", type=int, nargs="*", default=[4, 3])
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("docs/quantization-comparison.md"))
    args = parser.parse_args()

    recipe = load_recipe(args.recipe)
    data = load_data(recipe.data, recipe.seed)
    model, spec = load_model(args.model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="compare-quantization-") as scratch:
        scratch = Path(scratch)
        fp32 = export_onnx(model, spec.input_shape, scratch / "fp32.onnx")
        rows.append({"variant": "fp32", "path": fp32, "bits": 32.0})
        chosen = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
        calibration_x = data.train.x[chosen[:512]].numpy()
        for reduce_range in (False, True):
            path = scratch / f"int8-{'7' if reduce_range else '8'}bit.onnx"
            quantize_static_onnx(fp32, path, calibration_x, reduce_range=reduce_range)
            rows.append(
                {"variant": f"static int8 (u8s8 QDQ, {7 if reduce_range else 8}-bit weights)",
                 "path": path, "bits": 8.0}
            )  # fmt: skip
        # 7-bit static with the accuracy-aware fallback (validation drop <= 1 point)
        rescued = scratch / "int8-fallback.onnx"
        rescued.write_bytes(path.read_bytes())
        settings = {"activation_type": "uint8", "weight_type": "int8", "per_channel": True,
                    "calibration": CalibrationConfig(), "reduce_range": True}  # fmt: skip
        fallback = restore_accuracy(
            fp32, rescued, calibration_x, data.val.x.numpy(),
            data.val.y.numpy(), settings, drop_max=0.01, max_layers=8,
        )  # fmt: skip
        print(f"fallback: float layers {fallback['float_layers']}", flush=True)
        rows.append(
            {"variant": f"static int8 7-bit + fallback ({len(fallback['float_layers'])} float "
             "layers)", "path": rescued, "bits": 8.0}
        )  # fmt: skip
        qat_dir = scratch / "qat"
        qat_dir.mkdir()
        config = QuantizeStageConfig.model_validate(
            {
                "type": "quantize",
                "mode": "qat",
                "calibration": {"samples": 512},
                "reduce_range": True,
                "qat": {"epochs": args.qat_epochs, "batch_size": 128},
            }  # fmt: skip
        )
        context = RunContext(recipe=recipe, data=data, model=model, spec=spec,
                             workdir=qat_dir, seed=recipe.seed)  # fmt: skip
        qat = QuantizeStage(config, "quantize").run(context).details["quantization"]["qat"]
        print(f"qat: fake-quant val accuracy {qat['val_accuracy_fake_quant_before']:.2%} -> "
              f"{qat['val_accuracy_fake_quant_after']:.2%}", flush=True)  # fmt: skip
        rows.append(
            {"variant": f"QAT ({args.qat_epochs} epochs, distilled, 7-bit weights)",
             "path": qat_dir / "model.onnx", "bits": 8.0}
        )  # fmt: skip
        for method in ("kmeans", "pow2"):
            for bits in args.bits:
                path = scratch / f"{method}{bits}.onnx"
                info = encode_onnx(fp32, path, method, bits)
                rows.append(
                    {"variant": f"{method} {bits}-bit", "path": path,
                     "bits": info["bits_per_weight"], "folded": info}
                )  # fmt: skip
        for row in rows:
            row["accuracy"] = onnx_accuracy(row["path"], data.test)
            row["bytes"] = row["path"].stat().st_size
            print(f"{row['variant']}: {row['accuracy']:.2%}, {row['bytes']:,} bytes", flush=True)
        stats = measure_latency(
            [row["path"] for row in rows],
            spec.input_shape,
            threads=1,
            batch_size=1,
            warmup=20,
            repeats=args.repeats,
            rounds=args.rounds,
        )
    base = rows[0]
    lines = [
        "| variant | bits/weight | test accuracy | vs fp32 (pts) | file bytes | smaller | "
        "p50 ms | speed-up (spread) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, stat in zip(rows, stats):
        ratio = speedup(stats[0], stat)
        lines.append(
            f"| {row['variant']} | {row['bits']:.2f} | {row['accuracy']:.2%} | "
            f"{100 * (row['accuracy'] - base['accuracy']):+.2f} | {row['bytes']:,} | "
            f"{base['bytes'] / row['bytes']:.2f}x | {stat.p50_ms:.4f} | "
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}) |"
        )
    if fallback.get("sensitivity"):
        worst = ", ".join(
            f"{row['node']} ({row['logit_mse']:.3g})" for row in fallback["sensitivity"][:3]
        )
        lines.append(
            f"\nFallback: int8 validation accuracy {fallback['int8_val_accuracy']:.2%} vs fp32 "
            f"{fallback['fp32_val_accuracy']:.2%}; most sensitive layers (logit MSE when "
            f"quantized alone): {worst}; returned to float: "
            f"{', '.join(fallback['float_layers'])}."
        )
    table = "\n".join(lines)
    print(table)
    args.out.write_text(
        "# Quantization methods compared\n\n"
        f"`python scripts/compare_quantization.py --model {args.model} --recipe {args.recipe}`"
        f"\n\nModel: {args.model} ({data.description}); test split {len(data.test):,} "
        f"images; latency ORT CPU, 1 thread, batch 1, {args.rounds} interleaved rounds of "
        f"{args.repeats}.\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
