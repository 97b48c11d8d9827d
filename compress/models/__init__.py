"""Model families (a registry), pickle-free checkpoints and input signatures.

The names below load on first use (PEP 562), so importing a family module, which
the recipe layer does by name to validate `[model]`, does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FAMILIES": "compress.models.family",
    "ModelFamily": "compress.models.family",
    "build_model": "compress.models.family",
    "family_of": "compress.models.family",
    "register_family": "compress.models.family",
    "find_classifier": "compress.models.architectures",
    "ModelSpec": "compress.models.checkpoint",
    "load_model": "compress.models.checkpoint",
    "new_model": "compress.models.checkpoint",
    "save_model": "compress.models.checkpoint",
    "spec_of": "compress.models.checkpoint",
    "InputSignature": "compress.models.signature",
    "load_weights_": "compress.models.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'compress.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
