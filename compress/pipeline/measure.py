"""The one measurement every stage's output gets, on the deployed ONNX file.

The runner alone calls this after every stage (stages never evaluate themselves):
export for evaluation with a parity check, accuracy on ONNX Runtime, size,
params/MACs, and latency interleaved with the baseline's file so the speed-up
survives machine drift.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from compress.models.stats import count_macs, count_params
from compress.recipe.loader import Recipe
from compress.stages import RunContext, StageResult

# Parity of every export made for measurement: two batch sizes (and, for a model
# with a sequence axis, two lengths); fp32 round-off of a small model stays far below.
PARITY_BATCH_SIZES = [1, 7]
PARITY_ATOL, PARITY_RTOL = 1e-4, 1e-3


def deployable_onnx(result: StageResult, stage_dir: Path, seed: int, debug: bool) -> Path:
    """The stage's own ONNX file, or an export of its torch model checked for parity."""
    from compress.runtime.onnx_export import check_parity, export_onnx

    if result.onnx_path is not None:
        return result.onnx_path
    path = stage_dir / "model.onnx"
    signature = result.spec.signature
    export_onnx(result.model, signature, path, debug=debug)
    check_parity(result.model, path, signature, PARITY_BATCH_SIZES, PARITY_ATOL, PARITY_RTOL, seed)
    return path


def is_quantized(onnx_path: Path) -> bool:
    """Whether the file holds Q/DQ nodes (fp16 conversion only makes sense without)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


class Measurement:
    """Measures stage outputs the same way for one run.

    Args:
        recipe: its `[runtime]` table says how to time, its seed the latency inputs.
        unavailable: providers the recipe allows to be missing and that are.
    """

    def __init__(self, recipe: Recipe, unavailable: dict[str, str]):
        self.recipe = recipe
        self.unavailable = unavailable

    def evaluate(
        self, result: StageResult, onnx_path: Path, stage_dir: Path, ctx: RunContext
    ) -> dict[str, Any]:
        """Accuracy, size, params, MACs and latency of a stage's deployed file, with
        ratios against the run's baseline (none yet while measuring the first stage)."""
        from compress.runtime.evaluate import onnx_accuracy

        runtime, data, model = self.recipe.runtime, ctx.data, result.model
        baseline, baseline_onnx = ctx.baseline_metrics, ctx.baseline_onnx
        signature = result.spec.signature
        metrics: dict[str, Any] = {
            "accuracy": onnx_accuracy(onnx_path, data.test, signature),
            "size_bytes": onnx_path.stat().st_size,
            # zeros (unstructured pruning) and shared values (codebooks) only pay off once
            # compressed; report it beside the raw size rather than implying a speed-up
            "size_compressed_bytes": len(zlib.compress(onnx_path.read_bytes(), 9)),
            "params": count_params(model),
            "macs": count_macs(model, signature),
            "primary_provider": runtime.providers[0],
            "latency": {},
        }
        if self.unavailable:
            metrics["providers_unavailable"] = self.unavailable
        self._latency(metrics, signature, onnx_path, stage_dir, baseline_onnx)
        if baseline is None:
            metrics["speedup"] = {"median": 1.0, "min": 1.0, "max": 1.0, "rounds": 0}
        reference = baseline or metrics
        metrics["size_ratio"] = reference["size_bytes"] / metrics["size_bytes"]
        metrics["accuracy_change"] = metrics["accuracy"] - reference["accuracy"]
        return metrics

    def _latency(self, metrics, signature, onnx_path, stage_dir, baseline_onnx) -> None:
        from compress.runtime.latency import measure_with_runtime, speedup

        runtime, seed = self.recipe.runtime, self.recipe.seed
        compare = baseline_onnx is not None and baseline_onnx != onnx_path
        providers = [p for p in runtime.providers if p not in self.unavailable]
        for provider in providers:
            paths = [baseline_onnx, onnx_path] if compare else [onnx_path]
            stats = measure_with_runtime(paths, signature, runtime, provider, seed=seed)
            metrics["latency"][provider] = stats[-1].to_dict()
            if compare and provider == runtime.providers[0]:
                metrics["speedup"] = speedup(stats[0], stats[-1])
                metrics["teacher_p50_ms_interleaved"] = stats[0].p50_ms
        gpus = [p for p in providers if p != "cpu"]
        if runtime.gpu_fp16 and gpus and not is_quantized(onnx_path):
            from compress.runtime.fp16 import convert_to_fp16

            half = convert_to_fp16(onnx_path, stage_dir / "model.fp16.onnx")
            for provider in gpus:
                (stats,) = measure_with_runtime([half], signature, runtime, provider, seed=seed)
                metrics["latency"][f"{provider}-fp16"] = stats.to_dict()
