"""Per-site placement search for weight-only quantization of a causal LM.

Each MatMul site gets the fastest encoding whose perplexity cost on calibration windows (never
the test text) keeps the whole model within `perplexity_limit` of the float input. Sites move in
groups (all q/k/v, all o_proj, all gate/up, all down, the LM head): a group first tries its
fastest rung; a group that costs too much is split in halves by layer, and each half tries again
(down to single layers). Rungs, fastest first:
- with the GGUF blocks: "source-zp" (the source's 4-bit codes, offset rounded into a uint4 zero
  point: plain MatMulNBits), then "source" (exact: codes + constant term);
- without: "int4", then "int8".
The LM head of a GGUF model is Q8_0: its "source" is exact 8-bit and shared with the embedding,
so it is never re-quantized.

Example:
    >>> result = search_placement(fp32_dir, work, windows, blocks=blocks)   # doctest: +SKIP
    >>> result.plan["layers.0.o_proj"], result.decisions[0]["reason"]
"""

from __future__ import annotations

import re
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
        decisions: per site `{site, choice, reason, cost}` (cost: relative perplexity increase
            measured when its group was last accepted or refused; None: not measured).
        baseline_perplexity: the float input's perplexity on the calibration windows.
        perplexity: the chosen plan's.
        trials: every evaluation `{sites, choice, perplexity, increase, kept}`.
    """

    plan: dict[str, str]
    decisions: list[dict]
    baseline_perplexity: float
    perplexity: float
    trials: list[dict] = field(default_factory=list)


def site_group(site: str) -> str:
    """`layers.3.gate_proj` -> "gate_up"; q/k/v -> "qkv"; `lm_head` -> "lm_head"."""
    kind = site.rsplit(".", 1)[-1]
    return {"gate_proj": "gate_up", "up_proj": "gate_up", "q_proj": "qkv", "k_proj": "qkv",
            "v_proj": "qkv", "qkv_proj": "qkv"}.get(kind, kind)


def _layer(site: str) -> int:
    match = re.match(r"layers\.(\d+)\.", site)
    return int(match.group(1)) if match else -1


def rungs(has_blocks: bool) -> tuple[str, str]:
    """(fast, safe) choices for a body site."""
    return ("source-zp", "source") if has_blocks else ("int4", "int8")


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


def search_placement(src_folder: Path, work_dir: Path, windows: np.ndarray, *,
                     blocks: dict | None = None, perplexity_limit: float = 0.01,
                     accuracy_level: int = 4, block_size: int = 32, algorithm: str = "rtn",
                     min_group: int = 4, log=print) -> PlacementResult:
    """Choose a per-site plan for `quantize_lm` under a perplexity limit (see module docstring).

    Args:
        src_folder: the float export (model.onnx, genai_config.json, tokenizer).
        work_dir: scratch folder for trial models (removed as it goes).
        windows: calibration token windows int64 `[n, T]` (not the test text).
        blocks: `read_gguf_blocks(...)` when the model came from GGUF, else None.
        perplexity_limit: allowed relative perplexity increase over the float input.
        accuracy_level, block_size, algorithm: passed to `quantize_lm`.
        min_group: smallest number of layers a refused group is split down to.
        log: progress lines.
    """
    from compress.runtime.lm_quality import lm_quality

    src_folder, work_dir = Path(src_folder), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    sites = [s.name for s in lm_matmuls(src_folder / "model.onnx")]
    fast, safe = rungs(blocks is not None)
    plan = {s: safe for s in sites}
    reasons = {s: f"{safe}: the safe rung" for s in sites}
    if "lm_head" in plan:
        plan["lm_head"] = "source" if blocks is not None else "int8"
        reasons["lm_head"] = ("source: the checkpoint's own table (Q8_0: exact 8 bits, shared "
                              "with the embedding)" if blocks is not None else
                              "int8: the head is the most sensitive site (int4 +9% on SmolLM2)")
    settings = {"accuracy_level": accuracy_level, "block_size": block_size,
                "algorithm": algorithm, "blocks": blocks}
    evaluator = _Evaluator(src_folder, work_dir, windows, settings)
    base = float(lm_quality(src_folder / "model.onnx", windows).perplexity)
    current = evaluator.perplexity(plan)
    log(f"placement: float {base:.3f}, all {safe} {current:.3f}")
    trials: list[dict] = []
    costs: dict[str, float | None] = {s: (current / base - 1) for s in sites}
    groups: dict[str, list[str]] = {}
    for s in sites:
        if s != "lm_head":
            groups.setdefault(site_group(s), []).append(s)
    pending = list(groups.values())
    while pending:
        members = pending.pop(0)
        trial = {**plan, **{s: fast for s in members}}
        value = evaluator.perplexity(trial)
        increase = value / base - 1
        kept = increase <= perplexity_limit
        trials.append({"sites": members, "choice": fast, "perplexity": value,
                       "increase": increase, "kept": kept})
        log(f"placement: {members[0]}..{members[-1]} ({len(members)}) -> {fast}: "
            f"{value:.3f} ({100 * increase:+.2f}%) {'kept' if kept else 'refused'}")
        for s in members:
            costs[s] = increase
        if kept:
            plan, current = trial, value
            for s in members:
                reasons[s] = (f"{fast}: the group stayed within the limit "
                              f"({100 * increase:+.2f}% <= {100 * perplexity_limit:.2f}%)")
            continue
        layers = sorted({_layer(s) for s in members})
        if len(layers) >= 2 * min_group:
            half = set(layers[: len(layers) // 2])
            pending[:0] = [[s for s in members if _layer(s) in half],
                           [s for s in members if _layer(s) not in half]]
        else:
            for s in members:
                reasons[s] = (f"{safe}: {fast} cost {100 * increase:+.2f}% with the plan so far "
                              f"(limit {100 * perplexity_limit:.2f}%)")
    decisions = [{"site": s, "choice": plan[s], "reason": reasons[s], "cost": costs.get(s)}
                 for s in sites]
    return PlacementResult(plan, decisions, base, current, trials)
