"""`architecture = "cnn"`: a VGG-style stack of 3x3 conv blocks (`architectures.CNN`)."""

from __future__ import annotations

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import CNNConfig


@register_family("cnn")
class CNNFamily(ModelFamily):
    """Conv blocks, pool, optional hidden layer, `classifier`; no attention."""

    config_class = CNNConfig

    def build(self, config, input_shape, num_classes):
        from compress.models.architectures import CNN

        return CNN(config, input_shape, num_classes)
