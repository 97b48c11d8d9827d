"""A user model torch-pruning cannot handle: a conv through F.conv2d with a bare
Parameter (invisible to the dependency graph) and a reshape hard-coded to 8 channels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RawConv(nn.Module):
    """A conv through F.conv2d with a bare Parameter, then a reshape hard-coded to 8 channels."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.weight = nn.Parameter(torch.randn(8, 8, 3, 3) * 0.1)
        self.classifier = nn.Linear(8 * 8 * 8, num_classes)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = F.relu(F.conv2d(x, self.weight, padding=1))
        return self.classifier(x.reshape(x.shape[0], 8 * 8 * 8))


def raw_conv(num_classes):
    return RawConv(num_classes)
