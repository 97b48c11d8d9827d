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

from compress.models.stats import compare_macs, count_macs, count_params
from compress.recipe.loader import Recipe
from compress.report.records import Flag, Latency, Metrics, Profile, Spread
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
    if result.exported != path:  # the stage's own export of this model is checked below
        export_onnx(result.model, signature, path, debug=debug)
    check_parity(result.model, path, signature, PARITY_BATCH_SIZES, PARITY_ATOL, PARITY_RTOL, seed)
    return path


def is_quantized(onnx_path: Path) -> bool:
    """Whether the file holds Q/DQ nodes (fp16 conversion only makes sense without)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in graph.node)


# Nodes of a quantized graph: its MatMuls and Convs are not where the arithmetic is,
# so its MACs are not compared with the torch model's.
_INTEGER_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
     "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulNBits", "GatherBlockQuantized"}
)  # fmt: skip


def float_graph_macs(onnx_path: Path, signature) -> int | None:
    """MACs of a float ONNX graph (`count_onnx_macs`), None for a quantized one."""
    import onnx

    from compress.models.onnx_file import count_onnx_macs

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    if any(node.op_type in _INTEGER_OPS for node in graph.node):
        return None
    return count_onnx_macs(onnx_path, signature)


def count_warnings(metrics: Metrics | dict[str, Any]) -> list[str]:
    """What the report must say about a stage's counts: torch's and the deployed ONNX
    graph's MACs apart by more than 2% (the report shows torch's)."""
    if isinstance(metrics, Metrics):
        metrics = metrics.to_json()
    if metrics.get("macs_onnx") is None or metrics.get("macs") is None:
        return []
    message = compare_macs(metrics["macs"], metrics["macs_onnx"])
    return [f"{message}; the report shows torch's count"] if message else []


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def slowdown_flag(
    metrics: Metrics, stage: str, input_stage: str, accepted: float | None = None
) -> Flag | None:
    """The flag a stage slower than its input (at any deployment profile) carries into
    the report, or None. `accepted`: the stage's `speedup_vs_input_min`, when its recipe
    says how much slowdown it accepts (the budget then gates it)."""
    if not metrics.slower_than_input:
        return None
    label = metrics.slower_profiles[0]
    measured = metrics.profiles[label]
    ratio = measured.speedup_vs_input
    p50 = measured.latency[metrics.provider].p50_ms
    where = f" at profile {label}" if len(metrics.profiles) > 1 else ""
    message = (
        f"stage '{stage}' is slower than its input (stage '{input_stage}'){where}: "
        f"{ratio.median:.2f}x its speed ({ratio.min:.2f}-{ratio.max:.2f} over "
        f"{ratio.rounds} interleaved rounds), p50 {measured.input_p50_ms_interleaved:.4g} "
        f"-> {p50:.4g} ms"
    )
    if accepted is not None:
        message += f"; the recipe accepts down to {accepted:.2f}x (speedup_vs_input_min)"
    return Flag(kind="slower_than_input", input_stage=input_stage, profile=label,
                accepted=accepted, message=message)  # fmt: skip


class Measurement:
    """Measures stage outputs the same way for one run.

    Args:
        recipe: its `[runtime]` table says how to time, its seed the latency inputs.
        unavailable: providers the recipe allows to be missing and that are.
    """

    def __init__(self, recipe: Recipe, unavailable: dict[str, str]):
        self.recipe = recipe
        self.unavailable = unavailable
        # computed once a run: the baseline's test logits, an ONNX model's counts
        self._baseline_logits: tuple[Path | None, Any] = (None, None)
        self._onnx_counts: tuple[Path, dict[str, int]] | None = None

    def evaluate(
        self,
        result: StageResult,
        onnx_path: Path,
        stage_dir: Path,
        ctx: RunContext,
        baseline: Metrics | None = None,
    ) -> Metrics:
        """Accuracy, size, params, MACs and latency of a stage's deployed file, with
        ratios against the run's `baseline` (None while measuring the first stage)."""
        from compress.runtime.evaluate import split_samples

        runtime, data = self.recipe.runtime, ctx.data
        baseline_onnx, input_onnx = ctx.baseline_onnx, ctx.input_onnx
        signature = result.spec.signature
        metrics = Metrics(
            **self._outputs(onnx_path, baseline_onnx, data.test, signature),
            size_bytes=onnx_path.stat().st_size,
            # zeros (unstructured pruning) and shared values (codebooks) only pay off once
            # compressed; report it beside the raw size rather than implying a speed-up
            size_compressed_bytes=len(zlib.compress(onnx_path.read_bytes(), 9)),
            **self._counts(result, baseline_onnx or onnx_path, onnx_path, signature),
            primary_provider=runtime.providers[0],
            latency={},
        )
        if self.unavailable:
            metrics.providers_unavailable = self.unavailable
        # timed on real test inputs (a text model's batches padded to their longest row),
        # the same rows for every model of the run
        samples = split_samples(data.test, signature, max_rows=self._latency_rows(data.test))
        files = (onnx_path, baseline_onnx, input_onnx)
        self._latency(metrics, signature, files, stage_dir, samples)
        if baseline is None:
            metrics.speedup = Spread(median=1.0, min=1.0, max=1.0, rounds=0)
        reference = baseline or metrics
        metrics.size_ratio = reference.size_bytes / metrics.size_bytes
        if metrics.accuracy is not None and reference.accuracy is not None:
            metrics.accuracy_change = metrics.accuracy - reference.accuracy
        else:  # no labels: agreement with the baseline is the fidelity figure
            metrics.accuracy_change = None
        return metrics

    def _latency_rows(self, split) -> int | None:
        """Rows of a lazy split to decode for latency: what the biggest profile's timed
        batches draw from (the first rows; an in-memory split keeps its seeded draw)."""
        from compress.runtime.latency import MAX_BATCHES

        if split.reader is None:
            return None
        biggest = max(profile.batch for profile in self.recipe.runtime.deployment_profiles())
        return MAX_BATCHES * biggest

    def _outputs(self, onnx_path, baseline_onnx, split, signature) -> dict[str, Any]:
        """Test accuracy (None without labels) and fidelity to the baseline's outputs:
        top-1 agreement and mean KL (the baseline itself: 1 and 0)."""
        from compress.runtime.evaluate import onnx_logits
        from compress.runtime.fidelity import fidelity

        logits = onnx_logits(onnx_path, split, signature)
        labeled = split.labeled and len(split) > 0
        accuracy = float((logits.argmax(1) == split.y.numpy()).mean()) if labeled else None
        if baseline_onnx is None or baseline_onnx == onnx_path:
            self._baseline_logits = (onnx_path, logits)
            return {"accuracy": accuracy, "agreement": 1.0, "kl_mean": 0.0}
        cached_path, reference = self._baseline_logits
        if cached_path != baseline_onnx:  # a resumed run: the baseline came from cache
            reference = onnx_logits(baseline_onnx, split, signature)
            self._baseline_logits = (baseline_onnx, reference)
        return {"accuracy": accuracy, **fidelity(reference, logits)}

    def _counts(self, result, float_onnx: Path, deployed: Path, signature) -> dict[str, int]:
        """Parameters and MACs of the torch model, beside the deployed graph's MACs when
        it is float (`macs_onnx`, the check of the torch count); or, for an ONNX-input
        recipe, of the float file it started from (quantization keeps both counts),
        counted once."""
        if result.model is not None:
            counts = {
                "params": count_params(result.model),
                "macs": count_macs(result.model, signature),
            }
            onnx_macs = float_graph_macs(deployed, signature)
            if onnx_macs is not None:
                counts["macs_onnx"] = onnx_macs
            return counts
        counted = self._onnx_counts
        if counted is None or counted[0] != float_onnx:
            from compress.models.onnx_file import count_onnx_macs, count_onnx_params

            figures = {"params": count_onnx_params(float_onnx),
                       "macs": count_onnx_macs(float_onnx, signature)}  # fmt: skip
            self._onnx_counts = counted = (float_onnx, figures)
        return dict(counted[1])

    def _latency(self, metrics: Metrics, signature, files, stage_dir, samples) -> None:
        """Latency at every deployment profile. The top-level keys hold the first
        profile's figures (what budgets read by default), `profiles` every profile's."""
        onnx_path, baseline_onnx, input_onnx = files
        runtime = self.recipe.runtime
        references = [baseline_onnx] if baseline_onnx not in (None, onnx_path) else []
        # the input is timed only when it is another file with other bytes: a stage that
        # passes its input's file through (export of an int8 model) runs the same graph
        same_as_input = input_onnx is not None and _same_bytes(input_onnx, onnx_path)
        if input_onnx is not None and not same_as_input and input_onnx not in references:
            references.append(input_onnx)
        files = (onnx_path, baseline_onnx, input_onnx, same_as_input)
        metrics.profiles = {}
        for index, profile in enumerate(runtime.deployment_profiles()):
            measured = self._profile(profile, signature, references, files, samples)
            metrics.profiles[profile.label] = measured
            if index == 0:  # the same objects: an fp16 entry below lands in both
                for key in measured.model_fields_set - {"batch", "threads"}:
                    setattr(metrics, key, getattr(measured, key))
        slower = [label for label, m in metrics.profiles.items() if m.slower_than_input]
        if "speedup_vs_input" in metrics.model_fields_set:
            metrics.slower_than_input = bool(slower)
            metrics.slower_profiles = slower
        self._gpu_fp16(metrics, signature, onnx_path, stage_dir, samples)

    def _profile(self, profile, signature, references, files, samples) -> Profile:
        """One profile: every provider; on the primary one, interleaved with the
        baseline's file and the stage's input (the previous stage's file)."""
        from compress.runtime.latency import is_slower, measure_with_runtime, speedup

        onnx_path, baseline_onnx, input_onnx, same_as_input = files
        runtime, seed = self.recipe.runtime, self.recipe.seed
        out = Profile(batch=profile.batch, threads=profile.threads, latency={})
        primary = runtime.providers[0]
        for provider in [p for p in runtime.providers if p not in self.unavailable]:
            paths = [*references, onnx_path] if provider == primary else [onnx_path]
            timed = measure_with_runtime(
                paths, signature, runtime, provider, seed, profile, samples=samples
            )
            stats = dict(zip(paths, timed))
            out.latency[provider] = Latency.model_validate(stats[onnx_path].to_dict())
            if provider != primary:
                continue
            if baseline_onnx in stats and baseline_onnx != onnx_path:
                out.speedup = Spread(**speedup(stats[baseline_onnx], stats[onnx_path]))
                out.teacher_p50_ms_interleaved = stats[baseline_onnx].p50_ms
            if input_onnx in stats and input_onnx != onnx_path:
                ratio = speedup(stats[input_onnx], stats[onnx_path])
                out.input_p50_ms_interleaved = stats[input_onnx].p50_ms
            elif same_as_input:
                ratio = {"median": 1.0, "min": 1.0, "max": 1.0, "rounds": 0}
                out.input_p50_ms_interleaved = stats[onnx_path].p50_ms
            else:
                continue
            out.speedup_vs_input = Spread(**ratio)
            out.slower_than_input = is_slower(ratio)
        return out

    def _gpu_fp16(self, metrics: Metrics, signature, onnx_path, stage_dir, samples) -> None:
        """An fp16 copy of a float model on the GPU providers, when the recipe asks."""
        from compress.runtime.latency import measure_with_runtime

        runtime, seed = self.recipe.runtime, self.recipe.seed
        gpus = [p for p in runtime.providers if p != "cpu" and p not in self.unavailable]
        if runtime.gpu_fp16 and gpus and not is_quantized(onnx_path):
            from compress.runtime.fp16 import convert_to_fp16

            half = convert_to_fp16(onnx_path, stage_dir / "model.fp16.onnx")
            for provider in gpus:
                (stats,) = measure_with_runtime(
                    [half], signature, runtime, provider, seed=seed, samples=samples
                )
                metrics.latency[f"{provider}-fp16"] = Latency.model_validate(stats.to_dict())
