"""Generated image folders for tests (learnable PNG classes, broken files) and lazy
splits whose reads can be counted.

Example:
    >>> root = write_image_folder(tmp_path / "images")  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['class0', 'class1']
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from compress.data.bundle import DataBundle


def class_image(label: int, size: tuple[int, int], channels: int, rng) -> np.ndarray:
    """A noisy image whose class is easy to learn: class k brightens band k of the rows.

    Returns uint8 (height, width) or (height, width, 3), as Pillow saves it.
    """
    height, width = size
    image = rng.integers(0, 96, (height, width, channels), dtype=np.uint8)
    band = max(height // 4, 1)
    image[(label % 4) * band : (label % 4 + 1) * band] = 230
    return image[..., 0] if channels == 1 else image


def write_image_folder(
    root: str | Path,
    classes: int = 2,
    per_class: int = 20,
    size: tuple[int, int] = (12, 12),
    channels: int = 1,
    split: str | None = None,
    suffix: str = ".png",
    seed: int = 0,
) -> Path:
    """Write `classes` x `per_class` generated images as `root/[split/]class<k>/<i>.png`.

    Args:
        root: the image folder (created).
        split: a split folder (`train`, `val`, `test`) to write into, or None for
            the class-folder layout.
        size: (height, width) of every image.
        channels: 1 (grayscale "L" files) or 3 (RGB files).
        suffix: ".png" or ".jpg".
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / split if split else Path(root)
    for label in range(classes):
        folder = base / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            image = class_image(label, size, channels, rng)
            Image.fromarray(image).save(folder / f"{index:03d}{suffix}")
    return Path(root)


def break_file(path: str | Path, how: str = "truncate") -> Path:
    """Damage an image file: `truncate` (half its bytes), `empty` (zero bytes) or
    `text` (not an image at all)."""
    path = Path(path)
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not an image\n")
    return path


class CountingRows:
    """A `RowReader` over tensors that records every read: a lazy split whose reads a
    test can count (how many rows at once, how many in all).

    Example:
        >>> from compress.data import Split
        >>> rows = CountingRows(torch.zeros(10, 1, 2, 2))
        >>> split = Split(None, torch.zeros(10, dtype=torch.int64), reader=rows)
        >>> [len(x[0]) for x, _ in split.chunks(4)], rows.reads
        ([4, 4, 2], [4, 4, 2])
    """

    def __init__(self, x: torch.Tensor, num_workers: int = 0):
        self.x, self.num_workers = x, num_workers
        self.shapes = (tuple(x.shape[1:]),)
        self.reads: list[int] = []  # rows per read, in order

    def __len__(self) -> int:
        return len(self.x)

    def read(self, rows) -> tuple[torch.Tensor, ...]:
        self.reads.append(len(rows))
        return (self.x[torch.as_tensor(list(rows), dtype=torch.int64)].clone(),)


def as_lazy(bundle: DataBundle) -> DataBundle:
    """The same bundle with every split read through a `CountingRows` reader."""
    from compress.data import Split

    def lazy(split: Split) -> Split:
        return Split(None, split.y, reader=CountingRows(split.x))

    return dataclasses.replace(
        bundle, train=lazy(bundle.train), val=lazy(bundle.val), test=lazy(bundle.test)
    )
