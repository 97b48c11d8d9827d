"""A model family added from outside compress: the worked example of
docs/adding-a-model-family.md (tests/integration/test_adding_a_family.py runs it).

Importing this module registers `architecture = "pixel-mixer"`: a 1x1 convolution that
mixes each pixel's channels, then a hidden layer and a classifier. Nothing under
compress/ names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from compress.models import ModelFamily, register_family
from compress.recipe.schema import ModelConfigBase


class PixelMixerConfig(ModelConfigBase):
    """`[model] architecture = "pixel-mixer"`: its keys, validated like any table."""

    architecture: Literal["pixel-mixer"] = "pixel-mixer"
    channels: int = Field(8, gt=0, description="Output channels of the 1x1 pixel mix.")
    hidden: int = Field(32, gt=0, description="Width of the hidden layer.")
    card: str | None = Field(
        None, description="A model card (a text file) shipped beside model.onnx in final/."
    )


class PixelMixer(nn.Module):
    """1x1 conv + ReLU, flatten, hidden Linear + ReLU, `classifier` (which pruning keeps
    whole: its outputs are the classes)."""

    def __init__(self, config: PixelMixerConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        self.mix = nn.Sequential(nn.Conv2d(channels, config.channels, 1), nn.ReLU())
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(
            nn.Linear(config.channels * height * width, config.hidden), nn.ReLU()
        )
        self.classifier = nn.Linear(config.hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.flatten(self.mix(x))))


@register_family("pixel-mixer")
class PixelMixerFamily(ModelFamily):
    """Builds a `PixelMixer` and ships its model card; every other hook keeps its
    default (random initialisation, the data's inputs, no attention to prune)."""

    config_class = PixelMixerConfig

    def build(self, config, input_shape, num_classes):
        return PixelMixer(config, input_shape, num_classes)

    def shipped_files(self, config):
        return [Path(config.card)] if config.card else []
