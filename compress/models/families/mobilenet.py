"""`architecture = "mobilenet"`: depthwise-separable blocks (MobileNet v1 style)."""

from __future__ import annotations

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import MobileNetConfig


@register_family("mobilenet")
class MobileNetFamily(ModelFamily):
    """A 3x3 stem, depthwise + pointwise blocks, pool, `classifier`; no attention."""

    config_class = MobileNetConfig

    def build(self, config, input_shape, num_classes):
        from compress.models.architectures import MobileNet

        return MobileNet(config, input_shape, num_classes)
