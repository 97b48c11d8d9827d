"""`prune-decoder`: a smaller decoder language model taught by the current one.

The steps (config: compress/recipe/decoder_stages.py), on the current model's
transformers LM (`CausalLM.lm`), measured and chosen on training windows only:

1. layers: a student of the teacher's `layers` (or the `keep_layers` most important,
   `models.decoder_student.layer_importance`), embeddings, norm and head copied;
2. `pruning.decoder.prune_decoder_`: KV groups and FFN channels removed, the same count
   in every layer, so the model's config still describes it;
3. `training.token_kd.distill_tokens_`: `steps` of KD on the teacher's token
   distributions (cached once when they fit), no labels; `train = "norms"` moves only the
   normalisation scales, so a GGUF model's kept layers still equal the file's blocks.

The result's spec records the new config (`decoder`), so model.json rebuilds it and
its saved weights load with identical logits.
"""

from __future__ import annotations

from compress.errors import RecipeError
from compress.models.causal_lm import CausalLM
from compress.models.checkpoint import ModelSpec, tag_spec_
from compress.recipe.decoder_stages import DecoderPruneStageConfig
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.registry import register_stage


def respec(model: CausalLM, spec: ModelSpec, layers: list[int] | None = None) -> ModelSpec:
    """`spec` with its config's `decoder` (and `layers`) read from the model's own
    config: what model.json must record to rebuild a pruned or smaller model. `layers`:
    the input model's layers the result kept, recorded against the source file as
    `source_layers` (the quantize stage finds each layer's GGUF blocks by it)."""
    decoder = dict(spec.config.decoder or {})
    sources = spec.config.source_layers or spec.config.layers
    if layers is not None:
        sources = [(sources or range(max(layers) + 1))[i] for i in layers]
    current = model.lm.config.to_dict()
    decoder.update({key: current[key] for key in decoder if key in current})
    for key in ("head_dim", "num_key_value_heads", "num_attention_heads", "intermediate_size",
                "num_hidden_layers", "layer_types"):  # fmt: skip
        if key in current:
            decoder[key] = current[key]
    config = spec.config.model_copy(
        update={"decoder": decoder, "layers": None, "source_layers": sources}
    )
    return ModelSpec(config, spec.input_shape, spec.num_classes, spec.inputs)


@register_stage("prune-decoder")
class DecoderPruneStage(Stage):
    """Layers kept, KV groups and FFN width removed, then token KD (module docstring)."""

    config_class = DecoderPruneStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        import copy

        from compress.pruning.decoder import prune_decoder_

        config = self.config
        if not isinstance(ctx.model, CausalLM):
            raise RecipeError(
                f"stage {self.name!r} (prune-decoder) prunes a decoder language model "
                "(model.architecture 'hf-causal-lm')"
            )
        teacher = ctx.model.lm
        windows = ctx.data.train.inputs[0]
        calibration = windows[: config.calibration_windows]
        details: dict = {}
        student_lm, layers = self._student(teacher, calibration, details)
        model = CausalLM.around(student_lm if layers is not None else copy.deepcopy(teacher))
        if config.kv_groups_ratio or config.ffn_ratio:
            details["pruning"] = prune_decoder_(
                model.lm, kv_groups_ratio=config.kv_groups_ratio, ffn_ratio=config.ffn_ratio,
                importance=config.importance, windows=calibration,
                ffn_multiple_of=config.ffn_multiple_of,
            )  # fmt: skip
        if config.steps:
            details["distillation"] = self._distill(teacher, model.lm, windows, ctx.seed)
        spec = respec(model, ctx.spec, layers)
        tag_spec_(model, spec)
        return StageResult(model.eval(), spec, details=details)

    def _student(self, teacher, calibration, details: dict):
        """The student LM of the chosen layers (None, None: every layer is kept)."""
        from compress.models.decoder_student import (
            layer_importance,
            layers_to_keep,
            student_from_layers,
        )

        config = self.config
        layers = config.layers
        if config.keep_layers is not None:
            scores = layer_importance(teacher, calibration, config.layer_importance)
            last = len(scores) - 1
            layers = layers_to_keep(scores, config.keep_layers, always=(0, last))
            details["layer_importance"] = {"method": config.layer_importance,
                                           "scores": [float(s) for s in scores]}  # fmt: skip
        if layers is None:
            return None, None
        details["layers"] = list(layers)
        return student_from_layers(teacher, list(layers)), layers

    def _distill(self, teacher, student, windows, seed: int) -> dict:
        """KD on the teacher's token distributions over the training windows."""
        from compress.training.token_kd import cache_teacher_logits, distill_tokens_

        config = self.config
        cache = cache_teacher_logits(teacher, windows, temperature=config.temperature,
                                     memory_cap_mb=config.teacher_cache_mb,
                                     top_k=config.top_k)  # fmt: skip
        if cache is None:
            raise RecipeError(
                f"stage {self.name!r}: the teacher's outputs for {len(windows)} training "
                f"windows do not fit teacher_cache_mb = {config.teacher_cache_mb}: raise it or "
                "cap data.max_train_tokens"
            )
        return distill_tokens_(student, cache, windows, steps=config.steps,
                               batch_size=config.batch_size, lr=config.lr, seed=seed,
                               train=config.train)  # fmt: skip
