"""source = "image-folder": layouts, decoding, resize/crop, statistics, bad files."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data import RawData, build_bundle, load_data
from compress.data.image_folder import ImageRows, load_image, sample_stats
from compress.errors import DataError, RecipeError
from compress.recipe.loader import validate_recipe
from compress.recipe.schema import DataConfig
from compress.testing import tiny_recipe_dict
from compress.testing.images import break_file, write_image_folder

pytestmark = pytest.mark.unit


def _config(root, **keys) -> DataConfig:
    return DataConfig(source="image-folder", path=str(root), **keys)


@pytest.fixture
def folder(tmp_path):
    """2 classes x 20 grayscale 12x12 PNGs in class folders."""
    return write_image_folder(tmp_path / "images")


# --------------------------------------------------------------------------- layouts


def test_class_folders_split_stratified_and_seeded(folder):
    bundle = load_data(_config(folder, channels=1), seed=0)
    again = load_data(_config(folder, channels=1), seed=0)

    sizes = [len(bundle.train), len(bundle.val), len(bundle.test)]
    files = [set(getattr(bundle, n).reader.files) for n in ("train", "val", "test")]
    assert sizes == [28, 4, 8]  # test 4 of 20 per class, val 2 of the 16 left
    assert not (files[0] & files[1] or files[0] & files[2] or files[1] & files[2])
    assert sum(map(len, files)) == 40
    assert all(torch.bincount(getattr(bundle, n).y).tolist() == [s // 2] * 2
               for n, s in zip(("train", "val", "test"), sizes))  # fmt: skip
    assert again.train.reader.files == bundle.train.reader.files
    assert bundle.class_names == ["class0", "class1"]
    assert bundle.input_contract()["output"]["classes"] == ["class0", "class1"]


def test_split_folders_use_test_and_val_as_given(tmp_path):
    root = tmp_path / "images"
    write_image_folder(root, per_class=10, split="train")
    write_image_folder(root, per_class=3, split="test", seed=1)

    carved = load_data(_config(root), seed=0)
    write_image_folder(root, per_class=2, split="val", seed=2)
    given = load_data(_config(root), seed=0)

    assert len(carved.test) == 6 and all(f.startswith("test/") for f in carved.test.reader.files)
    assert len(carved.val) == 4 and len(carved.train) == 16  # val carved from train/
    assert [len(given.train), len(given.val), len(given.test)] == [20, 4, 6]
    assert all(f.startswith("val/") for f in given.val.reader.files)


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("empty-class", "class folder class1/ holds no"),
        ("loose-image", "stray.png lies outside any class folder"),
        ("no-classes", "no class folders"),
        ("unknown-test-class", "test/class9/ has no train/class9/"),
    ],
)
def test_layout_mistakes_are_named(tmp_path, layout, expected):
    root = tmp_path / "images"
    if layout == "unknown-test-class":
        write_image_folder(root, split="train", per_class=4)
        (root / "test" / "class9").mkdir(parents=True)
    elif layout == "no-classes":
        root.mkdir()
    else:
        write_image_folder(root, per_class=4)
    if layout == "empty-class":
        for path in (root / "class1").iterdir():
            path.unlink()
    if layout == "loose-image":
        Image.new("L", (12, 12)).save(root / "stray.png")

    with pytest.raises(DataError, match=expected):
        load_data(_config(root), seed=0)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    "how, reason",
    [("truncate", "truncated or corrupt PNG"), ("empty", "zero bytes"), ("text", "not an image")],
)
def test_a_bad_image_is_a_data_error_naming_the_file(folder, how, reason):
    break_file(folder / "class1" / "007.png", how)

    with pytest.raises(DataError, match=f"class1/007.png: {reason}.*skip_bad_images"):
        load_data(_config(folder), seed=0)


def test_a_truncated_jpeg_is_caught_at_load_time(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=6, suffix=".jpg")
    break_file(root / "class0" / "002.jpg")

    with pytest.raises(DataError, match="class0/002.jpg: truncated or corrupt JPEG"):
        load_data(_config(root), seed=0)


def test_skip_bad_images_leaves_them_out_and_counts_them(folder):
    break_file(folder / "class1" / "007.png")
    break_file(folder / "class0" / "001.png", "empty")

    bundle = load_data(_config(folder, skip_bad_images=True), seed=0)

    files = [f for n in ("train", "val", "test") for f in getattr(bundle, n).reader.files]
    assert len(files) == 38 and "class1/007.png" not in files
    (warning,) = bundle.warnings
    assert "skipped 2 unreadable images" in warning and "class0/001.png: zero bytes" in warning
    assert bundle.input_contract()["preprocessing"]["skipped_images"] == 2


def test_a_file_that_breaks_after_loading_is_named_when_decoded(folder):
    bundle = load_data(_config(folder, num_workers=1), seed=0)
    victim = bundle.test.reader.files[3]
    (folder / victim).write_bytes(b"")

    with pytest.raises(DataError, match=f"{victim}: cannot be decoded") as caught:
        list(bundle.test.chunks(4))  # decoded in a DataLoader worker
    assert "Traceback" not in str(caught.value)  # one line, not the worker's traceback


# --------------------------------------------------------------------------- decoding


def test_grayscale_and_rgb_decode_to_their_channels(tmp_path):
    root = write_image_folder(tmp_path / "rgb", per_class=6, channels=3)
    path = root / "class0" / "000.png"

    gray = load_data(_config(root, channels=1), seed=0)
    rgb = load_data(_config(root, channels=3), seed=0)

    assert gray.input_shape == (1, 12, 12) and rgb.input_shape == (3, 12, 12)
    assert gray.train.take(torch.tensor([0]))[0].shape == (1, 1, 12, 12)
    with Image.open(path) as image:
        expected_l, expected_rgb = np.asarray(image.convert("L")), np.asarray(image)
    assert np.array_equal(load_image(path, (12, 12), 1)[0], expected_l)
    assert np.array_equal(load_image(path, (12, 12), 3), expected_rgb.transpose(2, 0, 1))


def test_resize_covers_the_size_then_crops_the_centre(tmp_path):
    path = tmp_path / "wide.png"
    pixels = np.tile(np.arange(40, dtype=np.uint8) * 6, (20, 1))  # 20 high, 40 wide
    Image.fromarray(pixels).save(path)

    square = load_image(path, (10, 10), 1)
    portrait = load_image(path, (16, 4), 1)

    with Image.open(path) as image:
        expected = np.asarray(image.resize((20, 10), Image.Resampling.BILINEAR))[:, 5:15]
    assert square.shape == (1, 10, 10) and np.array_equal(square[0], expected)
    assert portrait.shape == (1, 16, 4)


def test_images_of_different_sizes_need_image_size(folder):
    Image.new("L", (20, 16)).save(folder / "class0" / "big.png")

    with pytest.raises(DataError, match="class0/big.png is 20x16 .* set data.image_size"):
        load_data(_config(folder), seed=0)
    bundle = load_data(_config(folder, image_size=[8, 6]), seed=0)
    assert bundle.input_shape == (3, 8, 6)
    assert next(bundle.train.chunks(64))[0][0].shape == (len(bundle.train), 3, 8, 6)


# --------------------------------------------------------------------------- statistics


def test_mean_and_std_given_are_used_and_recorded(folder):
    bundle = load_data(_config(folder, channels=1, mean=[0.5], std=[0.25]), seed=0)

    raw = bundle.train.reader.raw([0])[0].astype(np.float64) / 255
    x = bundle.train.take(torch.tensor([0]))[0][0].numpy()
    assert bundle.mean == [0.5] and bundle.std == [0.25]
    assert np.allclose(x, (raw - 0.5) / 0.25, atol=1e-6)
    assert bundle.input_contract()["preprocessing"]["stats"] == "data.mean / data.std"
    with pytest.raises(DataError, match="data.mean has 1 value, the data has 3 channels"):
        load_data(_config(folder, mean=[0.5], std=[0.25]), seed=0)


def test_mean_and_std_computed_from_the_training_images(folder):
    bundle = load_data(_config(folder, channels=3), seed=0)

    pixels = bundle.train.reader.raw(range(len(bundle.train))).astype(np.float64) / 255
    assert np.allclose(bundle.mean, pixels.mean(axis=(0, 2, 3)), atol=1e-12)
    assert np.allclose(bundle.std, pixels.std(axis=(0, 2, 3)), atol=1e-12)
    assert bundle.input_contract()["preprocessing"]["stats"] == (
        "computed from all 28 training images"
    )


def test_statistics_read_a_bounded_seeded_sample(folder):
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    rows = ImageRows(folder, files, (12, 12), 1, np.zeros(1), np.ones(1))
    asked = []
    original = rows.raw
    rows.raw = lambda index: asked.append(list(index)) or original(index)

    mean, _, used = sample_stats(rows, seed=3, limit=7)
    again, _, _ = sample_stats(rows, seed=3, limit=7)

    assert used == 7 and sum(map(len, asked)) == 14  # 7 rows per call, never all 40
    assert np.array_equal(mean, again)


def test_array_sources_take_mean_and_std_too():
    x = np.random.default_rng(0).integers(0, 17, (60, 1, 4, 4)).astype(np.float32)
    raw = RawData(x_train=x, y_train=np.arange(60) % 3, scale=1 / 16)

    bundle = build_bundle(raw, DataConfig(mean=[0.5], std=[0.2]), seed=0)

    assert bundle.mean == [0.5] and bundle.std == [0.2]
    first = bundle.train.x[0].numpy()
    assert first.min() >= (0 - 0.5) / 0.2 - 1e-6 and first.max() <= (1 - 0.5) / 0.2 + 1e-6
    with pytest.raises(DataError, match="data.mean has 2 values, the data has 1 channel"):
        build_bundle(raw, DataConfig(mean=[0.5, 0.5], std=[0.2, 0.2]), seed=0)


# --------------------------------------------------------------------------- lazy == in memory


def test_lazy_splits_equal_an_in_memory_bundle_of_the_same_images(folder):
    config = _config(folder, channels=1, mean=[0.4], std=[0.3])
    lazy = load_data(config, seed=0)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
    everything = ImageRows(folder, files, (12, 12), 1, np.zeros(1), np.ones(1))
    arrays = RawData(
        x_train=everything.raw(range(len(files))).astype(np.float32),
        y_train=np.array([int(f.split("/")[0][-1]) for f in files]),
        scale=1 / 255,
    )
    memory = build_bundle(arrays, DataConfig(mean=[0.4], std=[0.3]), seed=0)

    for name in ("train", "val", "test"):
        lazy_split, memory_split = getattr(lazy, name), getattr(memory, name)
        chunks = list(lazy_split.chunks(5))
        assert torch.equal(torch.cat([x[0] for x, _ in chunks]), memory_split.x)
        assert torch.equal(torch.cat([y for _, y in chunks]), memory_split.y)
        index = torch.tensor([3, 0, 2])
        assert torch.equal(lazy_split.take(index)[0], memory_split.take(index)[0])


def test_identity_follows_files_and_settings_not_loading(folder):
    first = load_data(_config(folder), seed=0).identity

    same = load_data(_config(folder), seed=0).identity
    resized = load_data(_config(folder, image_size=10), seed=0).identity
    path = folder / "class0" / "003.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    touched = load_data(_config(folder), seed=0).identity

    assert first == same and len({first, resized, touched}) == 3


# --------------------------------------------------------------------------- no labels


def test_unlabeled_images_are_read_recursively_without_labels(tmp_path):
    root = tmp_path / "calibration"
    write_image_folder(root / "a" / "deep", per_class=4)
    write_image_folder(root / "b", per_class=3, seed=1)

    bundle = load_data(_config(root, labeled=False, num_classes=5), seed=0)

    from compress.training import evaluate

    assert not bundle.labeled and not bundle.train.labeled
    assert sum(len(getattr(bundle, n)) for n in ("train", "val", "test")) == 14
    assert all((getattr(bundle, n).y == -1).all() for n in ("train", "val", "test"))
    assert bundle.num_classes == 5 and bundle.class_names is None
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 144, 5))
    assert evaluate(model, bundle.val) == {"accuracy": None, "loss": None}
    assert bundle.input_contract()["output"]["labeled"] is False


def test_unlabeled_data_cannot_feed_a_training_stage(folder):
    data = {"source": "image-folder", "path": str(folder), "labeled": False, "num_classes": 2}

    with pytest.raises(RecipeError, match=r"stages\[0\]\.type \(train\): 'train' trains on labels"):
        validate_recipe(tiny_recipe_dict(data=data), "t.toml")
    with pytest.raises(RecipeError, match="labeled = false needs num_classes"):
        validate_recipe(tiny_recipe_dict(data={**data, "num_classes": None}), "t.toml")
