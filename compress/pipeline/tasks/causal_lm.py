"""`causal-lm`: a decoder language model, deployed as a folder onnxruntime-genai runs.

- deployable: the stage's own folder (quantize, export), or an export of its torch
  model into the stage folder (`runtime.lm_export.export_causal_lm`: model.onnx with its
  KV cache, genai_config.json, the tokenizer) checked against torch at two prompt
  lengths and with a non-empty past (`check_lm_parity`);
- metrics: `pipeline.lm_measure` (perplexity and its increase, agreement, KL, decode
  speed and its speed-ups at `[runtime.generation]`, size of the model files);
- flags: slower decoding than the stage's input, and a higher perplexity than its
  input's (beyond round-off: `PERPLEXITY_TOLERANCE`);
- final/: the whole folder (model.onnx, genai_config.json, tokenizer files) and a
  contract that says how to generate with onnxruntime-genai alone.
"""

from __future__ import annotations

import shutil

from compress.artifacts import atomic_path, atomic_write_json, sha256_file
from compress.models.causal_lm import deployed_files, tokenizer_folder
from compress.pipeline.tasks.base import Task, register_task
from compress.recipe.tasks import TASK_RULES
from compress.report.records import Flag


@register_task("causal-lm", TASK_RULES.get("causal-lm"))
class CausalLMTask(Task):
    """Perplexity and decode speed on exported folders (see the module docstring)."""

    def __init__(self, recipe, unavailable):
        from compress.pipeline.lm_measure import LMMeasurement

        super().__init__(recipe, unavailable)
        self.measurement = LMMeasurement(recipe)

    def deployable(self, result, stage_dir, seed, debug):
        if result.onnx_path is not None:
            return result.onnx_path
        from compress.runtime.lm_parity import check_lm_parity
        from compress.stages.export_lm import export_into

        threads = self.recipe.runtime.generation_profile().threads
        path = export_into(result.model.lm, tokenizer_folder(self.recipe.model), stage_dir, threads)
        check_lm_parity(result.model.lm, path, seed=seed)
        return path

    def evaluate(self, result, onnx_path, stage_dir, ctx, baseline):
        return self.measurement.evaluate(result, onnx_path, ctx, baseline)

    def flags(self, metrics, stage, previous, accepted):
        if previous is None or previous.metrics is None:
            return []
        flags = []
        if metrics.slower_than_input:
            ratio = metrics.speedup_vs_input
            message = (
                f"stage '{stage}' decodes slower than its input (stage '{previous.name}'): "
                f"{ratio.median:.2f}x its tokens/s ({ratio.min:.2f}-{ratio.max:.2f} over "
                f"{ratio.rounds} interleaved rounds), "
                f"{metrics.input_decode_tokens_per_s_interleaved:.4g} -> "
                f"{metrics.decode_tokens_per_s:.4g} tokens/s"
            )
            if accepted is not None:
                message += f"; the recipe accepts down to {accepted:.2f}x (speedup_vs_input_min)"
            flags.append(Flag(kind="slower_than_input", input_stage=previous.name,
                              profile=metrics.slower_profiles[0], accepted=accepted,
                              message=message))  # fmt: skip
        flag = perplexity_flag(metrics, stage, previous)
        return flags + ([flag] if flag else [])

    def write_final(self, out_dir, last, report, signature):
        folder = out_dir / "final"
        source = out_dir / last.artifacts.onnx
        for path in deployed_files(source):
            with atomic_path(folder / path.name) as tmp:
                shutil.copyfile(path, tmp)
        target = folder / source.name
        text = getattr(report.data, "text", None)  # the corpus: how its text was tokenized
        preprocessing = text.contract() if hasattr(text, "contract") else None
        contract = lm_contract(signature, [p.name for p in deployed_files(source)], preprocessing)
        generation = self.recipe.runtime.generation_profile()
        measured = {
            "providers": ["cpu"],
            "library": "onnxruntime-genai",
            "generation": {"name": generation.label, **generation.model_dump()},
        }
        final = report.finalize(last, str(target.relative_to(out_dir)), sha256_file(target),
                                signature, contract=contract, measured=measured)  # fmt: skip
        atomic_write_json(folder / "model.contract.json", final.input.to_json())
        return final


def perplexity_flag(metrics, stage: str, previous) -> Flag | None:
    """A flag when the stage's perplexity is above its input's beyond round-off."""
    from compress.pipeline.lm_measure import PERPLEXITY_TOLERANCE

    before = getattr(previous.metrics, "perplexity", None)
    after = getattr(metrics, "perplexity", None)
    if before is None or after is None or after <= before * (1 + PERPLEXITY_TOLERANCE):
        return None
    return Flag(
        kind="perplexity_above_input",
        input_stage=previous.name,
        message=f"stage '{stage}' has a higher perplexity than its input (stage "
        f"'{previous.name}'): {before:.4g} -> {after:.4g} (+{after / before - 1:.2%})",
    )


def lm_contract(signature, files: list[str], preprocessing: dict | None = None) -> dict:
    """final/model.contract.json of a language model: its files and how to generate
    (`preprocessing`: how the data's text was tokenized, when the data says)."""
    return {
        "task": "causal-lm",
        "inputs": signature.contract(),
        "files": files,
        "preprocessing": preprocessing
        or {
            "kind": "causal-lm",
            "tokenizer": "tokenizer.json",
            "library": "onnxruntime-genai (og.Tokenizer reads the folder); transformers' "
            "fast tokenizers read the same tokenizer.json",
        },
        "generate": {
            "library": "onnxruntime-genai",
            "config": "genai_config.json",
            "example": (
                "import onnxruntime_genai as og; model = og.Model('final'); "
                "tokenizer = og.Tokenizer(model); params = og.GeneratorParams(model); "
                "params.set_search_options(max_length=256); "
                "generator = og.Generator(model, params); "
                "generator.append_tokens(tokenizer.encode('To be')); "
                "while not generator.is_done(): generator.generate_next_token(); "
                "print(tokenizer.decode(generator.get_sequence(0)))"
            ),
            "kv_cache": "past_key_values.N.key / .value in, present.N.key / .value out "
            "(batch, kv_heads, sequence, head_dim); genai_config.json names them",
        },
        "output": {"name": "logits", "shape": ["batch", "sequence", "vocab"]},
    }
