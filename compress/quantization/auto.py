"""`format = "auto"`: build each int8 candidate, measure it, keep the fastest that is
accurate enough, or keep fp32 when none is faster.

Measured because the right format depends on the CPU and the model: on this x86 VM,
u8s8 QDQ ran every ResNet-18 convolution in int8 (1.9x) while s8s8 left 19 of 29
compute nodes in float (1.1x), dynamic quantization of convolutions was 6-9x slower
than fp32, and models of a few million MACs ran slower in int8 at batch 1 than fp32.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from compress.errors import CompressError
from compress.models.signature import InputSignature, Samples
from compress.quantization.dynamic import quantize_dynamic_onnx
from compress.quantization.static import quantize_static_onnx
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.latency import measure_with_runtime, speedup

FP32 = "fp32 (kept)"


def _format_errors() -> tuple[type[BaseException], ...]:
    """What a quantizer raises for a format it cannot build for a model: our own
    StageError (pre-processing), ONNX Runtime's errors (RuntimeError subclasses, and
    ValueError from its Python tooling) and onnx's checker. Anything else is a bug and
    propagates."""
    import onnx

    return (CompressError, RuntimeError, ValueError, onnx.checker.ValidationError)


def candidates(
    calibration_x: Samples,
    per_channel: bool,
    calibration,
    reduce_range: bool = False,
    op_types: Sequence[str] | None = None,
) -> dict[str, Callable]:
    """Name -> function(fp32_path, out_path) for every format tried (`op_types`: the
    dynamic candidate's ops; None: MatMul, Gemm and any embedding Gather)."""

    def static(activation: str) -> Callable:
        return lambda src, dst: quantize_static_onnx(
            src, dst, calibration_x, activation_type=activation, weight_type="int8",
            per_channel=per_channel, calibration=calibration, reduce_range=reduce_range,
        )  # fmt: skip

    return {
        "u8s8 QDQ": static("uint8"),
        "s8s8 QDQ": static("int8"),
        "dynamic int8": lambda src, dst: quantize_dynamic_onnx(
            src, dst, per_channel=per_channel, op_types=op_types
        ),
    }


def choose(rows: list[dict[str, Any]], drop_max: float) -> tuple[str, str]:
    """The fastest candidate within `drop_max` of fp32's validation accuracy and faster
    than fp32 (median interleaved speed-up > 1); else fp32. Returns (name, why)."""
    eligible = [r for r in rows if r["val_accuracy_drop"] <= drop_max and r["speedup"] > 1.0]
    if eligible:
        best = max(eligible, key=lambda r: r["speedup"])
        return best["format"], (
            f"fastest candidate within {drop_max:.2%} validation accuracy of fp32 "
            f"({best['speedup']:.2f}x)"
        )
    accurate = [r for r in rows if r["val_accuracy_drop"] <= drop_max]
    if accurate:
        fastest = max(accurate, key=lambda r: r["speedup"])
        return FP32, (
            f"no int8 format was faster than fp32 (best accurate one: {fastest['format']} "
            f"at {fastest['speedup']:.2f}x); the fp32 model passes through"
        )
    return FP32, (
        f"every int8 format lost more than {drop_max:.2%} validation accuracy; the fp32 "
        "model passes through"
    )


def search(
    fp32_path: Path,
    out_path: Path,
    calibration_x: Samples,
    val_x: Samples,
    val_y: np.ndarray,
    runtime,
    signature: InputSignature | tuple[int, ...],
    drop_max: float,
    per_channel: bool = True,
    calibration=None,
    reduce_range: bool = False,
    op_types: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Try every candidate; write the chosen model (or fp32) to `out_path`. Each is
    timed interleaved with fp32 on the validation inputs (real samples: a text model's
    tokenized batches, trimmed to their longest row), not random ones."""

    def accuracy(path: Path) -> float:
        return float((onnx_predictions(path, val_x).argmax(1) == val_y).mean())

    base_accuracy = accuracy(fp32_path)
    format_errors = _format_errors()
    with tempfile.TemporaryDirectory(prefix="compress-auto-") as scratch:
        built: dict[str, Path] = {}
        failures: dict[str, str] = {}
        notes: set[str] = set()  # the static candidates' pre-processing fallback, if any
        for name, build in candidates(
            calibration_x, per_channel, calibration, reduce_range, op_types
        ).items():
            path = Path(scratch) / f"{name.replace(' ', '-')}.onnx"
            try:
                report = build(fp32_path, path) or {}
                notes.update([report["preprocess_note"]] if "preprocess_note" in report else [])
            except format_errors as exc:  # a format ORT cannot produce for this model
                failures[name] = f"{type(exc).__name__}: {exc}"
                continue
            built[name] = path
        stats = measure_with_runtime(
            [fp32_path, *built.values()], signature, runtime, samples=val_x
        )
        rows = []
        for (name, path), stat in zip(built.items(), stats[1:]):
            value = accuracy(path)
            ratio = speedup(stats[0], stat)
            rows.append(
                {
                    "format": name,
                    "val_accuracy": value,
                    "val_accuracy_drop": base_accuracy - value,
                    "p50_ms": stat.p50_ms,
                    "speedup": ratio["median"],
                    "speedup_min": ratio["min"],
                    "speedup_max": ratio["max"],
                }
            )
        chosen, reason = choose(rows, drop_max)
        shutil.copyfile(built[chosen] if chosen != FP32 else fp32_path, out_path)
    return {
        "format": chosen,
        "reason": reason,
        "fp32_val_accuracy": base_accuracy,
        "fp32_p50_ms": stats[0].p50_ms,
        "candidates": rows,
        "failed": failures,
        **({"preprocess_note": sorted(notes)[0]} if notes else {}),
    }
