"""Deterministic, seeded, stratified splits and normalisation statistics."""

from __future__ import annotations

import numpy as np
import torch

from compress.data.bundle import DataBundle, RawData, Split, content_identity
from compress.data.checks import check_arrays, check_finite, check_labels, check_train_split
from compress.errors import DataError
from compress.recipe.schema import DataConfig


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held_out): `fraction` of each class held out, seeded.

    Example:
        >>> kept, held = stratified_split(np.array([0, 0, 1, 1]), 0.5, seed=0)
        >>> sorted(np.concatenate([kept, held]).tolist())
        [0, 1, 2, 3]
    """
    rng = np.random.default_rng(seed)
    kept, held = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        count = int(round(len(members) * fraction))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        held.append(members[:count])
        kept.append(members[count:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def _train_stats(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of scaled training images (one value for features)."""
    axes = (0, 2, 3) if x_train.ndim == 4 else (0,)
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    if x_train.ndim == 2:  # per-feature stats would be a huge contract; use one value
        mean, std = np.array([x_train.mean()]), np.array([max(float(x_train.std()), 1e-6)])
    return mean, std


def _subsample(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    if count >= len(labels):
        return np.arange(len(labels))
    kept, _ = stratified_split(labels, 1.0 - count / len(labels), seed)
    return kept


def split_indices(
    labels: np.ndarray,
    config: DataConfig,
    seed: int,
    carve_test: bool = True,
    carve_val: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Rows (train, val, test) of `labels`, the seeded stratified splits every source
    shares (None for a split the source brings itself).

    Test is `test_fraction` of each class (when carved), validation `val_fraction`
    of what is left, and `max_train_samples` a stratified subsample of the rest.

    Example:
        >>> train, val, test = split_indices(np.array([0, 1] * 10), DataConfig(), seed=0)
        >>> len(train), len(val), len(test)
        (14, 2, 4)
    """
    pool = np.arange(len(labels))
    test = val = None
    if carve_test:
        kept, test = stratified_split(labels, config.test_fraction, seed)
        pool = pool[kept]
    if carve_val:
        train_rel, val_rel = stratified_split(labels[pool], config.val_fraction, seed + 1)
        train, val = pool[train_rel], pool[val_rel]
    else:
        train = pool
    if config.max_train_samples is not None:
        train = train[_subsample(labels[train], config.max_train_samples, seed + 2)]
    return train, val, test


def given_stats(config: DataConfig, channels: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """`data.mean` / `data.std` as float64 arrays, one value per channel (or one for
    flat features); a count that does not match the data is a DataError."""
    mean, std = np.asarray(config.mean, np.float64), np.asarray(config.std, np.float64)
    for key, values in (("mean", mean), ("std", std)):
        if len(values) != channels:
            raise DataError(
                f"{where}: data.{key} has {len(values)} value{'s' * (len(values) != 1)}, the "
                f"data has {channels} channel{'s' * (channels != 1)} (one value per channel"
                + (", one for flat features)" if channels == 1 else ")")
            )
    return mean, std


def build_bundle(raw: RawData, config: DataConfig, seed: int) -> DataBundle:
    """Split, scale and normalise `raw` into a DataBundle.

    The test split is the source's official one when it has one; validation is
    always carved from the training arrays, so test data never guides training.
    """
    where = raw.origin or raw.description or "data"
    arrays = {"x_train": raw.x_train, "y_train": raw.y_train}
    if raw.x_test is not None:
        arrays |= {"x_test": raw.x_test, "y_test": raw.y_test}
    check_arrays(arrays, where)
    for name in ("x_train", "x_test"):
        if name in arrays:
            check_finite(arrays[name], name, where)
    warnings = check_labels(raw.y_train, raw.y_test, config, where)

    x_all, y_all = raw.x_train, raw.y_train
    if raw.x_test is None:
        train_idx, val_idx, test_idx = split_indices(y_all, config, seed)
        x_test, y_test = x_all[test_idx], y_all[test_idx]
    else:
        train_idx, val_idx, _ = split_indices(y_all, config, seed, carve_test=False)
        x_test, y_test = raw.x_test, raw.y_test
    num_classes = int(max(y_all.max(), y_test.max())) + 1
    if config.max_train_samples is not None:
        check_train_split(y_all[train_idx], num_classes, config, where)

    if config.mean is not None:  # the user's normalisation (a pretrained model's own)
        mean, std = given_stats(config, x_all.shape[1] if x_all.ndim == 4 else 1, where)
    else:
        mean, std = _train_stats(x_all[train_idx] * raw.scale)

    stat_shape = (1, -1, 1, 1) if x_all.ndim == 4 else (1, -1)
    mean_b, std_b = mean.reshape(stat_shape), std.reshape(stat_shape)

    def to_split(x: np.ndarray, y: np.ndarray) -> Split:
        with np.errstate(over="ignore"):  # an overflow is refused below, by name
            normalised = ((x * raw.scale - mean_b) / std_b).astype(np.float32)
        return Split(torch.from_numpy(normalised), torch.from_numpy(y.astype(np.int64)))

    bundle = DataBundle(
        train=to_split(x_all[train_idx], y_all[train_idx]),
        val=to_split(x_all[val_idx], y_all[val_idx]),
        test=to_split(x_test, y_test),
        num_classes=num_classes,
        input_shape=tuple(int(d) for d in raw.x_train.shape[1:]),
        scale=float(raw.scale),
        mean=[float(m) for m in mean],
        std=[float(s) for s in std],
        description=raw.description,
        identity=content_identity(
            raw.x_train, raw.y_train, *([raw.x_test, raw.y_test] if raw.x_test is not None else [])
        ),
        warnings=warnings,
        preprocessing={"stats": "data.mean / data.std" if config.mean is not None
                       else "computed from the training split"},
    )  # fmt: skip
    for name in ("train", "val", "test"):  # finite raw values can still overflow float32
        if not torch.isfinite(getattr(bundle, name).x).all():
            raise DataError(
                f"{where}: the {name} split overflows float32 once scaled and normalised "
                f"(|x| up to {float(np.abs(raw.x_train).max()):.3g} in x_train); rescale the data"
            )
    return bundle
