"""`source = "image-folder"`: JPEG/PNG files, one folder per class, read lazily.

Layouts (class index = position of the class folder's name in sorted order):

- `root/<class>/**/*.png|jpg|jpeg`: test and validation are carved from it as from
  any array source (stratified, seeded: `test_fraction`, then `val_fraction`);
- `root/train/<class>/...` with optional `root/val/<class>/...` and
  `root/test/<class>/...`: a missing val/ or test/ is carved from train/;
- `labeled = false`: every image under `root`, recursively, without labels
  (calibration images; `y` is -1).

Loading lists and checks the files (Pillow's `verify()` for PNG and others, a draft
decode at 1/8 scale for JPEG: both read the whole file without decoding it fully)
and keeps only paths and labels. The splits are lazy: `ImageRows` decodes a batch's
rows when asked (Pillow, `convert("L"|"RGB")`, resize so the image covers
`image_size` then centre crop, x / 255, then (x - mean[c]) / std[c]), in a torch
DataLoader with `num_workers` where a whole split is walked.

An unreadable file (zero bytes, truncated, not an image) is a DataError naming it,
or, with `skip_bad_images = true`, left out and counted in the data warnings. A file
that passes the load-time check but fails to decode later is still a DataError
naming it. Mean/std, unless the recipe gives them, come from a seeded sample of at
most `STATS_SAMPLE` training images (the contract says which). The bundle's
identity hashes relative paths, sizes and mtimes plus the preprocessing settings,
not the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.data.bundle import DataBundle, Split
from compress.data.checks import check_labels, check_train_split
from compress.data.image_files import ImageFiles
from compress.data.splits import given_stats, split_indices
from compress.errors import DataError
from compress.recipe.schema import DataConfig

STATS_SAMPLE = 2000  # training images the default mean/std are computed from, at most
SCALE = 1.0 / 255.0
_LISTED = 5  # skipped files named in the warning; the rest are counted


def load_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as uint8 (channels, height, width): decoded, converted, resized so it
    covers `size` (bilinear; shorter side to the size of a square), centre cropped."""
    from PIL import Image

    height, width = size
    with Image.open(path) as opened:
        image = opened.convert("L" if channels == 1 else "RGB")
    w, h = image.size
    if (h, w) != (height, width):
        scale = max(height / h, width / w)
        new = (max(width, round(w * scale)), max(height, round(h * scale)))
        if new != (w, h):
            image = image.resize(new, Image.Resampling.BILINEAR)
        left = int(round((new[0] - width) / 2.0))
        top = int(round((new[1] - height) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


@dataclass
class ImageRows:
    """A lazy split's `RowReader`: row i is image `files[i]` under `root`, normalised.

    Picklable (paths and numbers only), so DataLoader workers can take it.
    """

    root: Path
    files: list[str]
    size: tuple[int, int]
    channels: int
    mean: np.ndarray
    std: np.ndarray
    num_workers: int = 0

    @property
    def shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.channels, *self.size),)

    def __len__(self) -> int:
        return len(self.files)

    def raw(self, rows: Sequence[int]) -> np.ndarray:
        """uint8 (len(rows), C, H, W) of those rows, before scaling."""
        out = np.empty((len(rows), self.channels, *self.size), dtype=np.uint8)
        for slot, row in enumerate(rows):
            rel = self.files[row]
            try:
                out[slot] = load_image(self.root / rel, self.size, self.channels)
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise DataError(
                    f"image-folder {self.root}: {rel}: cannot be decoded ({exc}); it passed "
                    "the load-time check, so skip_bad_images cannot leave it out: fix or "
                    "remove it"
                ) from None
        return out

    def read(self, rows: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """float32 (len(rows), C, H, W): (raw * scale - mean[c]) / std[c], computed as
        `build_bundle` computes it for arrays (bit-identical to an in-memory split)."""
        shape = (1, -1, 1, 1)
        x = self.raw(rows).astype(np.float32) * SCALE
        normalised = ((x - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(np.float32)
        return (torch.from_numpy(normalised),)


def sample_stats(rows: ImageRows, seed: int, limit: int | None = None):
    """Per-channel mean and std (float64, population) of `raw * scale` over a seeded
    sample of at most `limit` rows (default `STATS_SAMPLE`), accumulated chunk by
    chunk (Chan's pairwise update), and how many rows they came from."""
    limit = STATS_SAMPLE if limit is None else limit
    count = len(rows)
    chosen = np.arange(count)
    if count > limit:
        chosen = np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))
    n, mean, m2 = 0, np.zeros(rows.channels), np.zeros(rows.channels)
    for start in range(0, len(chosen), 256):
        batch = rows.raw(chosen[start : start + 256].tolist()).astype(np.float64) * SCALE
        values = batch.transpose(1, 0, 2, 3).reshape(rows.channels, -1)
        k = values.shape[1]
        batch_mean = values.mean(axis=1)
        batch_m2 = ((values - batch_mean[:, None]) ** 2).sum(axis=1)
        delta = batch_mean - mean
        total = n + k
        mean = mean + delta * k / total
        m2 = m2 + batch_m2 + delta**2 * n * k / total
        n = total
    std = np.sqrt(m2 / max(n, 1))
    return mean, np.where(std < 1e-6, 1.0, std), len(chosen)


def build_image_bundle(found: ImageFiles, config: DataConfig, seed: int) -> DataBundle:
    """Lazy train/val/test splits of a scanned image folder (see the module docstring)."""
    where = found.origin
    groups = {}  # split name -> (relative files, labels)
    labeled = found.layout != "unlabeled"
    pool_name = "train" if found.layout == "split folders" else "all"
    pool_files, pool_labels = found.files[pool_name], found.labels[pool_name]
    carve_test, carve_val = "test" not in found.files, "val" not in found.files
    strata = pool_labels if labeled else np.zeros(len(pool_files), dtype=np.int64)
    warnings = []
    if labeled and carve_val:
        y_test = None if carve_test else found.labels["test"]
        warnings = check_labels(pool_labels, y_test, config, where)
    elif labeled and len(found.class_names) < 2 and not config.allow_single_class:
        raise DataError(
            f"{where}: one class folder ({found.class_names[0]}/) is not a classification "
            "task; add the other classes, or set data.allow_single_class = true"
        )
    elif not labeled and len(pool_files) < 3:
        raise DataError(f"{where}: {len(pool_files)} images; train, val and test need 3 or more")
    train, val, test = split_indices(strata, config, seed, carve_test, carve_val)
    num_classes = len(found.class_names) if labeled else int(config.num_classes)
    if labeled and config.max_train_samples is not None:
        check_train_split(pool_labels[train], num_classes, config, where)
    for name, rows in (("train", train), ("val", val), ("test", test)):
        if rows is None:  # the layout's own folder
            groups[name] = (found.files[name], found.labels[name])
        else:
            groups[name] = ([pool_files[i] for i in rows], pool_labels[rows])

    def reader(name: str, mean=np.zeros(config.channels), std=np.ones(config.channels)):
        return ImageRows(found.root, groups[name][0], found.size, config.channels, mean, std,
                         config.num_workers)  # fmt: skip

    if config.mean is not None:
        mean, std = given_stats(config, config.channels, where)
        stats = "data.mean / data.std"
    else:
        mean, std, used = sample_stats(reader("train"), seed + 3)
        total = len(groups["train"][0])
        stats = (
            f"computed from all {total} training images" if used == total
            else f"computed from a seeded sample of {used} of the {total} training images"
        )  # fmt: skip
    splits = {
        name: Split(None, torch.from_numpy(groups[name][1].astype(np.int64)),
                    reader=reader(name, mean, std), labeled=labeled)
        for name in ("train", "val", "test")
    }  # fmt: skip
    if found.skipped:
        listed = "; ".join(found.skipped[:_LISTED])
        more = len(found.skipped) - _LISTED
        warnings.append(
            f"{where}: skipped {len(found.skipped)} unreadable image"
            f"{'s' * (len(found.skipped) != 1)} (data.skip_bad_images): {listed}"
            + (f" and {more} more" if more > 0 else "")
        )
    height, width = found.size
    return DataBundle(
        **splits,
        num_classes=num_classes,
        input_shape=(config.channels, height, width),
        scale=SCALE,
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        description=f"image folder {found.root} ({found.layout}), {config.channels}x{height}x"
        f"{width}, " + (f"{num_classes} classes" if labeled else "no labels"),
        identity=found.identity,
        warnings=warnings,
        labeled=labeled,
        class_names=list(found.class_names) if labeled else None,
        preprocessing=_contract(found, config, stats),
    )


def _contract(found: ImageFiles, config: DataConfig, stats: str) -> dict:
    """How a user turns an image file into the model's input, without compress."""
    height, width = found.size
    return {
        "decode": "Pillow Image.open(path).convert("
        + ('"L") (grayscale)' if config.channels == 1 else '"RGB")'),
        "resize": f"bilinear (Pillow Image.resize, BILINEAR) so the image covers {height}x"
        f"{width} (height x width): scale = max({height} / h, {width} / w), each side "
        "round(side * scale), never below the target; skipped when the image is that size",
        "crop": f"centre {height}x{width}: left = round((w' - {width}) / 2), "
        f"top = round((h' - {height}) / 2)",
        "raw": "uint8 pixel values 0-255, channels first",
        "channels": config.channels,
        "image_size": [height, width],
        "stats": stats,
        "skipped_images": len(found.skipped),
        "layout": found.layout,
    }
