"""Each pruning step timed on ONNX Runtime, all steps interleaved in one measurement.

Fewer MACs is not fewer milliseconds: a user model with depthwise convolutions and
squeeze-excitation ran 0.73x the speed of its unpruned self at half the MACs, and
odd channel counts (9, 18, 36) ran as slowly as the next multiple of 16. So every
step's model is exported and timed, interleaved with the stage's input (step 0) and
the other steps, and a step slower than the one before is flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


class StepTimer:
    """Collects each step's model as ONNX; `annotate` times them all together.

    Args:
        signature: the model's inputs.
        runtime: the recipe's `[runtime]` table (threads, batch size, rounds).
        scratch: a folder for the step files.
        seed: seeds the latency inputs.
    """

    def __init__(self, signature, runtime, scratch: Path, seed: int):
        self.signature, self.runtime, self.scratch, self.seed = signature, runtime, scratch, seed
        self.paths: dict[int, Path] = {}

    def add(self, model: nn.Module, step: int, exported: Path | None = None) -> None:
        """Export step `step`'s model, or time `exported`: a file of this same model
        that exists already (the stage's input, deployed by the previous stage)."""
        from compress.runtime.onnx_export import export_onnx

        if exported is not None and exported.is_file():
            self.paths[step] = exported
            return
        self.paths[step] = export_onnx(model, self.signature, self.scratch / f"timed{step}.onnx")

    def annotate(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Add p50 and speed-ups (vs the input, vs the previous step) to each step
        record; return a flag for each step slower than the step before."""
        from compress.runtime.latency import is_slower, measure_with_runtime, speedup

        order = sorted(self.paths)
        stats = dict(
            zip(
                order,
                measure_with_runtime(
                    [self.paths[s] for s in order], self.signature, self.runtime, seed=self.seed
                ),
            )  # fmt: skip
        )
        flags = []
        for record in steps:
            step = record["step"]
            if step not in stats:
                continue
            record["step_p50_ms"] = stats[step].p50_ms
            if step == order[0]:
                continue
            previous = order[order.index(step) - 1]
            record["speedup_vs_input"] = speedup(stats[order[0]], stats[step])
            record["speedup_vs_previous"] = ratio = speedup(stats[previous], stats[step])
            record["slower_than_previous"] = is_slower(ratio)
            if record["slower_than_previous"]:
                flags.append({
                    "kind": "slower_than_input",
                    "input_stage": f"pruning step {previous}",
                    "message": f"pruning step {step} is slower than step {previous}: "
                    f"{ratio['median']:.2f}x its speed ({ratio['min']:.2f}-{ratio['max']:.2f}), "
                    f"p50 {stats[previous].p50_ms:.4g} -> {stats[step].p50_ms:.4g} ms",
                })  # fmt: skip
        return flags
