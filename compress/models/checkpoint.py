"""Save and load models without pickle: safetensors weights + a JSON structure spec.

A pruned model no longer matches its class definition, so the spec records, for
every module, the size attributes (channels, features, heads, ...) it has now.
Loading rebuilds the architecture from its config, applies those attributes,
resizes each parameter to the stored shape and loads the weights strictly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from compress.artifacts import atomic_path, atomic_write_json, sha256_file
from compress.errors import ArtifactError
from compress.models.family import build_model, family_of
from compress.models.signature import InputSignature
from compress.recipe.schema import ModelConfig

FORMAT = "compress-model/1"
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"

# Module attributes that describe a layer's size; torch-pruning rewrites these.
SIZE_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "groups",
    "in_features",
    "out_features",
    "num_features",
    "normalized_shape",
    "embed_dim",
    "num_heads",
    "head_dim",
    "kdim",
    "vdim",
    # transformers' BERT-like self-attention (its forward reads the size and scaling)
    "num_attention_heads",
    "attention_head_size",
    "all_head_size",
)
# Float attributes a forward reads: 1/sqrt(head size) once head dims change.
FLOAT_ATTRIBUTES = ("scaling",)
# Key naming a module that pruning replaced by another class (see `_convert_`).
KIND_KEY = "kind"

_MODEL_CONFIG = TypeAdapter(ModelConfig)


@dataclass
class ModelSpec:
    """What is needed to rebuild a model: its architecture, inputs and classes.

    Attributes:
        config: one of the ModelConfig classes.
        input_shape: the per-sample shape an image family's builder takes.
        num_classes: width of the logits.
        inputs: the model's input signature when it is not one image tensor of
            `input_shape` (read it through `signature`).
    """

    config: Any
    input_shape: tuple[int, ...]
    num_classes: int
    inputs: InputSignature | None = None

    @property
    def signature(self) -> InputSignature:
        """The inputs every consumer reads (export, parity, latency, calibration...)."""
        return self.inputs or InputSignature.image(self.input_shape)


SPEC_ATTRIBUTE = "compress_spec"


def spec_of(model: nn.Module) -> ModelSpec | None:
    """The spec a model was built or rebuilt from (kept through pruning and deepcopy),
    so a training strategy can rebuild it elsewhere without every caller passing it."""
    return model.__dict__.get(SPEC_ATTRIBUTE)


def tag_spec_(model: nn.Module, spec: ModelSpec) -> nn.Module:
    """Record `spec` on `model` (a plain attribute: not a parameter, not exported)."""
    model.__dict__[SPEC_ATTRIBUTE] = spec
    return model


def new_model(
    config: Any,
    input_shape: tuple[int, ...],
    num_classes: int,
    inputs: InputSignature | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Build the architecture `config` names, tagged with its spec (see `spec_of`).

    Args:
        config: a family's config.
        input_shape: the data's per-sample shape.
        num_classes: width of the logits.
        inputs: the data's input signature (None: one image tensor); the family
            decides the model's own from it (`ModelFamily.signature`).

    Example:
        >>> model, spec = new_model(CNNConfig(widths=[8]), (1, 8, 8), 10)  # doctest: +SKIP
    """
    inputs = family_of(config).signature(config, inputs)
    spec = ModelSpec(config, tuple(input_shape), num_classes, inputs)
    return tag_spec_(build_model(config, spec.input_shape, num_classes), spec), spec


def structure_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Size attributes of every module that has any, keyed by module name.

    A module pruning put in place of the architecture's own (a `HeadAttention` for
    an nn.MultiheadAttention) also records its `kind`, so loading converts it again.
    """
    from compress.models.mha import KIND, HeadAttention

    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        attributes: dict[str, Any] = {KIND_KEY: KIND} if isinstance(module, HeadAttention) else {}
        for attribute in SIZE_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, (int, tuple)) and not isinstance(value, bool):
                attributes[attribute] = list(value) if isinstance(value, tuple) else value
        for attribute in FLOAT_ATTRIBUTES:
            value = getattr(module, attribute, None)
            if isinstance(value, float):
                attributes[attribute] = value
        if attributes:
            structure[name] = attributes
    return structure


def save_model(model: nn.Module, spec: ModelSpec, folder: str | Path) -> Path:
    """Write `model.safetensors` and `model.json` into `folder`, each atomically.

    Example:
        >>> save_model(model, spec, "runs/digits/prune")  # doctest: +SKIP
    """
    folder = Path(folder)
    state = {
        name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()
    }
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    meta = describe_model(model, spec)
    meta["weights_sha256"] = sha256_file(folder / WEIGHTS_FILE)
    atomic_write_json(folder / SPEC_FILE, meta)
    return folder / WEIGHTS_FILE


def describe_model(model: nn.Module, spec: ModelSpec) -> dict[str, Any]:
    """The JSON-able structure spec of `model`: enough, with its weights, to rebuild it."""
    return {
        "format": FORMAT,
        "architecture": spec.config.model_dump(mode="json"),
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "inputs": spec.signature.to_dict(),
        "structure": structure_of(model),
    }


def rebuild_model(meta: dict[str, Any], state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Build the model `describe_model` described and load `state` into it strictly.

    Raises ArtifactError naming `where` (a file, or a message's origin) on a mismatch.
    """
    spec = spec_from_meta(meta, where)
    model = build_model(spec.config, spec.input_shape, spec.num_classes)
    _resize_(model, meta.get("structure", {}), state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{where}: does not fit the stored structure ({exc})") from None
    return tag_spec_(model, spec)


def spec_from_meta(meta: dict[str, Any], where: str) -> ModelSpec:
    """The ModelSpec a `describe_model` dict records; ArtifactError naming `where`."""
    try:
        config = _MODEL_CONFIG.validate_python(meta["architecture"])
        input_shape = tuple(meta["input_shape"])
        inputs = InputSignature.from_dict(meta["inputs"]) if meta.get("inputs") else None
        if inputs == InputSignature.image(input_shape):
            inputs = None  # the default a ModelSpec derives itself: keep specs comparable
        return ModelSpec(config, input_shape, int(meta["num_classes"]), inputs)
    except (KeyError, TypeError, ValidationError) as exc:
        raise ArtifactError(f"{where}: invalid model spec ({exc})") from None


def _convert_(model: nn.Module, structure: dict[str, dict[str, Any]]) -> None:
    """Replace the modules the structure records by `kind`, as pruning did."""
    from compress.models.mha import KIND, convert_named_

    for name, attributes in structure.items():
        kind = attributes.get(KIND_KEY)
        if kind is None:
            continue
        if kind != KIND:
            raise ArtifactError(f"structure gives module {name!r} an unknown kind {kind!r}")
        try:
            convert_named_(model, name)
        except (AttributeError, ValueError) as exc:
            raise ArtifactError(f"structure module {name!r}: cannot convert ({exc})") from None


def _resize_(model: nn.Module, structure: dict[str, dict[str, Any]], state: dict) -> None:
    _convert_(model, structure)
    modules = dict(model.named_modules())
    for name, attributes in structure.items():
        module = modules.get(name)
        if module is None:
            raise ArtifactError(f"structure names module {name!r}, which the architecture lacks")
        for attribute, value in attributes.items():
            if attribute == KIND_KEY:
                continue
            setattr(module, attribute, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        module_name, _, attribute = key.rpartition(".")
        module = modules.get(module_name)
        if module is None:
            raise ArtifactError(f"weights name {key!r}, which the architecture lacks")
        if attribute in module._parameters and module._parameters[attribute] is not None:
            current = module._parameters[attribute]
            if current.shape != tensor.shape:
                module._parameters[attribute] = nn.Parameter(
                    torch.empty_like(tensor), requires_grad=current.requires_grad
                )
        elif attribute in module._buffers and module._buffers[attribute] is not None:
            if module._buffers[attribute].shape != tensor.shape:
                module._buffers[attribute] = torch.empty_like(tensor)


def load_model(folder: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Rebuild a model saved by `save_model`, verifying the weights' hash first.

    Raises ArtifactError naming the file when anything is missing or corrupt.
    """
    folder = Path(folder)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    try:
        meta = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{spec_path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{spec_path}: corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ArtifactError(f"{spec_path}: not a {FORMAT} file")
    if not weights_path.is_file():
        raise ArtifactError(f"{weights_path}: missing")
    if sha256_file(weights_path) != meta.get("weights_sha256"):
        raise ArtifactError(f"{weights_path}: content does not match its recorded hash")
    spec = spec_from_meta(meta, str(spec_path))
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{weights_path}: unreadable ({exc})") from None
    return rebuild_model(meta, state, str(weights_path)).eval(), spec
