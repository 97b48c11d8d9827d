"""Checks on a data source's arrays, run at load time before anything trains.

Every problem is a `DataError` (exit 2: the data is the user's input) whose message
starts with where the data came from (`npz /data/x.npz`, `data.source pkg.mod:load`)
and names the array and the index at fault: `x_train[12, 0, 3, 1] is nan`,
`y_train[3] = -1`. One exception is a warning, not an error, where the recipe asks
for it: labels of a single class under `data.allow_single_class`.

The order is the order a user fixes things in: what the arrays are (dtype, shape,
length), then their values (finite, labels), then whether there are enough of them
for the recipe's splits.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from compress.errors import DataError
from compress.recipe.schema import DataConfig

PAIRS = (("x_train", "y_train"), ("x_test", "y_test"))
_LISTED = 6  # classes named in one message; the rest are counted


def check_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Dtypes, dimensions and lengths of `x_train`, `y_train` (and `x_test`, `y_test`).

    Args:
        arrays: the source's arrays by name, before any conversion.
        where: the data's origin, the first word of every message.

    Raises:
        DataError: an object, string or complex array; non-integer labels; labels
            that are not one per sample; inputs neither (N, C, H, W) nor (N, features);
            a test split whose samples differ in shape from the training ones.

    Example:
        >>> check_arrays({"x_train": np.zeros((2, 3)), "y_train": np.array([0, 1])}, "npz")
    """
    for name, array in arrays.items():
        kind = array.dtype.kind
        if kind == "O":
            raise DataError(
                f"{where}: {name} holds Python objects, not numbers; save numeric arrays "
                "(compress never unpickles data)"
            )
        if name.startswith("x") and kind not in "biuf":
            raise DataError(f"{where}: {name} must hold numbers, got dtype {array.dtype}")
        if name.startswith("y") and kind not in "iu":
            raise DataError(
                f"{where}: {name} must hold integer class labels 0..n-1, got dtype "
                f"{array.dtype} (convert them with y.astype(int))"
            )
        if name.startswith("y") and array.ndim != 1:
            raise DataError(
                f"{where}: {name} must be 1-D, one class index per sample, got shape "
                f"{array.shape}" + (" (one-hot? take y.argmax(1))" if array.ndim == 2 else "")
            )
    x_train = arrays["x_train"]
    if x_train.ndim not in (2, 4):
        raise DataError(
            f"{where}: x_train must be (N, C, H, W) images or (N, features) rows, got shape "
            f"{x_train.shape}" + (" (add a channel axis: x[:, None])" if x_train.ndim == 3 else "")
        )
    if 0 in x_train.shape[1:]:
        raise DataError(f"{where}: x_train samples are empty, shape {x_train.shape}")
    for x_name, y_name in PAIRS:
        if x_name not in arrays:
            continue
        x, y = arrays[x_name], arrays[y_name]
        if len(x) != len(y):
            raise DataError(f"{where}: {x_name} has {len(x)} samples but {y_name} {len(y)} labels")
        if len(x) == 0:
            raise DataError(f"{where}: {x_name} holds no samples")
    if "x_test" in arrays and arrays["x_test"].shape[1:] != x_train.shape[1:]:
        raise DataError(
            f"{where}: x_test samples are {arrays['x_test'].shape[1:]}, x_train samples "
            f"{x_train.shape[1:]}: both splits must share one shape"
        )


def check_finite(array: np.ndarray, name: str, where: str) -> None:
    """Every value of `array` finite; else name the first bad one and count them.

    Example:
        >>> check_finite(np.array([[1.0, np.nan]]), "x_train", "npz d.npz")
        Traceback (most recent call last):
        compress.errors.DataError: npz d.npz: x_train holds NaN or infinite values: x_train[0, 1] is nan (1 value in 1 sample)
    """  # noqa: E501
    finite = np.isfinite(array)
    if finite.all():
        return
    first = tuple(int(i) for i in np.argwhere(~finite)[0])
    bad_samples = int((~finite.reshape(len(array), -1)).any(axis=1).sum())
    bad_values = int((~finite).sum())
    index = ", ".join(str(i) for i in first)
    raise DataError(
        f"{where}: {name} holds NaN or infinite values: {name}[{index}] is "
        f"{array[first]} ({bad_values} value{'s' * (bad_values != 1)} in {bad_samples} "
        f"sample{'s' * (bad_samples != 1)})"
    )


def check_scale(value: object, where: str) -> float:
    """The source's `scale`: one finite number > 0.

    Example:
        >>> check_scale(np.float32(0.5), "npz d.npz")
        0.5
    """
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "biuf":
        raise DataError(
            f"{where}: scale must be one number, got {array.dtype} of shape {array.shape}"
        )
    scale = float(array.reshape(()))
    if not np.isfinite(scale) or scale <= 0:
        raise DataError(f"{where}: scale must be a finite number > 0, got {scale}")
    return scale


def _classes(values: np.ndarray, total: int | None = None) -> str:
    """'3, 5, 9' or '0, 1, 2, 3, 4, 5 and 994 more' (of `total` when more exist)."""
    total = len(values) if total is None else total
    shown = ", ".join(str(int(v)) for v in values[:_LISTED])
    return shown + (f" and {total - _LISTED} more" if total > _LISTED else "")


def _missing_classes(present: np.ndarray, count: int) -> np.ndarray:
    """The first few of 0..count-1 that `present` (sorted, unique) lacks."""
    missing: list[int] = []
    expected = 0
    for value in [*present.tolist(), count]:
        while expected < value and len(missing) <= _LISTED:
            missing.append(expected)
            expected += 1
        expected = value + 1
        if len(missing) > _LISTED:
            break
    return np.array(missing[: _LISTED + 1])


def check_labels(
    y_train: np.ndarray, y_test: np.ndarray | None, config: DataConfig, where: str
) -> list[str]:
    """Labels are class indices 0..n-1, of at least two classes, each with enough samples.

    Every class needs one sample in train, one in validation and, when the test split
    is carved from the training arrays, one in test; the stratified split then holds
    out `val_fraction` and `test_fraction` of each class (never all of it).

    Returns:
        Warnings for the report (a single class under `data.allow_single_class`).

    Example:
        >>> check_labels(np.array([0, 0, 0, 1, 1, 1]), None, DataConfig(), "npz d.npz")
        []
    """
    for name, labels in (("y_train", y_train), ("y_test", y_test)):
        if labels is not None and labels.min() < 0:
            index = int(np.argmax(labels < 0))
            raise DataError(
                f"{where}: {name}[{index}] = {int(labels[index])}: labels must be >= 0 "
                "(class indices 0..n-1)"
            )
    classes, counts = np.unique(y_train, return_counts=True)
    warnings = []
    if len(classes) < 2:
        only = int(classes[0])
        if not config.allow_single_class:
            raise DataError(
                f"{where}: every label in y_train is {only}: one class is not a classification "
                "task (the model would be right by construction); add samples of the other "
                "classes, or set data.allow_single_class = true to train on it anyway"
            )
        warnings.append(
            f"{where}: every label in y_train is {only}: a one-class model is right by "
            "construction (accepted by data.allow_single_class)"
        )
    count = int(max(classes[-1], -1 if y_test is None else y_test.max())) + 1
    if y_test is not None:
        unseen = np.setdiff1d(np.unique(y_test), classes)
        if len(unseen):
            index = int(np.argmax(np.isin(y_test, unseen)))
            raise DataError(
                f"{where}: y_test[{index}] = {int(y_test[index])}: class {int(y_test[index])} "
                "has no sample in y_train, so no model can learn it"
            )
    if len(classes) < count:
        missing = _missing_classes(classes, count)
        hint = (
            f" (labels run {int(classes[0])}..{int(classes[-1])}: number the classes from 0)"
            if int(classes[0]) > 0 and len(classes) == classes[-1] - classes[0] + 1
            else f" (labels go up to {count - 1})"
        )
        raise DataError(
            f"{where}: labels must be 0..n-1 with samples of every class: y_train has no "
            f"class {_classes(missing, count - len(classes))}{hint}"
        )
    splits = (
        "1 each for train and validation"
        if y_test is not None
        else ("1 each for train, validation and test")
    )
    need = 2 if y_test is not None else 3
    short = counts < need
    if short.any():
        fractions = f"val_fraction {config.val_fraction}" + (
            "" if y_test is not None else f" and test_fraction {config.test_fraction}"
        )
        listed = ", ".join(
            f"class {int(c)} has {int(n)}"
            for c, n in list(zip(classes[short], counts[short]))[:_LISTED]
        )
        more = int(short.sum()) - _LISTED
        raise DataError(
            f"{where}: too few samples for {fractions}: each class needs at least {need} "
            f"({splits}); {listed}{f' and {more} more classes are short' if more > 0 else ''} "
            f"({len(y_train)} samples in all)"
        )
    return warnings


def check_train_split(labels: np.ndarray, num_classes: int, config: DataConfig, where: str) -> None:
    """After `max_train_samples`: every class keeps a training sample.

    Example:
        >>> check_train_split(np.array([0, 1]), 2, DataConfig(), "npz d.npz")
    """
    present = np.unique(labels)
    if len(present) == num_classes:
        return
    missing = np.setdiff1d(np.arange(num_classes), present)
    raise DataError(
        f"{where}: data.max_train_samples = {config.max_train_samples} leaves class "
        f"{_classes(missing)} without a training sample (too few of them to subsample); "
        "raise max_train_samples or remove it"
    )
