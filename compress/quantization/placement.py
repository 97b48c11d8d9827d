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

import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

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


def int8_runs(qdq_path: str | Path) -> tuple[list[str], list[list[str]]]:
    """The layers of a QDQ model, and its int8 runs: groups of layers connected through
    quantized tensors (Q -> DQ) by int8 ops only, each in graph order, smallest first.

    A node is int8 when all its activation inputs are dequantized and all its outputs
    feed QuantizeLinear only (the pattern ORT fuses into a QLinear op).
    """
    import onnx

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    constants = {i.name for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = defaultdict(list)
    for node, name in ((n, i) for n in graph.node for i in n.input):
        consumers[name].append(node)

    def dequantized(name: str) -> bool:
        return name in producer and producer[name].op_type == "DequantizeLinear"

    int8 = [
        node.name
        for node in graph.node
        if node.op_type in INT8_RUNNABLE
        and all(dequantized(i) for i in node.input if i and i not in constants)
        and all(
            consumers[o] and all(c.op_type == "QuantizeLinear" for c in consumers[o])
            for o in node.output
        )
    ]
    parent = {name: name for name in int8}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    for node in graph.node:
        if node.name not in parent:
            continue
        for name in node.input:  # int8 -> Q -> DQ -> int8 links two nodes of one run
            dq = producer.get(name) if dequantized(name) else None
            q = producer.get(dq.input[0]) if dq is not None else None
            source = producer.get(q.input[0]) if q and q.op_type == "QuantizeLinear" else None
            if source is not None and source.name in parent:
                parent[root(source.name)] = root(node.name)
    layers = [node.name for node in graph.node if node.op_type in LAYER_OPS]
    runs: dict[str, list[str]] = defaultdict(list)
    for name in layers:
        if name in parent:
            runs[root(name)].append(name)
    return layers, sorted(runs.values(), key=len)


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


def search_placement(
    fp32_path: Path,
    out_path: Path,
    calibration_x: Samples,
    val_x: Samples,
    val_y: np.ndarray,
    runtime,
    signature: InputSignature | tuple[int, ...],
    drop_max: float,
    settings: dict[str, Any],
    max_candidates: int = 12,
    repeats: int | None = None,
    rounds: int = 3,
    min_gain: float = 0.02,
) -> dict[str, Any]:
    """Search which layers run int8; write the chosen model (or fp32) to `out_path`.

    Args:
        fp32_path: the float model; out_path: where the chosen model is written.
        calibration_x: calibration inputs; val_x, val_y: validation inputs and labels.
        runtime: the recipe's `[runtime]` table (provider, threads, batch, timing).
        signature: the model's inputs (or a per-sample shape).
        drop_max: allowed validation-accuracy drop vs fp32.
        settings: `quantize_static_onnx` keyword settings (the stage's static ones).
        max_candidates: most candidate placements built and timed.
        repeats, rounds: timing per candidate (default repeats: runtime.repeats // 4,
            at least 5).
        min_gain: a change is kept when faster in every round and by this (median).

    Returns:
        The report: chosen format, reason, per-layer rows, speed-ups, accuracies.

    Example:
        >>> search_placement(fp32, out, x, vx, vy, recipe.runtime, (1, 8, 8), 0.01,
        ...                  {"activation_type": "uint8"})["format"]  # doctest: +SKIP
        'fp32 (kept)'
    """
    repeats = repeats or max(5, runtime.repeats // 4)
    # candidates are timed as the final comparison is (provider, threads, batch), shorter
    quick = runtime.model_copy(update={"repeats": repeats, "rounds": rounds})
    probe_x = slice_samples(calibration_x, 0, PROBE_SAMPLES)

    def accuracy(path: Path) -> float:
        return float((onnx_predictions(path, val_x).argmax(1) == val_y).mean())

    with tempfile.TemporaryDirectory(prefix="compress-placement-") as scratch:
        scratch = Path(scratch)
        int8_path = scratch / "int8.onnx"
        report = quantize_static_onnx(fp32_path, int8_path, calibration_x, **settings)
        layers, runs = int8_runs(int8_path)
        excluded: list[str] = []
        current, trials, why = int8_path, [], {}

        def trial(group: list[str], label: str) -> bool:
            """Build the current placement with `group` in fp32 too; keep it if faster."""
            nonlocal current
            path = scratch / f"candidate-{len(trials)}.onnx"
            quantize_static_onnx(
                fp32_path, path, probe_x, **settings, exclude=tuple(excluded + group)
            )
            stats = measure_with_runtime([current, path], signature, quick, samples=val_x)
            ratio = speedup(stats[0], stats[1])  # > 1: the candidate is faster
            kept = ratio["min"] > 1 and ratio["median"] >= 1 + min_gain
            trials.append({"fp32_layers": group, "label": label, "speedup": ratio, "kept": kept})
            verdict = "returned to fp32" if kept else "kept in int8"
            for node in group:
                why[node] = (
                    f"{label} to fp32 ran {_text(ratio)} as fast as with it in int8: {verdict}"
                )
            if kept:
                excluded.extend(group)
                current = path
            return kept

        for run in runs:  # smallest runs first: the likeliest to cost more than they save
            if len(trials) >= max_candidates:
                break
            label = f"returning its int8 run of {len(run)} layers" if run[1:] else "returning it"
            if trial(run, label) or len(run) == 1:
                continue
            for end in (run[:-1], run[:0:-1]):  # peel from the entry, then from the exit
                for node in end:
                    if node in excluded:
                        continue
                    if len(trials) >= max_candidates or not trial([node], "returning it"):
                        break
        in_runs = [n for run in runs for n in run]  # int8 in the full int8 model
        int8_layers = [n for n in layers if n in in_runs and n not in excluded]
        for node in (n for n in layers if n not in why):
            if node not in in_runs:
                why[node] = "not int8 in the full int8 model"
            else:  # only the tried runs' ends are peeled: untried runs ran out of budget
                why[node] = f"kept in int8, not tried: candidate budget ({max_candidates}) spent"

        paths, names = [fp32_path, int8_path], ["full int8"]
        if excluded and int8_layers:  # the placement differs from full int8 and is int8
            placed_path = scratch / "placed.onnx"
            placed = quantize_static_onnx(fp32_path, placed_path, calibration_x, **settings,
                                          exclude=tuple(excluded))  # fmt: skip
            paths.append(placed_path)
            names.append("int8 placement")
        stats = measure_with_runtime(paths, signature, runtime, samples=val_x)
        base_accuracy = accuracy(fp32_path)
        rows = []
        for index, (name, path) in enumerate(zip(names, paths[1:]), start=1):
            value = accuracy(path)
            rows.append({
                "model": name, "p50_ms": stats[index].p50_ms, "val_accuracy": value,
                "val_accuracy_drop": base_accuracy - value,
                "speedup": speedup(stats[0], stats[index]),
                "int8_layers": len(in_runs if name == "full int8" else int8_layers),
            })  # fmt: skip
        chosen, reason = choose(rows, drop_max)
        shipped = dict(zip(names, paths[1:])).get(chosen, fp32_path)  # fp32 when FP32
        shutil.copyfile(shipped, out_path)
    if chosen == "int8 placement":
        report = placed
    shipped_int8 = {"full int8": in_runs, "int8 placement": int8_layers}.get(chosen, [])
    return {
        **(report if chosen != FP32 else {"float_nodes": layers}),
        "format": chosen,
        "reason": reason,
        "layers": [
            {
                "node": node,
                "placement": "int8" if node in shipped_int8 else "fp32",
                "searched": "int8" if node in int8_layers else "fp32",
                "why": why[node],
            }
            for node in layers
        ],
        "fp32_val_accuracy": base_accuracy,
        "fp32_p50_ms": stats[0].p50_ms,
        "models": rows,
        "trials": trials,
        "search": {
            "max_candidates": max_candidates,
            "repeats": repeats,
            "rounds": rounds,
            "min_gain": min_gain,
        },
    }
