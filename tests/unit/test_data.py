"""Data sources and splits: determinism, stratification, disjointness, clear errors."""

from __future__ import annotations

import gzip
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.data import RawData, build_bundle, load_raw, stratified_split
from compress.errors import DataError
from compress.recipe.schema import DataConfig
from tests.properties import examples

pytestmark = pytest.mark.unit


# --------------------------------------------------------------------------- stratified_split


LABELS = np.repeat(np.arange(4), [40, 20, 10, 30])


def test_stratified_split_is_deterministic_per_seed():
    first = stratified_split(LABELS, 0.25, seed=7)
    again = stratified_split(LABELS, 0.25, seed=7)
    other = stratified_split(LABELS, 0.25, seed=8)

    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


def test_stratified_split_is_a_disjoint_cover():
    kept, held = stratified_split(LABELS, 0.25, seed=0)

    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(LABELS)))


def test_stratified_split_holds_out_the_fraction_of_every_class():
    _, held = stratified_split(LABELS, 0.25, seed=0)

    counts = np.bincount(LABELS[held], minlength=4)

    assert counts.tolist() == [10, 5, 2, 8]  # round(n * 0.25) per class: 40, 20, 10, 30


def test_stratified_split_keeps_one_of_each_class_on_both_sides():
    labels = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])

    kept, held = stratified_split(labels, 0.05, seed=0)

    assert sorted(set(labels[held].tolist())) == [0, 1]
    assert sorted(set(labels[kept].tolist())) == [0, 1]


@settings(database=None, max_examples=examples(ci=40, nightly=60), deadline=None)
@given(
    counts=st.lists(st.integers(1, 30), min_size=1, max_size=6),
    fraction=st.floats(0.05, 0.45),
    seed=st.integers(0, 2**31),
)
def test_stratified_split_invariants(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)

    kept, held = stratified_split(labels, fraction, seed)

    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    for label, count in enumerate(counts):
        held_count = int(np.sum(labels[held] == label))
        if count == 1:
            assert held_count == 0  # a lone sample stays on the kept side
        else:
            assert held_count == min(max(round(count * fraction), 1), count - 1)


# --------------------------------------------------------------------------- build_bundle


def _indexed_raw(count: int = 200, classes: int = 4, with_test: bool = False) -> RawData:
    """Flat features whose value is the sample's index, so splits can be traced back."""
    index = np.arange(count, dtype=np.float32)
    x = np.stack([index, index], axis=1)
    y = np.arange(count) % classes
    if with_test:
        test_index = np.arange(1000, 1040, dtype=np.float32)
        return RawData(x, y, np.stack([test_index, test_index], axis=1), np.arange(40) % classes)
    return RawData(x, y)


def _indices(split, bundle) -> np.ndarray:
    raw = split.x[:, 0].double() * bundle.std[0] + bundle.mean[0]
    return np.rint(raw.numpy() / bundle.scale).astype(int)


def test_bundle_splits_are_disjoint_and_cover_the_data():
    bundle = build_bundle(_indexed_raw(), DataConfig(val_fraction=0.2, test_fraction=0.25), 0)

    train, val, test = (set(_indices(s, bundle)) for s in (bundle.train, bundle.val, bundle.test))

    assert not train & val and not train & test and not val & test
    assert train | val | test == set(range(200))
    # Per 50-sample class: test round(12.5) = 12, val round(38 * 0.2) = 8, train 30.
    assert (len(test), len(val), len(train)) == (48, 32, 120)


def test_bundle_labels_follow_their_samples():
    bundle = build_bundle(_indexed_raw(), DataConfig(), 0)

    for split in (bundle.train, bundle.val, bundle.test):
        assert np.array_equal(_indices(split, bundle) % 4, split.y.numpy())


def test_bundle_is_deterministic_and_seed_dependent():
    config = DataConfig()

    first = build_bundle(_indexed_raw(), config, 3)
    again = build_bundle(_indexed_raw(), config, 3)
    other = build_bundle(_indexed_raw(), config, 4)

    assert torch.equal(first.val.x, again.val.x)
    assert not torch.equal(first.val.x, other.val.x)


def test_official_test_split_is_used_unchanged():
    bundle = build_bundle(_indexed_raw(with_test=True), DataConfig(), 0)

    assert sorted(_indices(bundle.test, bundle)) == list(range(1000, 1040))
    assert set(_indices(bundle.train, bundle)) | set(_indices(bundle.val, bundle)) == set(
        range(200)
    )


def test_max_train_samples_subsamples_train_only():
    full = build_bundle(_indexed_raw(), DataConfig(), 0)

    small = build_bundle(_indexed_raw(), DataConfig(max_train_samples=40), 0)

    assert len(small.train) == 40
    assert np.bincount(small.train.y.numpy()).tolist() == [10, 10, 10, 10]
    assert set(_indices(small.train, small)) < set(_indices(full.train, full))
    assert len(small.val) == len(full.val) and len(small.test) == len(full.test)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (RawData(np.zeros((4, 2, 2), np.float32), np.zeros(4, np.int64)), "x_train must be"),
        (RawData(np.zeros((4, 2), np.float32), np.array([0, 1, -1, 0])), "labels must be >= 0"),
        (
            RawData(np.array([[0.0, np.nan]] * 4, np.float32), np.array([0, 1, 0, 1])),
            "x_train holds NaN",
        ),
    ],
    ids=["3d-input", "negative-label", "nan"],
)
def test_unusable_raw_data_raises_data_error(raw, message):
    with pytest.raises(DataError) as info:
        build_bundle(raw, DataConfig(), 0)

    assert message in str(info.value)


# --------------------------------------------------------------------------- sklearn-digits


def test_digits_bundle_shapes_and_contract(digits_bundle):
    bundle = digits_bundle

    assert bundle.input_shape == (1, 8, 8)
    assert bundle.num_classes == 10
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    assert len(bundle.test) == pytest.approx(0.2 * 1797, abs=10)
    assert len(bundle.val) == pytest.approx(0.15 * (1797 - len(bundle.test)), abs=10)
    for split in (bundle.train, bundle.val, bundle.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert tuple(split.x.shape[1:]) == (1, 8, 8)
        assert split.x.shape[0] == split.y.shape[0]
    assert bundle.scale == 1 / 16
    assert float(bundle.train.x.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(bundle.train.x.std()) == pytest.approx(1.0, abs=1e-3)


def test_digits_every_class_in_every_split(digits_bundle):
    for split in (digits_bundle.train, digits_bundle.val, digits_bundle.test):
        counts = np.bincount(split.y.numpy(), minlength=10)
        share = counts / counts.sum()
        assert counts.min() > 0
        assert share == pytest.approx(np.full(10, 0.1), abs=0.02)


def test_digits_val_and_test_are_disjoint_from_train(digits_bundle):
    from sklearn.datasets import load_digits

    raw = load_digits()
    test_idx = stratified_split(raw.target, 0.2, seed=0)[1]
    rest = np.setdiff1d(np.arange(1797), test_idx)
    train_pos, val_pos = stratified_split(raw.target[rest], 0.15, seed=1)
    train_idx, val_idx = rest[train_pos], rest[val_pos]

    assert len({*train_idx} & {*val_idx}) == 0 and len({*train_idx} & {*test_idx}) == 0
    # The bundle holds exactly these images, normalised by the contract.
    contract = (raw.images[:, None] / 16 - digits_bundle.mean[0]) / digits_bundle.std[0]
    for split, idx in ((digits_bundle.train, train_idx), (digits_bundle.val, val_idx)):
        assert np.allclose(split.x.numpy(), contract[idx], atol=1e-5)
    assert np.allclose(digits_bundle.test.x.numpy(), contract[test_idx], atol=1e-5)


def test_digits_input_contract(digits_bundle):
    contract = digits_bundle.input_contract()

    assert contract["name"] == "input"
    assert contract["shape"] == ["batch", 1, 8, 8]
    assert contract["dtype"] == "float32"
    assert contract["layout"] == "NCHW"
    assert contract["preprocessing"]["scale"] == 1 / 16
    assert contract["preprocessing"]["mean"] == digits_bundle.mean
    assert contract["output"] == {"name": "logits", "shape": ["batch", 10]}


# --------------------------------------------------------------------------- fashion-mnist IDX


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_fashion(folder, train=6, test=4, size=3):
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (train, size, size)),
        "train-labels-idx1-ubyte.gz": np.arange(train) % 3,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (test, size, size)),
        "t10k-labels-idx1-ubyte.gz": np.arange(test) % 3,
    }
    for name, array in arrays.items():
        (folder / name).write_bytes(gzip.compress(_idx_bytes(array)))
    return arrays


def test_fashion_mnist_reads_idx_files(tmp_path):
    arrays = _write_fashion(tmp_path / "fm")

    raw = load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert raw.x_train.shape == (6, 1, 3, 3) and raw.x_test.shape == (4, 1, 3, 3)
    assert np.array_equal(raw.x_train[:, 0], arrays["train-images-idx3-ubyte.gz"])
    assert np.array_equal(raw.y_test, arrays["t10k-labels-idx1-ubyte.gz"])
    assert raw.scale == 1 / 255


def test_fashion_mnist_missing_folder_says_how_to_install(tmp_path):
    config = DataConfig(source="fashion-mnist", path=str(tmp_path / "absent"))

    with pytest.raises(DataError) as info:
        load_raw(config)

    message = str(info.value)
    assert str(tmp_path / "absent") in message
    assert "apt-get install" in message and "dataset-fashion-mnist" in message


def test_fashion_mnist_missing_file_is_named(tmp_path):
    _write_fashion(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value) == f"{tmp_path / 'fm' / 't10k-labels-idx1-ubyte.gz'}: file not found"


def test_fashion_mnist_truncated_payload(tmp_path):
    _write_fashion(tmp_path / "fm")
    target = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(payload[:-5]))

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value) == (f"{target}: truncated or corrupt: header says 54 values, found 49")


def test_fashion_mnist_truncated_gzip_stream(tmp_path):
    _write_fashion(tmp_path / "fm")
    target = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value).startswith(f"{target}: not a readable gzip file")


def test_fashion_mnist_not_gzip_at_all(tmp_path):
    _write_fashion(tmp_path / "fm")
    target = tmp_path / "fm" / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(b"<html>404 Not Found</html>")

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value).startswith(f"{target}: not a readable gzip file")


def test_fashion_mnist_bad_magic(tmp_path):
    _write_fashion(tmp_path / "fm")
    target = tmp_path / "fm" / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(20)))

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value) == f"{target}: not an IDX uint8 file (bad magic number)"


def test_fashion_mnist_image_label_count_mismatch(tmp_path):
    _write_fashion(tmp_path / "fm")
    target = tmp_path / "fm" / "train-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(_idx_bytes(np.arange(5) % 3)))

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="fashion-mnist", path=str(tmp_path / "fm")))

    assert str(info.value) == "fashion-mnist train: 6 images, 5 labels"


# --------------------------------------------------------------------------- npz


def test_npz_source_loads_arrays(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    np.savez(path, x_train=x, y_train=np.arange(6) % 2, scale=np.float32(0.5))

    raw = load_raw(DataConfig(source="npz", path=str(path)))

    assert np.array_equal(raw.x_train, x)
    assert raw.y_train.tolist() == [0, 1, 0, 1, 0, 1]
    assert raw.x_test is None and raw.scale == 0.5


_UNPICKLED: list[str] = []


def _record_unpickling(tag: str) -> str:
    _UNPICKLED.append(tag)
    return tag


class _Payload:
    def __reduce__(self):
        return (_record_unpickling, ("payload ran",))


def test_npz_refuses_pickled_object_arrays(tmp_path):
    path = tmp_path / "evil.npz"
    objects = np.empty(2, dtype=object)
    objects[:] = [_Payload(), _Payload()]
    np.savez(path, x_train=objects, y_train=np.array([0, 1]))
    _UNPICKLED.clear()

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value).startswith(f"npz {path}: unreadable")
    assert "allow_pickle" in str(info.value)
    assert _UNPICKLED == []


def test_npz_missing_keys_are_named(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 3), np.float32), labels=np.array([0, 1]))

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value) == f"npz {path}: missing y_train (has ['labels', 'x_train'])"


def test_npz_without_path(tmp_path):
    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz"))

    assert str(info.value) == "data.source = 'npz' needs data.path (the .npz file)"


def test_npz_missing_file(tmp_path):
    path = tmp_path / "absent.npz"

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value) == f"npz: {path} not found"


# --------------------------------------------------------------------------- user callables


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write a module under tmp_path, importable for this test only; return its name."""

    def write(source: str) -> str:
        name = f"user_data_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, name, raising=False)
        return name

    return write


def test_user_source_returning_arrays(user_module):
    name = user_module(
        """
        import numpy as np
        def load():
            return {"x_train": np.ones((4, 3)), "y_train": [0, 1, 0, 1], "scale": 2}
        """
    )

    raw = load_raw(DataConfig(source=f"{name}:load"))

    assert raw.x_train.dtype == np.float32 and raw.x_train.shape == (4, 3)
    assert raw.y_train.dtype == np.int64 and raw.y_train.tolist() == [0, 1, 0, 1]
    assert raw.scale == 2.0
    assert raw.description == f"data.source {name}:load"


def test_user_source_that_raises_is_named_with_its_error(user_module):
    name = user_module(
        """
        def load():
            raise FileNotFoundError("no such bucket: s3://x")
        """
    )

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source=f"{name}:load"))

    assert str(info.value) == (
        f"data.source {name}:load raised FileNotFoundError: no such bucket: s3://x"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("return [1, 2, 3]", "expected a mapping of arrays, got list"),
        ("return {'x_train': np.ones((2, 2))}", "missing y_train (has ['x_train'])"),
        (
            "return {'x_train': np.ones((2, 2)), 'y_train': np.array([0.5, 1.5])}",
            "y_train must hold integer class labels 0..n-1, got dtype float64 "
            "(convert them with y.astype(int))",
        ),
        (
            "return {'x_train': np.ones((3, 2)), 'y_train': np.array([0, 1])}",
            "x_train has 3 samples but y_train 2 labels",
        ),
        (
            "return {'x_train': np.ones((2, 2)), 'y_train': np.array([0, 1]), "
            "'x_test': np.ones((1, 2))}",
            "x_test and y_test must come together",
        ),
    ],
    ids=["list", "missing-key", "float-labels", "length-mismatch", "half-test"],
)
def test_user_source_returning_the_wrong_thing(user_module, body, expected):
    name = user_module(
        f"""
        import numpy as np
        def load():
            {body}
        """
    )

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source=f"{name}:load"))

    assert str(info.value) == f"data.source {name}:load: {expected}"


# --------------------------------------------------------------------------- load-time checks


def _raw(x=None, y=None, **fields) -> RawData:
    """Three classes of 10 flat samples, as a source would return them."""
    x = np.arange(60, dtype=np.float32).reshape(30, 2) if x is None else x
    y = np.arange(30) % 3 if y is None else y
    return RawData(x, y, origin="npz d.npz", **fields)


def _data_error(raw: RawData, config: DataConfig | None = None) -> str:
    with pytest.raises(DataError) as info:
        build_bundle(raw, config or DataConfig(), 0)
    assert info.value.exit_code == 2  # the user's input, not a failed stage
    return str(info.value)


def test_a_nan_is_named_by_its_index_and_counted():
    x = np.ones((30, 1, 2, 2), np.float32)
    x[4, 0, 1, 0] = np.nan
    x[9, 0, 0, 0] = np.inf

    message = _data_error(_raw(x))

    assert message == (
        "npz d.npz: x_train holds NaN or infinite values: x_train[4, 0, 1, 0] is nan "
        "(2 values in 2 samples)"
    )


def test_a_non_finite_official_test_split_is_named():
    x_test = np.ones((6, 2), np.float32)
    x_test[5, 1] = -np.inf

    message = _data_error(_raw(x_test=x_test, y_test=np.arange(6) % 3))

    assert "x_test[5, 1] is -inf (1 value in 1 sample)" in message


def test_a_negative_label_is_named_by_its_row():
    y = np.arange(30) % 3
    y[7] = -1

    assert _data_error(_raw(y=y)) == (
        "npz d.npz: y_train[7] = -1: labels must be >= 0 (class indices 0..n-1)"
    )


@pytest.mark.parametrize(
    ("x", "y", "expected"),
    [
        (
            np.zeros(30, np.float32),
            None,
            "x_train must be (N, C, H, W) images or (N, features) rows, got shape (30,)",
        ),
        (
            np.zeros((30, 8, 8), np.float32),
            None,
            "got shape (30, 8, 8) (add a channel axis: x[:, None])",
        ),
        (np.zeros((30, 0), np.float32), None, "x_train samples are empty, shape (30, 0)"),
        (
            None,
            np.eye(3, dtype=np.int64)[np.arange(30) % 3],
            "y_train must be 1-D, one class index per sample, got shape (30, 3) "
            "(one-hot? take y.argmax(1))",
        ),
        (
            None,
            (np.arange(30) % 3).astype(np.float64),
            "y_train must hold integer class labels 0..n-1, got dtype float64",
        ),
        (None, np.arange(30) % 3 == 0, "y_train must hold integer class labels 0..n-1"),
        (np.array(["a"] * 30)[:, None], None, "x_train must hold numbers, got dtype <U1"),
        (None, np.arange(29) % 3, "x_train has 30 samples but y_train 29 labels"),
        (np.zeros((0, 2), np.float32), np.zeros(0, np.int64), "x_train holds no samples"),
    ],
    ids=[
        "1d-x",
        "3d-x",
        "empty-samples",
        "one-hot-y",
        "float-y",
        "bool-y",
        "string-x",
        "length",
        "no-samples",
    ],
)
def test_arrays_of_the_wrong_shape_or_dtype_are_named(x, y, expected):
    message = _data_error(_raw(x, y))

    assert message.startswith("npz d.npz: ")
    assert expected in message


def test_an_object_array_from_a_user_source_is_refused_not_converted(user_module):
    name = user_module(
        """
        import numpy as np
        def load():
            x = np.empty(4, dtype=object)
            x[:] = [1.0, "two", None, 4.0]
            return {"x_train": x, "y_train": [0, 1, 0, 1]}
        """
    )

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source=f"{name}:load"))

    assert str(info.value) == (
        f"data.source {name}:load: x_train holds Python objects, not numbers; save numeric "
        "arrays (compress never unpickles data)"
    )


def test_ragged_lists_from_a_user_source_are_not_an_array(user_module):
    name = user_module(
        """
        def load():
            return {"x_train": [[1.0, 2.0], [3.0]], "y_train": [0, 1]}
        """
    )

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source=f"{name}:load"))

    assert str(info.value).startswith(f"data.source {name}:load: x_train is not an array (")


@pytest.mark.parametrize(
    ("scale", "expected"),
    [
        (np.array([0.5, 0.5]), "scale must be one number, got float64 of shape (2,)"),
        (np.array("x"), "scale must be one number, got <U1 of shape ()"),
        (np.float32(0.0), "scale must be a finite number > 0, got 0.0"),
        (np.float64(np.nan), "scale must be a finite number > 0, got nan"),
    ],
    ids=["array", "string", "zero", "nan"],
)
def test_a_bad_scale_is_named(tmp_path, scale, expected):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((30, 2), np.float32), y_train=np.arange(30) % 3, scale=scale)

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value) == f"npz {path}: {expected}"


def test_a_single_class_is_an_error_that_says_how_to_allow_it():
    message = _data_error(_raw(y=np.zeros(30, np.int64)))

    assert message.startswith("npz d.npz: every label in y_train is 0: one class is not")
    assert "set data.allow_single_class = true" in message


def test_a_single_class_the_recipe_allows_is_a_warning_on_the_bundle():
    bundle = build_bundle(_raw(y=np.zeros(30, np.int64)), DataConfig(allow_single_class=True), 0)

    assert bundle.num_classes == 1
    assert bundle.warnings == [
        "npz d.npz: every label in y_train is 0: a one-class model is right by construction "
        "(accepted by data.allow_single_class)"
    ]
    assert build_bundle(_raw(), DataConfig(), 0).warnings == []


def test_one_based_labels_say_to_number_classes_from_zero():
    message = _data_error(_raw(y=np.arange(30) % 3 + 1))

    assert message == (
        "npz d.npz: labels must be 0..n-1 with samples of every class: y_train has no "
        "class 0 (labels run 1..3: number the classes from 0)"
    )


def test_gaps_in_the_labels_are_listed_and_counted():
    y = np.where(np.arange(30) % 2 == 0, 0, 1000)

    message = _data_error(_raw(y=y))

    assert message.endswith(
        "y_train has no class 1, 2, 3, 4, 5, 6 and 993 more (labels go up to 1000)"
    )


def test_a_test_class_without_training_samples_is_named():
    y_test = np.array([0, 1, 2, 5, 1])

    message = _data_error(_raw(x_test=np.ones((5, 2), np.float32), y_test=y_test))

    assert message == (
        "npz d.npz: y_test[3] = 5: class 5 has no sample in y_train, so no model can learn it"
    )


def test_too_few_samples_says_what_each_class_needs_and_has():
    message = _data_error(_raw(np.ones((3, 1, 8, 8), np.float32), np.array([0, 1, 2])))

    assert message == (
        "npz d.npz: too few samples for val_fraction 0.15 and test_fraction 0.2: each class "
        "needs at least 3 (1 each for train, validation and test); class 0 has 1, class 1 "
        "has 1, class 2 has 1 (3 samples in all)"
    )


def test_with_an_official_test_split_two_per_class_are_enough():
    y = np.array([0, 0, 1, 1, 2])
    raw = _raw(np.ones((5, 2), np.float32), y, x_test=np.ones((3, 2), np.float32))
    raw.y_test = np.array([0, 1, 2])

    message = _data_error(raw)
    raw.y_train, raw.x_train = np.array([0, 0, 1, 1, 2, 2]), np.ones((6, 2), np.float32)
    bundle = build_bundle(raw, DataConfig(), 0)

    assert "each class needs at least 2 (1 each for train and validation); class 2 has 1" in (
        message
    )
    assert "test_fraction" not in message
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (3, 3, 3)


def test_max_train_samples_that_drops_a_class_is_named():
    y = np.array([0] * 3 + [1] * 100)
    raw = _raw(np.ones((103, 2), np.float32), y)

    message = _data_error(raw, DataConfig(max_train_samples=5))

    assert message.startswith(
        "npz d.npz: data.max_train_samples = 5 leaves class 0 without a training sample"
    )


def test_values_that_overflow_float32_once_normalised_are_refused():
    x = np.zeros((30, 2), np.float32)
    x_test = np.full((6, 2), 3e38, np.float32)

    message = _data_error(_raw(x, x_test=x_test, y_test=np.arange(6) % 3))

    assert "the test split overflows float32 once scaled and normalised" in message


def test_an_official_test_split_of_another_shape_is_named():
    message = _data_error(_raw(x_test=np.ones((6, 3), np.float32), y_test=np.arange(6) % 3))

    assert message == (
        "npz d.npz: x_test samples are (3,), x_train samples (2,): both splits must share one shape"
    )


@settings(database=None, max_examples=examples(ci=40, nightly=80), deadline=None)
@given(
    counts=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    official_test=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_every_bundle_has_every_class_in_every_split_or_is_a_data_error(
    counts, official_test, seed
):
    y = np.repeat(np.arange(len(counts)), counts)
    x = np.arange(2 * len(y), dtype=np.float32).reshape(-1, 2)
    extra = {}
    if official_test:
        extra = {"x_test": np.ones((len(counts), 2), np.float32), "y_test": np.arange(len(counts))}

    # the classes are 0..last non-empty one (an official test split names all of them);
    # each needs 3 samples (2 beside an official test split), and there must be two
    last = max((i for i, c in enumerate(counts) if c), default=-1)
    classes = len(counts) if official_test else last + 1
    need = 2 if official_test else 3
    usable = sum(1 for c in counts if c) >= 2 and min(counts[:classes]) >= need

    try:
        bundle = build_bundle(RawData(x, y, origin="npz d.npz", **extra), DataConfig(), seed)
    except DataError as exc:
        assert str(exc).startswith("npz d.npz: ")
        assert not usable, str(exc)
        return

    assert usable
    assert bundle.num_classes == classes
    for split in (bundle.train, bundle.val, bundle.test):
        assert set(split.y.tolist()) == set(range(classes))


# --------------------------------------------------------------------------- hostile .npz files


def test_a_truncated_npz_is_unreadable_not_a_crash(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((30, 2), np.float32), y_train=np.arange(30) % 3)
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value).startswith(f"npz {path}: unreadable (")


def test_a_npy_file_named_npz_is_named(tmp_path):
    path = tmp_path / "d.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.ones((30, 2), np.float32))

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value) == f"npz {path}: one .npy array, not an .npz archive of named arrays"


def test_an_object_array_in_an_npz_names_its_key(tmp_path):
    path = tmp_path / "d.npz"
    objects = np.empty(30, dtype=object)
    np.savez(path, x_train=np.ones((30, 2), np.float32), y_train=objects)

    with pytest.raises(DataError) as info:
        load_raw(DataConfig(source="npz", path=str(path)))

    assert str(info.value).startswith(f"npz {path}: unreadable: y_train: Object arrays cannot")
    assert str(info.value).endswith("(compress never unpickles data: save numeric arrays)")
