"""ResNet-18/34/50 in torchvision's ImageNet layout, with torchvision's module names.

A state dict saved from `torchvision.models.resnet18()` (`torch.save(m.state_dict())`)
loads into `TorchvisionResNet(depth=18)` as is. torchvision itself does not install
beside compress's CPU torch (its wheel pulls another torch), so the layout is written
here: 7x7 stride-2 stem, 3x3 max-pool, four stages of basic (18, 34) or bottleneck
(50) blocks at 64-512 channels (x4 for bottlenecks), downsampling in each stage's
first block through a 1x1 conv + BN named `downsample`, global pool and `fc`.
"""

from __future__ import annotations

import torch
from torch import nn

# blocks per stage and the block type, as torchvision's resnet18/34/50
LAYOUTS = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}
WIDTHS = [64, 128, 256, 512]


def _downsample(channels_in: int, channels_out: int, stride: int) -> nn.Module | None:
    if stride == 1 and channels_in == channels_out:
        return None
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 1, stride, bias=False), nn.BatchNorm2d(channels_out)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs (torchvision's `BasicBlock`, stride on the first)."""

    expansion = 1

    def __init__(self, channels_in: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = _downsample(channels_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision v1.5), 1x1 expand x4."""

    expansion = 4

    def __init__(self, channels_in: int, width: int, stride: int):
        super().__init__()
        out = width * self.expansion
        self.conv1 = nn.Conv2d(channels_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(channels_in, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TorchvisionResNet(nn.Module):
    """torchvision's ResNet-`depth` for `num_classes` outputs on `input_shape` images.

    Example:
        >>> model = TorchvisionResNet(18, (3, 224, 224), 1000)
        >>> sum(p.numel() for p in model.parameters())  # torchvision's documented count
        11689512
    """

    def __init__(self, depth: int, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        kind, counts = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(input_shape[0], 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for index, (width, count) in enumerate(zip(WIDTHS, counts), 1):
            blocks = []
            for position in range(count):
                stride = 2 if index > 1 and position == 0 else 1
                blocks.append(block(channels, width, stride))
                channels = width * block.expansion
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def pipeline_parts(self) -> list[nn.Module]:
        """Modules whose composition, in order, is `forward` (pipeline parallelism)."""
        stages = [self.layer1, self.layer2, self.layer3, self.layer4]
        stem = [self.conv1, self.bn1, self.relu, self.maxpool]
        return [*stem, *(b for s in stages for b in s), self.avgpool, nn.Flatten(), self.fc]
