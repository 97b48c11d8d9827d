"""`format = "placement"`: int8 where it is faster, fp32 where Q/DQ costs more.

Full static int8 is not always faster layer by layer: a run of int8 layers pays a
QuantizeLinear at its entry, a DequantizeLinear at its exit and, for convolutions,
layout transposes (ORT runs QLinearConv in NHWC). Where a run computes little (a
small classifier after a float ReduceMean, every layer of a tiny net at batch 1),
that overhead costs more than the int8 kernels save. So placement is measured, not
guessed: start from the full int8 model, return candidate groups of layers to fp32,
keep a change only when it is faster in every interleaved round, and finally time
the chosen placement against fp32 and full int8 in one measurement.

Candidates are whole int8 runs (connected int8 layers between float ops: returning a
run removes its Q/DQ pairs) and the layers at a run's two ends, peeled inward while
it pays. A layer inside a run is not tried alone: returning it adds a Q/DQ pair (and
transposes) on each side of it.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from compress.models.signature import InputSignature, Samples, slice_samples
from compress.quantization.auto import FP32
from compress.quantization.static import quantize_static_onnx
from compress.runtime.evaluate import onnx_predictions
from compress.runtime.latency import measure_with_runtime, speedup

LAYER_OPS = ("Conv", "Gemm", "MatMul")  # what `quantizable_nodes` lists and `exclude` takes
# Ops ORT fuses with their Q/DQ into an int8 kernel or runs on int8 data as is (its QDQ
# selector-action transformer); any other op between Q/DQ pairs (ReduceMean, ...) runs in
# float and splits runs. Only the order of candidates depends on this list.
INT8_RUNNABLE = {
    *LAYER_OPS, "ConvTranspose", "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool",
    "MaxPool", "Sigmoid", "LeakyRelu", "Softmax", "Where", "Resize", "Reshape", "Flatten",
    "Transpose", "Squeeze", "Unsqueeze", "Gather", "Slice", "Split", "Pad", "Relu", "Clip",
}  # fmt: skip
PROBE_SAMPLES = 8  # candidates are only timed: their graph does not depend on the ranges


def _dequantized(value) -> bool:
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type == "DequantizeLinear"


def _runs_int8(node) -> bool:
    """All its activation inputs dequantized and all its outputs feeding QuantizeLinear
    only: the pattern ORT fuses into a QLinear op."""
    return (
        node.op_type in INT8_RUNNABLE
        and all(_dequantized(v) for v in node.inputs if v is not None and not v.is_initializer())
        and all(
            v.uses() and all(use.node.op_type == "QuantizeLinear" for use in v.uses())
            for v in node.outputs
        )
    )


def _int8_source(value):
    """The node an int8 input comes from through Q -> DQ, or None."""
    if not _dequantized(value):
        return None
    quantized = value.producer().inputs[0]
    q = quantized.producer() if quantized is not None else None
    if q is None or q.op_type != "QuantizeLinear" or q.inputs[0] is None:
        return None
    return q.inputs[0].producer()


def int8_runs(qdq_path: str | Path) -> tuple[list[str], list[list[str]]]:
    """The layers of a QDQ model, and its int8 runs: groups of layers connected through
    quantized tensors (Q -> DQ) by int8 ops only, each in graph order, smallest first.

    A node is int8 when all its activation inputs are dequantized and all its outputs
    feed QuantizeLinear only (the pattern ORT fuses into a QLinear op).
    """
    import onnx_ir as ir

    graph = ir.load(qdq_path).graph
    parent = {node: node for node in graph if _runs_int8(node)}

    def root(node):
        while parent[node] is not node:
            node = parent[node]
        return node

    for node in parent:  # int8 -> Q -> DQ -> int8 links two nodes of one run
        for value in node.inputs:
            source = _int8_source(value)
            if source is not None and source in parent:
                parent[root(source)] = root(node)
    layers = [node for node in graph if node.op_type in LAYER_OPS]
    runs: dict[Any, list[str]] = defaultdict(list)
    for node in layers:
        if node in parent:
            runs[root(node)].append(node.name)
    return [node.name for node in layers], sorted(runs.values(), key=len)


def _text(r: dict[str, float]) -> str:
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def choose(rows: list[dict[str, Any]], drop_max: float) -> tuple[str, str]:
    """The fastest int8 model (rows: `model`, `speedup` dict vs fp32, `int8_layers`,
    `val_accuracy_drop`) that is faster than fp32 in every round and within `drop_max`
    of its validation accuracy; else fp32. Faster in every round, not in the median
    only: a placement within noise of fp32 would ship int8 error for no speed.
    Returns (model, why)."""
    eligible = [
        r
        for r in rows
        if r["int8_layers"] and r["val_accuracy_drop"] <= drop_max and r["speedup"]["min"] > 1
    ]
    if eligible:
        best = max(eligible, key=lambda r: r["speedup"]["median"])
        return best["model"], (
            f"fastest int8 model within {drop_max:.2%} validation accuracy of fp32: "
            f"{best['int8_layers']} layers in int8, {_text(best['speedup'])} vs fp32"
        )
    seen = "; ".join(f"{r['model']} {_text(r['speedup'])}" for r in rows if r["int8_layers"])
    accurate = [r for r in rows if r["int8_layers"] and r["val_accuracy_drop"] <= drop_max]
    if seen and not accurate:
        return FP32, (
            f"every int8 placement lost more than {drop_max:.2%} validation accuracy "
            f"({seen}); the fp32 model passes through"
        )
    seen = seen or "the search returned every layer to fp32"
    return FP32, (
        f"no int8 placement was faster than fp32 in every round ({seen}); the fp32 model "
        "passes through"
    )


class SearchInputs(NamedTuple):
    """What the measuring searches (`format = "auto"` and "placement") read, in the
    order `quantization.auto.search` takes them as arguments.

    Attributes:
        calibration_x: calibration inputs.
        val_x, val_y: validation inputs and labels (accuracy of each candidate).
        runtime: the recipe's `[runtime]` table (provider, threads, batch, timing).
        signature: the model's inputs (or a per-sample shape).
        drop_max: allowed validation-accuracy drop vs fp32.
    """

    calibration_x: Samples
    val_x: Samples
    val_y: np.ndarray
    runtime: Any
    signature: InputSignature | tuple[int, ...]
    drop_max: float


@dataclass(frozen=True)
class PlacementOptions:
    """How hard the placement search looks.

    Attributes:
        max_candidates: most candidate placements built and timed.
        repeats, rounds: timing per candidate (default repeats: runtime.repeats // 4,
            at least 5).
        min_gain: a change is kept when faster in every round and by this (median).
    """

    max_candidates: int = 12
    repeats: int | None = None
    rounds: int = 3
    min_gain: float = 0.02


def search_placement(
    fp32_path: Path,
    out_path: Path,
    inputs: SearchInputs,
    settings: dict[str, Any],
    options: PlacementOptions = PlacementOptions(),
) -> dict[str, Any]:
    """Search which layers run int8; write the chosen model (or fp32) to `out_path`.

    Args:
        fp32_path: the float model; out_path: where the chosen model is written.
        inputs: calibration and validation samples, runtime, signature, accuracy limit.
        settings: `quantize_static_onnx` keyword settings (the stage's static ones).
        options: the candidate budget and the timing of each candidate.

    Returns:
        The report: chosen format, reason, per-layer rows, speed-ups, accuracies.

    Example:
        >>> inputs = SearchInputs(x, vx, vy, recipe.runtime, (1, 8, 8), 0.01)  # doctest: +SKIP
        >>> search_placement(fp32, out, inputs, {"activation_type": "uint8"})["format"]
        'fp32 (kept)'
    """
    with tempfile.TemporaryDirectory(prefix="compress-placement-") as scratch:
        search = _Search(Path(fp32_path), Path(scratch), inputs, settings, options)
        report = search.quantize("int8.onnx", inputs.calibration_x)
        layers, runs = int8_runs(search.int8_path)
        search.try_runs(runs)
        in_runs = [n for run in runs for n in run]  # int8 in the full int8 model
        int8_layers = [n for n in layers if n in in_runs and n not in search.excluded]
        search.explain_the_rest(layers, in_runs)
        compared = search.compare(in_runs, int8_layers, report)
        shutil.copyfile(compared["shipped"], out_path)
    shipped_int8 = {"full int8": in_runs, "int8 placement": int8_layers}.get(compared["chosen"], [])
    return {
        **(compared["report"] if compared["chosen"] != FP32 else {"float_nodes": layers}),
        "format": compared["chosen"],
        "reason": compared["reason"],
        "layers": [
            {
                "node": node,
                "placement": "int8" if node in shipped_int8 else "fp32",
                "searched": "int8" if node in int8_layers else "fp32",
                "why": search.why[node],
            }
            for node in layers
        ],
        "fp32_val_accuracy": compared["base_accuracy"],
        "fp32_p50_ms": compared["fp32_p50_ms"],
        "models": compared["rows"],
        "trials": search.trials,
        "search": {**dataclasses.asdict(options), "repeats": search.repeats},
    }


class _Search:
    """One placement search: the candidates tried so far, what each layer's fate was
    and why, and the placement that currently holds (`excluded` back in fp32)."""

    def __init__(self, fp32_path: Path, scratch: Path, inputs: SearchInputs,
                 settings: dict[str, Any], options: PlacementOptions):  # fmt: skip
        self.fp32_path, self.scratch, self.inputs = fp32_path, scratch, inputs
        self.settings, self.options = settings, options
        self.repeats = options.repeats or max(5, inputs.runtime.repeats // 4)
        # candidates are timed as the final comparison is (provider, threads, batch), shorter
        self.quick = inputs.runtime.model_copy(
            update={"repeats": self.repeats, "rounds": options.rounds}
        )
        self.probe_x = slice_samples(inputs.calibration_x, 0, PROBE_SAMPLES)
        self.int8_path = scratch / "int8.onnx"
        self.current = self.int8_path
        self.excluded: list[str] = []
        self.trials: list[dict[str, Any]] = []
        self.why: dict[str, str] = {}

    def quantize(self, name: str, samples, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        path = self.scratch / name
        return quantize_static_onnx(self.fp32_path, path, samples, **self.settings,
                                    exclude=exclude)  # fmt: skip

    def accuracy(self, path: Path) -> float:
        predicted = onnx_predictions(path, self.inputs.val_x).argmax(1)
        return float((predicted == self.inputs.val_y).mean())

    def trial(self, group: list[str], label: str) -> bool:
        """Build the current placement with `group` in fp32 too; keep it if faster."""
        name = f"candidate-{len(self.trials)}.onnx"
        self.quantize(name, self.probe_x, exclude=tuple(self.excluded + group))
        path = self.scratch / name
        stats = measure_with_runtime([self.current, path], self.inputs.signature, self.quick,
                                     samples=self.inputs.val_x)  # fmt: skip
        ratio = speedup(stats[0], stats[1])  # > 1: the candidate is faster
        kept = ratio["min"] > 1 and ratio["median"] >= 1 + self.options.min_gain
        self.trials.append({"fp32_layers": group, "label": label, "speedup": ratio, "kept": kept})
        verdict = "returned to fp32" if kept else "kept in int8"
        for node in group:
            self.why[node] = (
                f"{label} to fp32 ran {_text(ratio)} as fast as with it in int8: {verdict}"
            )
        if kept:
            self.excluded.extend(group)
            self.current = path
        return kept

    def spent(self) -> bool:
        return len(self.trials) >= self.options.max_candidates

    def try_runs(self, runs: list[list[str]]) -> None:
        """Each run whole (smallest first: the likeliest to cost more than they save);
        where that did not pay, its ends peeled inward while it pays."""
        for run in runs:
            if self.spent():
                break
            label = f"returning its int8 run of {len(run)} layers" if run[1:] else "returning it"
            if self.trial(run, label) or len(run) == 1:
                continue
            for end in (run[:-1], run[:0:-1]):  # peel from the entry, then from the exit
                for node in end:
                    if node in self.excluded:
                        continue
                    if self.spent() or not self.trial([node], "returning it"):
                        break

    def explain_the_rest(self, layers: list[str], in_runs: list[str]) -> None:
        for node in (n for n in layers if n not in self.why):
            if node not in in_runs:
                self.why[node] = "not int8 in the full int8 model"
            else:  # only the tried runs' ends are peeled: untried runs ran out of budget
                budget = self.options.max_candidates
                self.why[node] = f"kept in int8, not tried: candidate budget ({budget}) spent"

    def compare(self, in_runs: list[str], int8_layers: list[str],
                full_report: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        """fp32, full int8 and (where it differs) the placement, timed in one
        measurement with the recipe's timing: the rows, the choice, what ships."""
        paths, names = [self.fp32_path, self.int8_path], ["full int8"]
        reports = {"full int8": full_report}
        if self.excluded and int8_layers:  # the placement differs from full int8 and is int8
            reports["int8 placement"] = self.quantize(
                "placed.onnx", self.inputs.calibration_x, exclude=tuple(self.excluded)
            )
            paths.append(self.scratch / "placed.onnx")
            names.append("int8 placement")
        stats = measure_with_runtime(paths, self.inputs.signature, self.inputs.runtime,
                                     samples=self.inputs.val_x)  # fmt: skip
        base_accuracy = self.accuracy(self.fp32_path)
        rows = []
        for index, (name, path) in enumerate(zip(names, paths[1:]), start=1):
            value = self.accuracy(path)
            rows.append({
                "model": name, "p50_ms": stats[index].p50_ms, "val_accuracy": value,
                "val_accuracy_drop": base_accuracy - value,
                "speedup": speedup(stats[0], stats[index]),
                "int8_layers": len(in_runs if name == "full int8" else int8_layers),
            })  # fmt: skip
        chosen, reason = choose(rows, self.inputs.drop_max)
        return {
            "chosen": chosen,
            "reason": reason,
            "shipped": dict(zip(names, paths[1:])).get(chosen, self.fp32_path),  # fp32: FP32
            "report": reports.get(chosen),
            "rows": rows,
            "base_accuracy": base_accuracy,
            "fp32_p50_ms": stats[0].p50_ms,
        }
