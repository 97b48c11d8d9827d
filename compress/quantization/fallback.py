"""Accuracy-aware fallback: return the layers int8 hurts most to float, one at a time.

Sensitivity is measured, not guessed: each quantizable layer is quantized alone and
the model's logits compared with the float model's on validation samples (mean
squared error). Then, worst first, layers are excluded from quantization until the
validation accuracy is back within the allowed drop, or the layer limit is reached.
Everything is measured on the validation split; the test split stays for the report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compress.artifacts import atomic_write_bytes
from compress.models.signature import Samples, slice_samples
from compress.quantization.static import quantizable_nodes, quantize_static_onnx
from compress.runtime.evaluate import onnx_predictions


def _accuracy(path: Path, x: Samples, y: np.ndarray) -> float:
    return float((onnx_predictions(path, x).argmax(1) == y).mean())


def rank_layers(
    fp32_path: Path, calibration_x: Samples, x: Samples, settings: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every quantizable layer with the logit error it causes when quantized alone,
    worst first."""
    reference = onnx_predictions(fp32_path, x)
    ranking = []
    with tempfile.TemporaryDirectory(prefix="compress-sensitivity-") as scratch:
        for node in quantizable_nodes(fp32_path):
            path = Path(scratch) / "one.onnx"
            quantize_static_onnx(fp32_path, path, calibration_x, **settings, only=(node,))
            error = float(np.mean((onnx_predictions(path, x) - reference) ** 2))
            ranking.append({"node": node, "logit_mse": error})
    return sorted(ranking, key=lambda row: row["logit_mse"], reverse=True)


def restore_accuracy(
    fp32_path: Path,
    int8_path: Path,
    calibration_x: Samples,
    val_x: Samples,
    val_y: np.ndarray,
    settings: dict[str, Any],
    drop_max: float,
    max_layers: int,
    always_float: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Rewrite `int8_path` with the fewest float layers that keep the validation
    accuracy within `drop_max` of fp32 (or with `max_layers` float layers if that is
    not enough). Returns what was measured, for the report."""
    fp32_accuracy = _accuracy(fp32_path, val_x, val_y)
    int8_accuracy = _accuracy(int8_path, val_x, val_y)
    report: dict[str, Any] = {
        "val_accuracy_drop_max": drop_max,
        "fp32_val_accuracy": fp32_accuracy,
        "int8_val_accuracy": int8_accuracy,
        "float_layers": [],
        "steps": [],
    }
    if fp32_accuracy - int8_accuracy <= drop_max:
        report["needed"], report["met"] = False, True
        return report
    report["needed"] = True
    ranking = [
        row
        for row in rank_layers(fp32_path, calibration_x, slice_samples(val_x, 0, 1000), settings)
        if row["node"] not in always_float
    ]
    report["sensitivity"] = ranking
    excluded: list[str] = []
    accuracy = int8_accuracy
    with tempfile.TemporaryDirectory(prefix="compress-fallback-") as scratch:
        candidate = Path(scratch) / "candidate.onnx"
        for row in ranking[:max_layers]:
            excluded.append(row["node"])
            quantize_static_onnx(
                fp32_path,
                candidate,
                calibration_x,
                **settings,
                exclude=always_float + tuple(excluded),
            )
            accuracy = _accuracy(candidate, val_x, val_y)
            report["steps"].append({"float_layers": list(excluded), "val_accuracy": accuracy})
            if fp32_accuracy - accuracy <= drop_max:
                break
        if excluded:
            atomic_write_bytes(int8_path, candidate.read_bytes())
    report["float_layers"] = excluded
    report["final_val_accuracy"] = accuracy
    report["met"] = fp32_accuracy - accuracy <= drop_max
    return report
