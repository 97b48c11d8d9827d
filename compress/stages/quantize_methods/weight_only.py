"""method = "weight-only": a causal LM's exported folder in, a weight-only quantized folder out.

The input is the previous stage's deployed folder (model.onnx with its KV cache,
genai_config.json, tokenizer files); the output is the same folder with MatMulNBits weights
(compress.quantization.lm_quantize). When the model came from a GGUF file and its weights are
still the file's (no stage changed them: checked weight by weight), the file's own blocks are a
candidate per site ("source"), so nothing is quantized twice. `weights = "auto"` searches per
site (compress.quantization.lm_placement) on calibration windows from the training split;
`accuracy_level = "auto"` times the chosen plan at levels 4 and 1 at the recipe's generation
profile and keeps the fastest whose calibration perplexity stays within the limit.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from compress.errors import StageError
from compress.recipe.quantize_methods import WeightOnlyConfig
from compress.stages.base import StageResult
from compress.stages.quantize_methods.base import QuantizeMethod, register_quantize_method

LEVELS = (4, 1)  # the int8-compute and fp32-compute kernels (2 is fp16: ARM only)
LEVEL_TOKENS = 32  # new tokens timed per level: levels differ several-fold (SmolLM2: 6x)


def _quiet(line: str) -> None:
    """Search progress is not printed inside a run (the report holds the trials)."""


@register_quantize_method("weight-only")
class WeightOnlyMethod(QuantizeMethod):
    """Per-site MatMulNBits of an exported causal LM (see the module docstring)."""

    config_class = WeightOnlyConfig

    def run(self) -> StageResult:
        ctx = self.ctx
        if getattr(ctx.recipe.model, "task", "classification") != "causal-lm":
            raise StageError(
                "quantize method = 'weight-only' quantizes an exported causal language model "
                "(model architecture 'hf-causal-lm'); this recipe's model is not one: use "
                "mode = 'int4' for weight-only 4-bit MatMuls of other models"
            )
        source = self._input_folder()
        out = ctx.workdir
        details = self.quantize_folder(source, out)
        return StageResult(
            ctx.model, ctx.spec, onnx_path=out / "model.onnx", details={"quantization": details}
        )

    def _input_folder(self) -> Path:
        """The float folder: the current ONNX folder, else the last accepted stage's."""
        ctx = self.ctx
        for path in (ctx.onnx_path, ctx.input_onnx):
            if path is not None and Path(path).is_file():
                folder = Path(path).parent
                if (folder / "genai_config.json").is_file():
                    return folder
        if ctx.model is not None and hasattr(ctx.model, "lm"):
            from compress.models.causal_lm import tokenizer_folder
            from compress.stages.export_lm import export_into

            scratch = ctx.workdir.parent / f".{ctx.workdir.name}.float"
            scratch.mkdir(parents=True, exist_ok=True)
            threads = ctx.recipe.runtime.generation_profile().threads
            export_into(ctx.model.lm, tokenizer_folder(ctx.recipe.model), scratch, threads)
            return scratch
        raise StageError(
            "quantize (weight-only): no exported causal-LM folder to quantize "
            "(model.onnx beside genai_config.json)"
        )

    def quantize_folder(self, source: Path, out: Path) -> dict[str, Any]:
        """Quantize `source` into `out`; the report's `quantization` details."""

        config = self.config
        blocks, blocks_note = self._blocks(source)
        if config.weights.startswith("source") and blocks is None:
            raise StageError(
                f"quantize (weight-only): weights = {config.weights!r} needs the "
                f"model's GGUF blocks: {blocks_note}"
            )
        windows = self._calibration()
        scratch = out.parent / f".{out.name}.search"
        try:
            plan, search = self._plan(source, scratch, windows, blocks)
            level, level_note, built = self._accuracy_level(source, scratch, plan, windows, blocks)
            if level in built:  # timed already: the folder is moved, not quantized again
                folder, summary = built[level]
                out.mkdir(parents=True, exist_ok=True)
                for path in folder.iterdir():
                    os.replace(path, out / path.name)
            else:
                summary = self._write(source, out, plan, level, blocks)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        counts: dict[str, int] = {}
        for choice in plan.values():
            counts[choice] = counts.get(choice, 0) + 1
        return {
            "method": "weight-only",
            "weights": config.weights,
            "algorithm": config.algorithm,
            "accuracy_level": level,
            "accuracy_level_choice": level_note,
            "gguf_blocks": blocks_note,
            "embedding": summary["embedding"],
            "site_counts": counts,
            "bytes": summary["bytes"],
            **search,
        }

    def _write(self, source: Path, out: Path, plan: dict, level: int, blocks) -> dict:
        """`quantize_lm` of `source` into `out` with this stage's settings at `level`."""
        from compress.quantization.lm_quantize import quantize_lm

        config = self.config
        return quantize_lm(source, out, plan, block_size=config.block_size,
                           algorithm=config.algorithm, accuracy_level=level,
                           blocks=blocks)  # fmt: skip

    def _blocks(self, source: Path) -> tuple[dict | None, str]:
        from compress.models.causal_lm import gguf_path
        from compress.quantization.gguf_blocks import read_gguf_blocks
        from compress.quantization.lm_quantize import blocks_mismatch

        model = self.ctx.recipe.model
        if not getattr(model, "gguf", None):
            return None, "the model did not come from a GGUF file"
        path = gguf_path(model)
        blocks = read_gguf_blocks(path)
        current = getattr(self.ctx.spec, "config", None) or model
        kept = getattr(current, "source_layers", None) or getattr(current, "layers", None)
        if kept is not None:  # a student of some layers: layer i holds the file's kept[i]
            from compress.models.causal_lm import LAYERS
            from compress.models.hf_local import renumber_layers

            blocks = renumber_layers(blocks, list(kept), prefix=LAYERS)
        mismatch = blocks_mismatch(source / "model.onnx", blocks)
        if mismatch:
            return None, f"{path.name}: weights changed since the file ({mismatch})"
        layers = f" (layers {list(kept)} of the file)" if kept is not None else ""
        return blocks, f"{path.name}: every weight still equals the file's blocks{layers}"

    def _calibration(self):
        import numpy as np

        train = self.ctx.data.train
        count = min(self.config.calibration_windows, len(train))
        rows = train.take(list(range(count)))
        return np.asarray(rows[0].numpy(), dtype=np.int64)

    def _plan(self, source: Path, scratch: Path, windows, blocks) -> tuple[dict, dict]:
        from compress.quantization.lm_graph import lm_matmuls
        from compress.quantization.lm_placement import search_placement

        config = self.config
        sites = [s.name for s in lm_matmuls(source / "model.onnx")]
        if config.weights != "auto":
            plan = {s: config.weights for s in sites}
            if "lm_head" in plan and config.weights in ("source-zp", "source-fused"):
                plan["lm_head"] = "source"  # Q8_0: exact 8 bits, no offset to place
            return plan, {
                "sites": [
                    {"site": s, "choice": c, "reason": f"weights = {config.weights!r}"}
                    for s, c in plan.items()
                ]
            }
        level = 4 if config.accuracy_level == "auto" else config.accuracy_level
        result = search_placement(
            source,
            scratch,
            windows,
            blocks=blocks,
            perplexity_limit=config.perplexity_increase_max,
            accuracy_level=level,
            block_size=config.block_size,
            algorithm=config.algorithm,
            log=_quiet,
        )
        return result.plan, {
            "sites": result.decisions,
            "calibration": {
                "windows": int(len(windows)),
                "float_perplexity": result.baseline_perplexity,
                "perplexity": result.perplexity,
            },
            "trials": result.trials,
        }

    def _accuracy_level(
        self, source: Path, scratch: Path, plan: dict, windows, blocks
    ) -> tuple[int, str, dict]:
        """Level 4 (int8 compute) or 1 (fp32 compute): both timed briefly at the generation
        profile, interleaved; level 4 only when its calibration perplexity is within the
        limit (level 1 computes in fp32, as faithful as the weights). Returns the level,
        why, and the folders it wrote: level -> (folder, `quantize_lm` summary)."""
        from compress.runtime.lm_quality import lm_quality
        from compress.runtime.lm_speed import decode_speed

        config = self.config
        if config.accuracy_level != "auto":
            return int(config.accuracy_level), "set by the recipe", {}
        profile = self.ctx.recipe.runtime.generation_profile()
        folders, built = [], {}
        for level in LEVELS:
            folder = scratch / f"level{level}"
            built[level] = folder, self._write(source, folder, plan, level, blocks)
            folders.append(folder)
        base = lm_quality(source / "model.onnx", windows).perplexity
        cost = lm_quality(folders[0] / "model.onnx", windows).perplexity / base - 1
        prompt = [int(t) for t in windows[0][: profile.prompt]]
        stats = decode_speed(
            folders,
            prompt,
            generate=min(profile.generate, LEVEL_TOKENS),
            batch=profile.batch,
            threads=profile.threads,
            rounds=1,
            warmup=1,
        )
        speeds = {level: s.decode_tokens_per_s for level, s in zip(LEVELS, stats, strict=True)}
        within = cost <= config.perplexity_increase_max
        chosen = 4 if within and speeds[4] >= speeds[1] else 1
        note = (
            f"level 4: {speeds[4]:.1f} tokens/s, calibration perplexity {100 * cost:+.2f}%; "
            f"level 1: {speeds[1]:.1f} tokens/s (fp32 compute); "
            f"{min(profile.generate, LEVEL_TOKENS)} tokens, 1 round each"
        )
        return chosen, note, built
