"""Model families: one registered object per kind of model, saying everything the
pipeline asks of it.

A family is a `ModelFamily` subclass registered once by name:

    @register_family("cnn")
    class CNNFamily(ModelFamily):
        config_class = CNNConfig
        def build(self, config, input_shape, num_classes): ...

Registration also puts `config_class` into the recipe layer's `MODEL_CONFIGS`, so
`[model] architecture = "cnn"` (and a distill stage's `student`) validates with that
class, its keys and their errors. Everything else is a hook with a default that suits
a self-contained family (random initialisation, the data's inputs, nothing to ship):

- `build`: the nn.Module for a config, an input shape and a class count (required);
- `resolve_config`: complete a config from the files it names before building, so
  the config alone (recorded in model.json) rebuilds the model later; a distillation
  student gets the teacher's config to complete itself from;
- `files`: the folder of pretrained files (a text source's default tokenizer);
- `signature`: the model's inputs, given the data's (token ids, a KV cache...);
- `load_pretrained_`: after building, check the data fits and load the pretrained weights;
- `init_student_`: how a distillation student starts (e.g. from the teacher's layers);
- `shipped_files`: files copied into `final/` beside the ONNX model;
- `attention`: the attention adapters structured pruning applies
  (`compress.pruning.attention.ATTENTION_FAMILIES` names; `None`: try every one).

The built-in families are one module each in `compress/models/families/`; this module
and they import torch only inside the hooks, so validating a recipe stays light.
docs/adding-a-model-family.md walks through adding one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compress.errors import RecipeError
from compress.recipe.schema.models import MODEL_CONFIGS, ModelConfigBase
from compress.registry import Registry

if TYPE_CHECKING:
    from torch import nn

    from compress.models.signature import InputSignature


class ModelFamily:
    """One kind of model: how to build it and what the pipeline may ask of it.

    Attributes:
        name: the registered architecture name (set by `register_family`).
        config_class: the pydantic config class of its `[model]` table; its
            `architecture` field is `Literal[name]`.
        attention: names of the pruning attention adapters that apply (() for none;
            None for models of unknown shape: every adapter looks).

    Example:
        >>> family = family_of(CNNConfig(widths=[8]))  # doctest: +SKIP
        >>> family.build(CNNConfig(widths=[8]), (1, 8, 8), 10)  # doctest: +SKIP
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[ModelConfigBase]]
    attention: ClassVar[tuple[str, ...] | None] = ()

    def build(self, config: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        """A new model (random weights: the caller seeds) for `config`."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    def resolve_config(self, config: Any, teacher: Any | None = None) -> Any:
        """`config` completed from the files it names (default: as it is).

        Args:
            config: this family's config.
            teacher: the teacher's config when `config` is a distillation student
                (any family's), else None.
        """
        return config

    def files(self, config: Any) -> Path | None:
        """The folder of the pretrained files `config` names (None: none)."""
        return None

    def signature(self, config: Any, data: InputSignature | None) -> InputSignature | None:
        """The model's inputs given the data's (None: one image tensor of the data's
        shape), and any outputs after the logits that the export must name
        (`InputSignature.extra_outputs`). Default: the data's own."""
        return data

    def load_pretrained_(
        self, model: nn.Module, config: Any, signature: InputSignature | None = None
    ) -> nn.Module:
        """Check that inputs of `signature` (the data's) fit `model`, then load the
        pretrained weights `config` names (default: nothing to load)."""
        return model

    def init_student_(self, student: nn.Module, config: Any, teacher: nn.Module) -> str:
        """Initialise a distillation student of this family; returns where its weights
        came from, for the report. Default: the seeded random initialisation."""
        return "random (seeded)"

    def shipped_files(self, config: Any) -> list[Path]:
        """Files `final/` holds beside model.onnx for a model of `config` (default none)."""
        return []


FAMILIES: Registry[type[ModelFamily]] = Registry("architecture")
_BY_CONFIG: dict[type, ModelFamily] = {}  # config class -> its family (one instance)


def register_family(name: str) -> Callable[[type[ModelFamily]], type[ModelFamily]]:
    """Class decorator: register a `ModelFamily` subclass under `name` (`FAMILIES`; the
    pipeline calls one instance of it) and its `config_class` as the recipe's config
    for `architecture = name` (`MODEL_CONFIGS`).

    Registering a name twice is an error that names both places.

    Example:
        >>> @register_family("toy")  # doctest: +SKIP
        ... class ToyFamily(ModelFamily):
        ...     config_class = ToyConfig
        ...     def build(self, config, input_shape, num_classes): ...
    """

    def decorator(cls: type[ModelFamily]) -> type[ModelFamily]:
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and issubclass(config_class, ModelConfigBase)):
            raise TypeError(f"family {name!r}: config_class must subclass ModelConfigBase")
        FAMILIES.register(name)(cls)  # a name taken: an error naming both classes' places
        MODEL_CONFIGS.register(name)(config_class)
        cls.name = name
        _BY_CONFIG[config_class] = cls()
        return cls

    return decorator


def family_of(config: Any) -> ModelFamily:
    """The family whose config class `config` is an instance of.

    Example:
        >>> type(family_of(CNNConfig())).__name__  # doctest: +SKIP
        'CNNFamily'

    Raises:
        RecipeError: no registered family has that config class (an ONNX file's config).
    """
    for cls in type(config).__mro__:
        if cls in _BY_CONFIG:
            return _BY_CONFIG[cls]
    raise RecipeError(
        f"model.architecture {getattr(config, 'architecture', None)!r}: no registered family "
        f"builds a {type(config).__name__}; families: {', '.join(FAMILIES.names())}"
    )


def build_model(config: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Instantiate the model a family config describes (random weights).

    Example:
        >>> model = build_model(CNNConfig(widths=[8]), (1, 8, 8), 10)  # doctest: +SKIP
        >>> model(torch.zeros(2, 1, 8, 8)).shape  # doctest: +SKIP
        torch.Size([2, 10])
    """
    return family_of(config).build(config, tuple(input_shape), num_classes)


def resolve_model_config(config: Any, teacher: Any | None = None) -> Any:
    """`config` completed by its family from the files it names (see
    `ModelFamily.resolve_config`); `teacher`: a distillation student's teacher config."""
    return family_of(config).resolve_config(config, teacher)


def load_pretrained_(model: nn.Module, config: Any, signature: InputSignature | None = None):
    """Load the pretrained weights `config` names into `model` through its family,
    after checking that inputs of `signature` (the data's) fit it."""
    return family_of(config).load_pretrained_(model, config, signature)


# The built-in families register on import; last, so the names above exist when their
# modules import this one.
import compress.models.families  # noqa: E402,F401
