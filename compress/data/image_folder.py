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

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compress.data.bundle import DataBundle, Split
from compress.data.checks import check_labels, check_train_split
from compress.data.splits import given_stats, split_indices
from compress.errors import DataError
from compress.recipe.schema import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = ("train", "val", "test")
STATS_SAMPLE = 2000  # training images the default mean/std are computed from, at most
SCALE = 1.0 / 255.0
_LISTED = 5  # skipped files named in the warning; the rest are counted


@dataclass
class ImageFiles:
    """What the image-folder source returns: checked files and labels per folder.

    `files[name]` are paths relative to `root` and `labels[name]` their class indices
    (-1 without labels), for name in "all" (class folders, or unlabeled) or the
    split folders found ("train", and "val" / "test" when present).
    """

    root: Path
    layout: str  # "class folders" | "split folders" | "unlabeled"
    files: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    class_names: list[str]
    size: tuple[int, int]  # (height, width) every decoded image has
    identity: str
    skipped: list[str] = field(default_factory=list)  # "relative/path: reason"

    @property
    def origin(self) -> str:
        return f"image-folder {self.root}"


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def problem(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(what is wrong with the file or None, its (width, height) when readable)."""
    from PIL import Image, UnidentifiedImageError

    if path.stat().st_size == 0:
        return "zero bytes, not an image", None
    try:
        with Image.open(path) as image:
            size, kind = image.size, image.format or "image"
            if kind == "JPEG":  # verify() checks nothing for JPEG: decode at 1/8 scale
                image.draft(image.mode, (1, 1))
                image.load()
            else:
                image.verify()
    except UnidentifiedImageError:
        return "not an image Pillow can read (PNG, JPEG)", None
    except Image.DecompressionBombError as exc:
        return f"refused: {exc}", None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        return f"truncated or corrupt {kind} ({exc})", None
    return None, size


def _target_size(config: DataConfig) -> tuple[int, int] | None:
    size = config.image_size
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _list(config: DataConfig, root: Path) -> tuple[str, dict[str, list[Path]], dict, list[str]]:
    """(layout, files by folder, labels by folder, class names), before any check."""
    where = f"image-folder {root}"
    if not config.labeled:
        files = _images_under(root)
        if not files:
            raise DataError(f"{where}: no {'/'.join(IMAGE_SUFFIXES)} images under the folder")
        return "unlabeled", {"all": files}, {"all": np.full(len(files), -1)}, []
    split_layout = (root / "train").is_dir()
    groups = [n for n in SPLIT_FOLDERS if (root / n).is_dir()] if split_layout else ["all"]
    if split_layout:
        stray = [p.name for p in _subfolders(root) if p.name not in SPLIT_FOLDERS]
        if stray:
            raise DataError(
                f"{where}: folder {stray[0]}/ beside train/: a split layout holds only "
                "train/, val/ and test/ (each with one folder per class)"
            )
    bases = {name: root / name if split_layout else root for name in groups}
    classes = [p.name for p in _subfolders(bases["all" if not split_layout else "train"])]
    if not classes:
        inside = "train/" if split_layout else "the folder"
        raise DataError(f"{where}: no class folders in {inside} (expected <class>/*.png|jpg)")
    files, labels = {}, {}
    for name, base in bases.items():
        loose = [p for p in base.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DataError(
                f"{where}: {loose[0].relative_to(root)} lies outside any class folder "
                "(images go in <class>/ folders; labeled = false reads loose images)"
            )
        found = [p.name for p in _subfolders(base)]
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(
                f"{where}: class folder {name}/{unknown[0]}/ has no train/{unknown[0]}/: "
                "no model could learn it"
            )
        group_files, group_labels = [], []
        for index, cls in enumerate(classes):
            members = _images_under(base / cls) if (base / cls).is_dir() else []
            if not members and name in ("train", "all"):
                inside = f"{name}/{cls}" if split_layout else cls
                raise DataError(
                    f"{where}: class folder {inside}/ holds no {'/'.join(IMAGE_SUFFIXES)} images"
                )
            group_files += members
            group_labels += [index] * len(members)
        if not group_files:
            raise DataError(f"{where}: {name}/ holds no images in its class folders")
        files[name], labels[name] = group_files, np.asarray(group_labels, dtype=np.int64)
    return ("split folders" if split_layout else "class folders"), files, labels, classes


def scan_image_folder(config: DataConfig) -> ImageFiles:
    """List, check and hash the recipe's image folder (nothing is decoded here).

    Raises:
        DataError: no folder, no class folders, an empty class folder, an image
            outside any class folder, an unreadable image (unless
            `skip_bad_images`), images of different sizes without `image_size`.
    """
    root = Path(config.path)
    where = f"image-folder {root}"
    if not root.is_dir():
        raise DataError(f"{where}: folder not found")
    layout, files, labels, classes = _list(config, root)
    target = _target_size(config)
    digest = hashlib.sha256()
    settings = {k: getattr(config, k) for k in ("image_size", "channels", "labeled")}
    digest.update(json.dumps([layout, settings], sort_keys=True, default=list).encode())
    skipped: list[str] = []
    first: tuple[Path, tuple[int, int]] | None = None
    kept_files: dict[str, list[str]] = {}
    kept_labels: dict[str, np.ndarray] = {}
    for name, paths in files.items():
        keep: list[int] = []
        for position, path in enumerate(paths):
            rel = path.relative_to(root).as_posix()
            stat = path.stat()
            digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            reason, size = problem(path)
            if reason is not None:
                if not config.skip_bad_images:
                    raise DataError(
                        f"{where}: {rel}: {reason} (fix or remove it, or set "
                        "data.skip_bad_images = true to skip such files)"
                    )
                skipped.append(f"{rel}: {reason}")
                continue
            if target is None:
                if first is None:
                    first = (path, size)
                elif size != first[1]:
                    raise DataError(
                        f"{where}: {rel} is {size[0]}x{size[1]} but "
                        f"{first[0].relative_to(root).as_posix()} is {first[1][0]}x"
                        f"{first[1][1]} (width x height): set data.image_size to resize "
                        "and centre-crop every image to one size"
                    )
            keep.append(position)
        kept_files[name] = [paths[i].relative_to(root).as_posix() for i in keep]
        kept_labels[name] = labels[name][np.asarray(keep, dtype=np.int64)]
    for name, group in kept_labels.items():  # skipping may have emptied a class
        if layout != "unlabeled" and name in ("all", "train"):
            empty = [c for i, c in enumerate(classes) if not (group == i).any()]
            if empty:
                raise DataError(
                    f"{where}: class {empty[0]} has no readable image left after skipping "
                    f"{len(skipped)} bad file{'s' * (len(skipped) != 1)}"
                )
        if not len(group):
            raise DataError(f"{where}: no readable image left in {name} after skipping")
    if target is None:
        target = (first[1][1], first[1][0])
    return ImageFiles(
        root=root, layout=layout, files=kept_files, labels=kept_labels, class_names=classes,
        size=target, identity=digest.hexdigest()[:16], skipped=skipped,
    )  # fmt: skip


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


def sample_stats(rows: ImageRows, seed: int, limit: int = STATS_SAMPLE):
    """Per-channel mean and std (float64, population) of `raw * scale` over a seeded
    sample of at most `limit` rows, accumulated chunk by chunk (Chan's pairwise
    update), and how many rows they came from."""
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
