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


@settings(database=None, max_examples=60, deadline=None)
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
            "y_train must hold integer class labels",
        ),
        (
            "return {'x_train': np.ones((3, 2)), 'y_train': np.array([0, 1])}",
            "x_train and y_train differ in length",
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
