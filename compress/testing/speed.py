"""Models whose pruned form is known to be slower, for tests of the slowdown flags.

Fewer MACs is not fewer milliseconds (compress/pruning/timing.py); a test of the flag
needs a model where pruning is *known* to cost time. `slower_when_pruned` repeats a
cheap two-op step `REPEAT_BUDGET // channels**2` times on its pooled features: the
repetition count is read from the convolution's width when the graph is traced, so
pruning half the channels quadruples the ONNX nodes (64 -> 256 Tanh+Add pairs at 32 ->
16 channels), and on ONNX Runtime per-node overhead outweighs the few MACs saved. The
pruned model runs at about 0.3x; with twice the nodes (0.58x) a single disturbed timing
round of the baseline (1.5x, seen on a quiet 2-core VM) could lift one round's ratio
past 1.0 and the every-round rule rightly declined to flag it.

Used as `architecture = "compress.testing.speed:slower_when_pruned"`.
"""

from __future__ import annotations

import torch
from torch import nn

REPEAT_BUDGET = 65536


class SlowerWhenPruned(nn.Module):
    """Conv 3x3 -> BN -> ReLU -> pool, `REPEAT_BUDGET // width**2` Tanh+Add steps, linear.

    Args:
        num_classes: outputs of `classifier`.
        channels: input channels.
        width: the convolution's output channels (what pruning shrinks).

    Example:
        >>> model = SlowerWhenPruned(10, 1)
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int, channels: int, width: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x)))).flatten(1)
        for _ in range(REPEAT_BUDGET // self.conv.out_channels**2):  # more when narrower
            x = x + torch.tanh(x)
        return self.classifier(x)


def slower_when_pruned(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A `package.module:function` model factory for `SlowerWhenPruned`.

    Example:
        >>> slower_when_pruned(10, (1, 8, 8)).conv.out_channels
        32
    """
    return SlowerWhenPruned(num_classes, input_shape[0])
