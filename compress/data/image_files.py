"""The image-folder source's files: listed, checked and hashed, nothing decoded.

`scan_image_folder` is what `DATA_SOURCES["image-folder"]` returns; the layouts,
checks and lazy splits are described in `compress.data.image_folder`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.errors import DataError
from compress.recipe.schema import DataConfig

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SPLIT_FOLDERS = ("train", "val", "test")


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
    kind = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "image")
    try:
        with Image.open(path) as image:
            size, kind = image.size, image.format or kind
            if kind == "JPEG":  # verify() checks nothing for JPEG: decode at 1/8 scale
                image.draft(image.mode, (1, 1))
                image.load()
            else:
                image.verify()
    except PermissionError as exc:  # an OSError, but not the file's fault
        return f"cannot be opened ({exc.strerror})", None
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
    if isinstance(size, int):
        return size, size
    return (int(size[0]), int(size[-1]))  # [N] or [height, width]


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
