"""`export` of a language model (task causal-lm): the folder onnxruntime-genai runs.

A float model is exported with its KV cache (`runtime.lm_export.export_causal_lm`:
model.onnx, genai_config.json, the tokenizer) and checked against torch at two prompt
lengths and with a non-empty past (`check_lm_parity`, the stage's parity tolerances).
A folder a previous stage wrote (weight-only quantize) is copied whole and checked to
load and generate: a broken file fails here (exit 3); how faithful it is stays a
budget (`agreement_min`, `perplexity_increase_max`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from compress.artifacts import atomic_path
from compress.errors import StageError
from compress.models.causal_lm import deployed_files, tokenizer_folder
from compress.stages.base import RunContext, StageResult

# what the copied folder must generate from (any text: only that it runs is checked)
SMOKE_PROMPT, SMOKE_TOKENS = "The", 4


def export_into(lm, tokenizer_dir: Path, stage_dir: Path, threads: int) -> Path:
    """Export `lm` with its KV cache into `stage_dir` beside the files already there
    (the exporter replaces the folder it writes, so it writes a sibling first);
    returns stage_dir / "model.onnx"."""
    from compress.runtime.lm_export import export_causal_lm

    scratch = stage_dir.parent / f".{stage_dir.name}.lm-export"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        written = export_causal_lm(lm, tokenizer_dir, scratch, threads=threads)
        for path in sorted(scratch.iterdir()):
            if path.is_file():
                os.replace(path, stage_dir / path.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return stage_dir / written.name


def export_lm(config, ctx: RunContext) -> StageResult:
    """The export stage's work for a language model (see the module docstring)."""
    folder = ctx.workdir
    if ctx.onnx_path is None:
        from compress.runtime.lm_parity import check_lm_parity

        threads = ctx.recipe.runtime.generation_profile().threads
        lm = ctx.model.lm
        target = export_into(lm, tokenizer_folder(ctx.recipe.model), folder, threads)
        diff = check_lm_parity(lm, target, seed=ctx.seed, atol=config.parity_atol,
                               rtol=config.parity_rtol)  # fmt: skip
        details = {"parity": {"max_abs_diff": float(diff), "kv_cache": True}}
        return StageResult(ctx.model, ctx.spec, target, details)
    for path in deployed_files(ctx.onnx_path):
        with atomic_path(folder / path.name) as tmp:
            shutil.copyfile(path, tmp)
    target = folder / ctx.onnx_path.name
    return StageResult(ctx.model, ctx.spec, target, {"generates": _smoke(folder)})


def _smoke(folder) -> str:
    """A few greedy tokens from the folder through onnxruntime-genai alone."""
    from compress.runtime.lm_speed import generate_text

    try:
        return generate_text(folder, SMOKE_PROMPT, SMOKE_TOKENS)
    except Exception as exc:  # onnxruntime-genai's own exception types
        raise StageError(f"{folder}: onnxruntime-genai cannot generate from it: {exc}") from exc
