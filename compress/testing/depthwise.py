"""A user-style model compress did not write: depthwise-separable blocks with
squeeze-excitation, the shape on which pruning halved MACs and made the model slower.

Used as `architecture = "compress.testing.depthwise:depthwise_se_net"` (a
`package.module:function` model), so tests exercise the user-model path.
"""

from __future__ import annotations

from torch import nn


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, bottleneck MLP, sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        gate = self.fc2(nn.functional.relu(self.fc1(self.pool(x)))).sigmoid()
        return x * gate


class DepthwiseBlock(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU -> SE -> pointwise 1x1 -> BN -> ReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels_in, channels_in, 3, stride, 1, groups=channels_in,
                                   bias=False)  # fmt: skip
        self.bn1 = nn.BatchNorm2d(channels_in)
        self.se = SqueezeExcite(channels_in)
        self.pointwise = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)

    def forward(self, x):
        x = nn.functional.relu(self.bn1(self.depthwise(x)))
        return nn.functional.relu(self.bn2(self.pointwise(self.se(x))))


def depthwise_se_net(
    num_classes: int, input_shape: tuple[int, ...], widths: tuple[int, ...] = (32, 64, 128)
) -> nn.Module:
    """Stem conv, one depthwise-SE block per width (stride 2 after the first), pool, head.

    Example:
        >>> model = depthwise_se_net(10, (1, 28, 28))
        >>> model(torch.zeros(2, 1, 28, 28)).shape  # doctest: +SKIP
        torch.Size([2, 10])
    """
    layers: list[nn.Module] = [
        nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    for index, width in enumerate(widths):
        previous = widths[max(index - 1, 0)]
        layers.append(DepthwiseBlock(previous, width, 1 if index == 0 else 2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Sequential(*layers)
    model.add_module("classifier", nn.Linear(widths[-1], num_classes))
    return model
