"""A tiny CNN in the style of a TensorFlow port (EfficientNet / MobileNet ports to torch).

Two habits of those ports that compress must survive: convolutions are `nn.Conv2d`
subclasses with their own `forward` that pads "same" as TensorFlow does (padding
depends on the input size, so it is computed in `forward`, not fixed in the layer),
and BatchNorm has `momentum = 0.01` (TensorFlow's 0.99) and `eps = 1e-3`. A module
type table does not know the convolutions, and the slow BatchNorm statistics go
stale after pruning and short fine-tunes.

Use it as `architecture = "compress.testing.tf_style:tf_style_cnn"`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TF_MOMENTUM = 0.01  # TensorFlow's BatchNormalization(momentum=0.99)
TF_EPS = 1e-3


class Conv2dSame(nn.Conv2d):
    """A convolution padded as TensorFlow's `padding="same"`: output size
    ceil(input / stride), the odd pixel of padding at the bottom and right.

    Example:
        >>> Conv2dSame(1, 2, 3, stride=2)(torch.zeros(1, 1, 7, 7)).shape
        torch.Size([1, 2, 4, 4])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride, dilation in zip(
            reversed(x.shape[-2:]),
            reversed(self.weight.shape[-2:]),
            reversed(self.stride),
            reversed(self.dilation),
        ):
            total = max(
                (math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0
            )
            pads += [total // 2, total - total // 2]
        x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv_bn(channels_in: int, channels_out: int, kernel: int, stride: int = 1, groups: int = 1):
    return [
        Conv2dSame(channels_in, channels_out, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(channels_out, eps=TF_EPS, momentum=TF_MOMENTUM),
        nn.ReLU(),
    ]


def tf_style_cnn(
    num_classes: int, input_shape: tuple[int, ...], widths: tuple[int, ...] = (16, 32)
) -> nn.Module:
    """Stem conv, then per width a depthwise + pointwise pair (stride 2), pool, head.

    Args:
        num_classes: classifier outputs.
        input_shape: (channels, height, width) of one sample.
        widths: channels of the stem (first) and of each later block.

    Example:
        >>> model = tf_style_cnn(10, (1, 8, 8))
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """
    layers = _conv_bn(input_shape[0], widths[0], 3)
    for previous, width in zip(widths, widths[1:]):
        layers += _conv_bn(previous, previous, 3, stride=2, groups=previous)  # depthwise
        layers += _conv_bn(previous, width, 1)  # pointwise
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(*layers)
    model.add_module("classifier", nn.Linear(widths[-1], num_classes))
    return model
