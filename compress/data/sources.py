"""Data sources by recipe name; each returns `RawData` and nothing else.

A user source is `"package.module:function"` returning a mapping with
`x_train`, `y_train` and optionally `x_test`, `y_test` (numpy arrays), and
optionally `scale` (float).
"""

from __future__ import annotations

import gzip
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from compress.data.bundle import RawData
from compress.data.checks import check_arrays, check_scale
from compress.data.image_files import scan_image_folder
from compress.data.text import load_texts
from compress.errors import DataError
from compress.recipe.schema import DATA_CONFIGS, DataConfig
from compress.registry import Registry, import_callable

DATA_SOURCES: Registry[Callable[[DataConfig], RawData]] = Registry("data source")


def register_data_source(name: str, config_class: type[DataConfig] = DataConfig):
    """Decorator registering a loader `config -> RawData` under `[data] source = name`.

    Args:
        name: the recipe's `source` value.
        config_class: the `[data]` table's class for this source: `DataConfig` or a
            subclass adding the source's own keys (validated, described in the recipe
            reference, a typo named by its key path).

    Example:
        >>> @register_data_source("noise")  # doctest: +SKIP
        ... def load_noise(config):
        ...     return RawData(x_train=..., y_train=...)
    """

    def decorator(loader):
        DATA_CONFIGS.ensure(name, config_class)
        return DATA_SOURCES.register(name)(loader)

    return decorator


# labelled texts: they return a TextRaw, which load_data tokenizes and splits itself
DATA_SOURCES.register("csv")(load_texts)
DATA_SOURCES.register("jsonl")(load_texts)
# image files, listed and checked here, decoded lazily: load_data builds the lazy splits
DATA_SOURCES.register("image-folder")(scan_image_folder)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


@DATA_SOURCES.register("sklearn-digits")
def load_sklearn_digits(config: DataConfig) -> RawData:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0-16); no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None, :, :]
    return RawData(
        x_train=images,
        y_train=digits.target.astype(np.int64),
        scale=1.0 / 16.0,
        description="scikit-learn digits, 1x8x8, 10 classes",
        origin="sklearn-digits",
    )


def _read_idx(path: Path, expected_dims: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with gzip.open(path, "rb") as handle:
            payload = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(payload) < 4 or payload[:2] != b"\x00\x00" or payload[2] != 0x08:
        raise DataError(f"{path}: not an IDX uint8 file (bad magic number)")
    dims = payload[3]
    if dims != expected_dims:
        raise DataError(f"{path}: expected {expected_dims} dimensions, found {dims}")
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(payload[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    expected = int(np.prod(shape))
    if len(payload) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt: header says {expected} values, "
            f"found {len(payload) - header}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


@DATA_SOURCES.register("fashion-mnist")
def load_fashion_mnist(config: DataConfig) -> RawData:
    """Fashion-MNIST IDX files; the official t10k split is the test set."""
    folder = Path(config.path or FASHION_MNIST_DIR)
    if not folder.is_dir():
        raise DataError(
            f"fashion-mnist: folder {folder} not found. Install the data with "
            "'sudo apt-get install -y dataset-fashion-mnist' (or run "
            "scripts/get-fashion-mnist.sh), or set data.path to a folder holding "
            "train-images-idx3-ubyte.gz and its three siblings"
        )
    x_train = _read_idx(folder / "train-images-idx3-ubyte.gz", 3)
    y_train = _read_idx(folder / "train-labels-idx1-ubyte.gz", 1)
    x_test = _read_idx(folder / "t10k-images-idx3-ubyte.gz", 3)
    y_test = _read_idx(folder / "t10k-labels-idx1-ubyte.gz", 1)
    for images, labels, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(images) != len(labels):
            raise DataError(f"fashion-mnist {split}: {len(images)} images, {len(labels)} labels")
    return RawData(
        x_train=x_train[:, None].astype(np.float32),
        y_train=y_train.astype(np.int64),
        x_test=x_test[:, None].astype(np.float32),
        y_test=y_test.astype(np.int64),
        scale=1.0 / 255.0,
        description="Fashion-MNIST, 1x28x28, 10 classes, official t10k test split",
        origin=f"fashion-mnist {folder}",
    )


def _raw_from_mapping(mapping: object, where: str) -> RawData:
    if not hasattr(mapping, "keys") or not hasattr(mapping, "__getitem__"):
        raise DataError(f"{where}: expected a mapping of arrays, got {type(mapping).__name__}")
    keys = set(mapping.keys())
    missing = {"x_train", "y_train"} - keys
    if missing:
        raise DataError(f"{where}: missing {', '.join(sorted(missing))} (has {sorted(keys)})")
    if ("x_test" in keys) != ("y_test" in keys):
        raise DataError(f"{where}: x_test and y_test must come together")
    arrays = {}
    for key in ("x_train", "y_train", "x_test", "y_test"):
        if key not in keys:
            continue
        try:
            arrays[key] = np.asarray(mapping[key])
        except (ValueError, TypeError) as exc:  # ragged lists, say
            raise DataError(f"{where}: {key} is not an array ({exc})") from None
    check_arrays(arrays, where)
    scale = check_scale(mapping["scale"], where) if "scale" in keys else 1.0
    return RawData(
        x_train=arrays["x_train"].astype(np.float32),
        y_train=arrays["y_train"].astype(np.int64),
        x_test=arrays["x_test"].astype(np.float32) if "x_test" in arrays else None,
        y_test=arrays["y_test"].astype(np.int64) if "y_test" in arrays else None,
        scale=scale,
        description=where,
        origin=where,
    )


# What numpy and zipfile raise on a file that is not a whole .npz (fuzzed: truncations
# and bit flips of real archives); a header that claims a huge array is a MemoryError.
_UNREADABLE = (
    ValueError, OSError, EOFError, MemoryError, NotImplementedError, zipfile.BadZipFile,
    zlib.error,
)  # fmt: skip


@DATA_SOURCES.register("npz")
def load_npz(config: DataConfig) -> RawData:
    """User arrays from an .npz file (loaded with allow_pickle=False)."""
    if not config.path:
        raise DataError("data.source = 'npz' needs data.path (the .npz file)")
    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"npz: {path} not found")
    where = f"npz {path}"
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{where}: one .npy array, not an .npz archive of named arrays")
        with archive:
            arrays = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as exc:  # an object array: reading it would unpickle
                    raise DataError(
                        f"{where}: unreadable: {key}: {exc} (compress never unpickles data: "
                        "save numeric arrays)"
                    ) from None
    except DataError:
        raise
    except _UNREADABLE as exc:  # not a zip, a truncated or flipped one, a failed CRC
        raise DataError(f"{where}: unreadable ({type(exc).__name__}: {exc})") from None
    return _raw_from_mapping(arrays, where)


def load_user_source(config: DataConfig) -> RawData:
    """Call the user's `package.module:function` (a recipe is code you trust)."""
    function = import_callable(config.source, "data.source")
    try:
        result = function()
    except Exception as exc:  # the user's code: report it as theirs, with its message
        raise DataError(f"data.source {config.source} raised {type(exc).__name__}: {exc}") from exc
    return _raw_from_mapping(result, f"data.source {config.source}")


def load_raw(config: DataConfig) -> RawData:
    """Dispatch on `config.source`: a registered name or a user callable."""
    if config.source in DATA_SOURCES:
        return DATA_SOURCES.get(config.source)(config)
    return load_user_source(config)
