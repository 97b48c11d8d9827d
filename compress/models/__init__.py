"""Architectures (a registry) and pickle-free model checkpoints."""

from compress.models.architectures import ARCHITECTURES, build_model, find_classifier
from compress.models.checkpoint import ModelSpec, load_model, load_weights_, save_model

__all__ = [
    "ARCHITECTURES",
    "ModelSpec",
    "build_model",
    "find_classifier",
    "load_model",
    "load_weights_",
    "save_model",
]
