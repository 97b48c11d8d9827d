"""`architecture = "transformer"`: a small vision transformer whose attention has one
fused `qkv` Linear, so structured pruning removes whole heads (`fused-qkv` adapter)."""

from __future__ import annotations

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import TransformerConfig


@register_family("transformer")
class TransformerFamily(ModelFamily):
    """Patch embedding, encoder blocks (`architectures.EncoderBlock`), mean pool."""

    config_class = TransformerConfig
    attention = ("fused-qkv",)

    def build(self, config, input_shape, num_classes):
        from compress.models.architectures import Transformer

        return Transformer(config, input_shape, num_classes)
