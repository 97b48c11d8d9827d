"""Families whose config points at files (a Hugging Face folder): the two steps around
`build_model` that they add, dispatched by architecture name.

- `resolve_model_config`: complete the config from its files before building, so the
  config alone (recorded in model.json) rebuilds the architecture later, without them;
- `load_pretrained_`: after building, check the data's inputs fit the model and load
  the pretrained weights.

Self-contained families (cnn, resnet, ...) pass through both untouched. The family
modules are imported inside the functions (transformers stays out of `import compress`).
"""

from __future__ import annotations

from torch import nn


def _resolve_hf(config, base=None):
    from compress.models.hf_encoder import resolve_config

    return resolve_config(config, base)


def _pretrained_hf(model: nn.Module, config) -> None:
    from compress.models.hf_encoder import load_pretrained_

    load_pretrained_(model, config)


def _check_hf(model: nn.Module, signature) -> None:
    from compress.models.hf_encoder import check_inputs

    check_inputs(model, signature)


# Families whose config points at files: how to complete the config before building
# (so model.json can rebuild it alone), how to load the pretrained weights after, and
# whether the data's inputs fit the model (token ids within its vocabulary).
_RESOLVE_CONFIG = {"hf-encoder": _resolve_hf}
_LOAD_PRETRAINED = {"hf-encoder": _pretrained_hf}
_CHECK_INPUTS = {"hf-encoder": _check_hf}


def resolve_model_config(config, base: dict | None = None):
    """`config` completed from the files it names (a no-op for self-contained families).

    `base` is another model's recorded config (a distillation student's teacher)."""
    resolve = _RESOLVE_CONFIG.get(getattr(config, "architecture", ""))
    return resolve(config, base) if resolve else config


def load_pretrained_(model: nn.Module, config, signature=None) -> nn.Module:
    """Load the pretrained weights `config` names into `model` (families with none: no-op),
    after checking that inputs of `signature` (the data's) fit it."""
    architecture = getattr(config, "architecture", "")
    if architecture in _CHECK_INPUTS:
        _CHECK_INPUTS[architecture](model, signature)
    load = _LOAD_PRETRAINED.get(architecture)
    if load is not None:
        load(model, config)
    return model
