"""The built-in image architectures' modules. Each takes (config, input_shape, num_classes);
their families (`compress/models/families/`) build them by recipe name.

Every built-in model names its final layer `classifier`, so pruning can leave
it whole (its outputs are the classes) without guessing.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import RecipeError
from compress.recipe.schema import (
    CNNConfig,
    MLPConfig,
    MobileNetConfig,
    ResNetConfig,
    TransformerConfig,
)


class CNN(nn.Module):
    """VGG-style conv blocks, average pool (or flatten), optional hidden layer, classifier."""

    def __init__(self, config: CNNConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width_px = input_shape
        layers: list[nn.Module] = []
        for width, convs in zip(config.widths, config.block_convs()):
            for _ in range(convs):
                layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not config.batch_norm))
                if config.batch_norm:
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            if height >= 4:  # keep at least 2x2 before the global pool
                layers.append(nn.MaxPool2d(2))
                height //= 2
                width_px //= 2
        self.features = nn.Sequential(*layers)
        if config.pool == "avg":
            self.pool: nn.Module = nn.AdaptiveAvgPool2d(1)
        else:  # keep where on the map a feature fired: the linear layers see every position
            self.pool = nn.Identity()
            channels *= height * width_px
        head: list[nn.Module] = [nn.Flatten()]
        if config.hidden:
            head += [nn.Linear(channels, config.hidden), nn.ReLU(inplace=True)]
            channels = config.hidden
        if config.dropout:
            head.append(nn.Dropout(config.dropout))
        self.head = nn.Sequential(*head)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.pool(self.features(x))))

    def pipeline_parts(self) -> list[nn.Module]:
        """Modules whose composition, in order, is `forward` (pipeline parallelism)."""
        return [*self.features, self.pool, self.head, self.classifier]


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual add; a 1x1 conv shortcut when shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small ResNet: stem, one stage of basic blocks per width, pool, classifier."""

    def __init__(self, config: ResNetConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels = config.widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], channels, 3, config.stem_stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        blocks: list[nn.Module] = []
        for index, width in enumerate(config.widths):
            for block in range(config.blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(channels, width, stride))
                channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.layers(self.stem(x)))))

    def pipeline_parts(self) -> list[nn.Module]:
        """Modules whose composition, in order, is `forward` (pipeline parallelism)."""
        return [self.stem, *self.layers, self.pool, self.flatten, self.classifier]


class MLP(nn.Module):
    """Flatten, hidden Linear+ReLU layers, classifier."""

    def __init__(self, config: MLPConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        features = 1
        for dim in input_shape:
            features *= dim
        layers: list[nn.Module] = [nn.Flatten()]
        for width in config.hidden:
            layers += [nn.Linear(features, width), nn.ReLU(inplace=True)]
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            features = width
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))

    def pipeline_parts(self) -> list[nn.Module]:
        """Modules whose composition, in order, is `forward` (pipeline parallelism)."""
        return [*self.body, self.classifier]


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.depthwise(x)))
        return self.relu(self.bn2(self.pointwise(x)))


class MobileNet(nn.Module):
    """MobileNet v1 style: a full 3x3 stem, then depthwise-separable blocks."""

    def __init__(self, config: MobileNetConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(input_shape[0], config.stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(config.stem_width),
            nn.ReLU(inplace=True),
        )
        strides = config.strides or [1] + [2] * (len(config.widths) - 1)
        blocks, channels = [], config.stem_width
        for width, stride in zip(config.widths, strides):
            blocks.append(DepthwiseSeparable(channels, width, stride))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.blocks(self.stem(x)))))

    def pipeline_parts(self) -> list[nn.Module]:
        """Modules whose composition, in order, is `forward` (pipeline parallelism)."""
        return [self.stem, *self.blocks, self.pool, self.flatten, self.classifier]


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv Linear and an output projection.

    Written out (rather than nn.MultiheadAttention) so structured pruning can remove
    whole heads: Torch-Pruning prunes the qkv Linear's outputs head by head and
    `num_heads` / `head_dim` are plain attributes the forward pass reads.
    """

    def __init__(self, embed_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        weights = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        out = weights.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, embed_dim: int, num_heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y)
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class Transformer(nn.Module):
    """A small ViT: conv patch embedding, learned positions, encoder blocks, mean pool."""

    def __init__(self, config: TransformerConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        if height % config.patch_size or width % config.patch_size:
            raise RecipeError(
                f"model.patch_size {config.patch_size} does not divide the image {height}x{width}"
            )
        tokens = (height // config.patch_size) * (width // config.patch_size)
        dim = config.embed_dim
        self.patch = nn.Conv2d(channels, dim, config.patch_size, config.patch_size)
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        hidden = max(int(dim * config.mlp_ratio), 1)
        self.blocks = nn.Sequential(
            *[EncoderBlock(dim, config.num_heads, hidden) for _ in range(config.depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.position
        return self.classifier(self.norm(self.blocks(x)).mean(dim=1))


def find_classifier(model: nn.Module, num_classes: int) -> nn.Module | None:
    """The layer producing the class logits: `classifier`, else the last Linear with
    `num_classes` outputs."""
    named = getattr(model, "classifier", None)
    if isinstance(named, nn.Module):
        return named
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_classes:
            last = module
    return last
