"""`architecture = "resnet"`: the compact residual CNN, or torchvision's ImageNet
ResNet-18/34/50 layout (its module names: its state dicts load as they are) when the
config sets `depth`."""

from __future__ import annotations

from compress.models.family import ModelFamily, register_family
from compress.recipe.schema import ResNetConfig


@register_family("resnet")
class ResNetFamily(ModelFamily):
    """Basic blocks with residual adds (the pruner's dependency graph keeps the adds
    consistent); no attention."""

    config_class = ResNetConfig

    def build(self, config, input_shape, num_classes):
        if config.depth is not None:
            from compress.models.torchvision_resnet import TorchvisionResNet

            return TorchvisionResNet(config.depth, input_shape, num_classes)
        from compress.models.architectures import ResNet

        return ResNet(config, input_shape, num_classes)
