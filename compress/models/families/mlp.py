"""`architecture = "mlp"`: hidden Linear+ReLU layers over the flattened input."""

from __future__ import annotations

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import MLPConfig


@register_family("mlp")
class MLPFamily(ModelFamily):
    """Flatten, hidden layers, `classifier`; no attention."""

    config_class = MLPConfig

    def build(self, config, input_shape, num_classes):
        from compress.models.architectures import MLP

        return MLP(config, input_shape, num_classes)
