"""Architectures (a registry) and pickle-free model checkpoints."""

from compress.models.architectures import ARCHITECTURES, build_model, find_classifier
from compress.models.checkpoint import (
    ModelSpec,
    load_model,
    new_model,
    save_model,
    spec_of,
)
from compress.models.signature import InputSignature
from compress.models.weights import load_weights_

__all__ = [
    "ARCHITECTURES",
    "InputSignature",
    "ModelSpec",
    "build_model",
    "find_classifier",
    "load_model",
    "load_weights_",
    "new_model",
    "save_model",
    "spec_of",
]
