"""Per-site placement search for weight-only quantization of a causal LM.

Each MatMul site gets the fastest encoding whose perplexity cost on calibration windows (never
the test text) keeps the whole model within `perplexity_limit` of the float input. Sites move in
groups (all q/k/v, all o_proj, all gate/up, all down; the LM head on its own) along a ladder,
fastest first:
- with the GGUF blocks: "source-fused" (the checkpoint's own 4-bit codes, the offset's
  remainder in 4-bit extra blocks: one MatMulNBits per site), then "source" (exact weights, a
  constant-term MatMul + Add per site), then "int8", then "fp32";
- without: "int4", then "int8", then "fp32".
Everything starts on the first rung. While the plan is over the limit, each group not yet at
the last rung is measured one rung down (its perplexity gain), and the group that gains most
moves; so a model within the limit costs one evaluation. The LM head of a GGUF model is Q8_0:
its "source" is exact 8 bits, shared with the embedding, and never re-quantized.
("source-zp", the codes with the offset rounded into a zero point, cost +28% on SmolLM2: not a
rung.)

Example:
    >>> result = search_placement(fp32_dir, work, windows, blocks=blocks)   # doctest: +SKIP
    >>> result.plan["layers.0.o_proj"], result.decisions[0]["reason"]
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.quantization.lm_graph import lm_matmuls
from compress.quantization.lm_quantize import quantize_lm


@dataclass
class PlacementResult:
    """What `search_placement` chose.

    Attributes:
        plan: site -> choice, ready for `quantize_lm`.
        decisions: per site `{site, choice, reason, cost}` (cost: the final plan's relative
            calibration perplexity increase).
        baseline_perplexity: the float input's perplexity on the calibration windows.
        perplexity: the chosen plan's.
        trials: every evaluation `{sites, plan, perplexity, increase, kept}`.
    """

    plan: dict[str, str]
    decisions: list[dict]
    baseline_perplexity: float
    perplexity: float
    trials: list[dict] = field(default_factory=list)


def site_group(site: str) -> str:
    """`layers.3.gate_proj` -> "gate_up"; q/k/v -> "qkv"; `lm_head` -> "lm_head"."""
    kind = site.rsplit(".", 1)[-1]
    return {
        "gate_proj": "gate_up",
        "up_proj": "gate_up",
        "q_proj": "qkv",
        "k_proj": "qkv",
        "v_proj": "qkv",
        "qkv_proj": "qkv",
    }.get(kind, kind)


def ladder(has_blocks: bool) -> tuple[str, ...]:
    """A body site's choices, fastest first."""
    return ("source-fused", "source", "int8", "fp32") if has_blocks else ("int4", "int8", "fp32")


class _Evaluator:
    def __init__(self, src: Path, work: Path, windows: np.ndarray, settings: dict):
        self.src, self.work, self.windows, self.settings = src, work, windows, settings
        self.count = 0

    def perplexity(self, plan: dict[str, str]) -> float:
        from compress.runtime.lm_quality import lm_quality

        self.count += 1
        out = self.work / f"trial{self.count}"
        quantize_lm(self.src, out, plan, **self.settings)
        try:
            return float(lm_quality(out / "model.onnx", self.windows).perplexity)
        finally:
            shutil.rmtree(out, ignore_errors=True)


def search_placement(
    src_folder: Path,
    work_dir: Path,
    windows: np.ndarray,
    *,
    blocks: dict | None = None,
    perplexity_limit: float = 0.01,
    accuracy_level: int = 4,
    block_size: int = 32,
    algorithm: str = "rtn",
    log=print,
) -> PlacementResult:
    """Choose a per-site plan for `quantize_lm` under a perplexity limit (see module docstring).

    Args:
        src_folder: the float export (model.onnx, genai_config.json, tokenizer).
        work_dir: scratch folder for trial models (removed as it goes).
        windows: calibration token windows int64 `[n, T]` (not the test text).
        blocks: `read_gguf_blocks(...)` when the model came from GGUF, else None.
        perplexity_limit: allowed relative perplexity increase over the float input.
        accuracy_level, block_size, algorithm: passed to `quantize_lm`.
        log: progress lines.
    """
    from compress.runtime.lm_quality import lm_quality

    src_folder, work_dir = Path(src_folder), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    sites = [s.name for s in lm_matmuls(src_folder / "model.onnx")]
    rungs = ladder(blocks is not None)
    groups: dict[str, list[str]] = {}
    for s in sites:
        groups.setdefault(site_group(s), []).append(s)
    head_rungs = ("source", "int8", "fp32") if blocks is not None else ("int8", "fp32")
    level = {g: 0 for g in groups}
    choices = {g: head_rungs if g == "lm_head" else rungs for g in groups}

    def plan_of(levels: dict[str, int]) -> dict[str, str]:
        return {s: choices[g][levels[g]] for g, members in groups.items() for s in members}

    settings = {
        "accuracy_level": accuracy_level,
        "block_size": block_size,
        "algorithm": algorithm,
        "blocks": blocks,
    }
    evaluator = _Evaluator(src_folder, work_dir, windows, settings)
    base = float(lm_quality(src_folder / "model.onnx", windows).perplexity)
    current = evaluator.perplexity(plan_of(level))
    log(f"placement: float {base:.3f}, first rungs {current:.3f}")
    trials = [
        {
            "sites": "all",
            "plan": "first rungs",
            "perplexity": current,
            "increase": current / base - 1,
            "kept": True,
        }
    ]
    gains: dict[str, float] = {}
    while current / base - 1 > perplexity_limit:
        movable = [g for g in groups if level[g] + 1 < len(choices[g])]
        if not movable:
            break
        tried = {}
        for g in movable:
            value = evaluator.perplexity(plan_of({**level, g: level[g] + 1}))
            tried[g] = value
            trials.append(
                {
                    "sites": g,
                    "plan": choices[g][level[g] + 1],
                    "perplexity": value,
                    "increase": value / base - 1,
                    "kept": False,
                }
            )
        best = min(tried, key=tried.get)
        gains[best] = current / base - tried[best] / base
        level[best] += 1
        current = tried[best]
        trials[-len(movable) + movable.index(best)]["kept"] = True
        log(f"placement: {best} -> {choices[best][level[best]]}: {current:.3f}")
    plan = plan_of(level)
    increase = current / base - 1
    decisions = []
    for g, members in groups.items():
        first = choices[g][0]
        if level[g] == 0:
            why = (
                f"{first}: the fastest rung; the plan is within the limit "
                f"({100 * increase:+.2f}% <= {100 * perplexity_limit:.2f}%)"
            )
        else:
            why = (
                f"{choices[g][level[g]]}: {first} was the largest perplexity cost "
                f"(moving the group gained {100 * gains.get(g, 0.0):.2f} percentage points)"
            )
        decisions += [
            {"site": s, "choice": plan[s], "reason": why, "cost": increase} for s in members
        ]
    return PlacementResult(plan, decisions, base, current, trials)
