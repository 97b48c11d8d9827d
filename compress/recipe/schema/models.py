"""The `[model]` table: one config class per model family, found by `architecture`.

`MODEL_CONFIGS` maps each architecture name to its config class. It is filled by
the family registration (`compress.models.family.register_family`), so a family
registered from outside the package validates its own keys, and `ModelConfig`
(the `[model]` table, and a distillation student) dispatches on `architecture`
through it at validation time: a wrong key is reported at its key path
(`model.widthz`), an unknown architecture lists the registered names.

The recipe layer imports nothing of the model layer: the first lookup imports the
built-in families by module name (`BUILTIN_FAMILIES`), so validation always sees
them, and `import compress.recipe` stays free of torch. The config classes of the
built-in image families live here (`CNNConfig`...); a family may keep its config
class in its own module (hf-encoder's does).
"""

from __future__ import annotations

import importlib
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, PlainValidator, SerializeAsAny, field_validator, model_validator

from compress.recipe.schema.base import CALLABLE_PATTERN, StrictModel
from compress.registry import Registry

# the module whose import registers every built-in family (see the module docstring)
BUILTIN_FAMILIES = "compress.models.families"
# the name the user-callable family is registered under: any "package.module:function"
USER_ARCHITECTURE = "package.module:function"


class ModelConfigBase(StrictModel):
    """What every family's config has: trained weights to start from.

    A family's config class subclasses it with `architecture: Literal["name"] = "name"`
    and its own keys (each with a `description`). `task` says what its outputs are and
    so how a run measures them (`compress.pipeline.tasks`): class logits by default,
    "causal-lm" for a language model's next-token logits.
    """

    task: ClassVar[str] = "classification"

    def pretrained_source(self) -> str | None:
        """What makes the model complete before any stage runs, when something does
        (None: it needs a training stage first). `weights` always does; a family whose
        files hold a whole model (a language model's folder) says so too."""
        return self.weights

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


class CNNConfig(ModelConfigBase):
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


class ResNetConfig(ModelConfigBase):
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


class MLPConfig(ModelConfigBase):
    """A multi-layer perceptron over the flattened input."""

    architecture: Literal["mlp"] = "mlp"
    hidden: list[Annotated[int, Field(gt=0)]] = Field(
        [128, 64], description="Widths of the hidden layers."
    )
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after each hidden layer.")


class MobileNetConfig(ModelConfigBase):
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


class TransformerConfig(ModelConfigBase):
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


class CallableModelConfig(ModelConfigBase):
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
            names = [name for name in architecture_names() if name != USER_ARCHITECTURE]
            raise ValueError(
                f"unknown architecture {value!r}; allowed: {', '.join(names)} "
                f"or {USER_ARCHITECTURE!r}"
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


MODEL_CONFIGS: Registry[type[ModelConfigBase]] = Registry("architecture")
"""Architecture name -> config class, filled by `register_family` (never by hand)."""
_BUILTINS_LOADED = False


def _load_builtin_families() -> None:
    # by name, once: the families import this module, not the other way round
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module(BUILTIN_FAMILIES)


def architecture_names() -> list[str]:
    """Every registered architecture name, sorted (the user callable's pattern included).

    Example:
        >>> "cnn" in architecture_names()
        True
    """
    _load_builtin_families()
    return MODEL_CONFIGS.names()


def model_config_class(architecture: str) -> type[ModelConfigBase]:
    """The config class of `architecture`; a name no family registered is the user
    callable's (whose validation lists the registered names when it is no
    `package.module:function` either).

    Example:
        >>> model_config_class("cnn").__name__
        'CNNConfig'
    """
    _load_builtin_families()
    if architecture in MODEL_CONFIGS:
        return MODEL_CONFIGS.get(architecture)
    return MODEL_CONFIGS.get(USER_ARCHITECTURE)


def _validate_model_table(value: Any) -> StrictModel:
    if isinstance(value, (ModelConfigBase, OnnxModelConfig)):
        return value
    if not isinstance(value, dict):
        raise ValueError("must be a table")
    if "onnx" in value:  # a file to read, not a family to build
        return OnnxModelConfig.model_validate(value)
    return model_config_class(str(value.get("architecture", "cnn"))).model_validate(value)


# what the table may be, for readers of the schema (scripts/gen_recipe_reference.py)
_validate_model_table.registry, _validate_model_table.key = MODEL_CONFIGS, "architecture"
_validate_model_table.others = (("onnx", OnnxModelConfig),)

ModelConfig = Annotated[
    SerializeAsAny[StrictModel],
    PlainValidator(_validate_model_table, json_schema_input_type=dict[str, Any]),
]
"""The `[model]` table (or a distill student): the registered config class its
`architecture` names ("cnn" when unset), or `OnnxModelConfig` when it names an `onnx`
file. Errors carry the table's key path (pydantic prefixes the nested errors)."""
