"""The csv / jsonl text sources: reading, labels, grouped splits, tokenization, errors,
and the length-bucketed batches training draws from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")

from compress.data import load_data  # noqa: E402
from compress.data.bundle import Split  # noqa: E402
from compress.errors import DataError  # noqa: E402
from compress.recipe.schema import DataConfig  # noqa: E402
from compress.testing import run_cli  # noqa: E402
from compress.testing.text import reviews, write_reviews, write_tokenizer  # noqa: E402
from compress.training.batches import batch_plan, take_batch  # noqa: E402

ROWS = reviews(240)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("texts")
    write_tokenizer(folder / "tokenizer.json", [row["text"] for row in ROWS])
    return {
        "tokenizer": folder / "tokenizer.json",
        "csv": write_reviews(folder / "reviews.csv", ROWS),
        "bz2": write_reviews(folder / "reviews.csv.bz2", ROWS),
        "jsonl": write_reviews(folder / "reviews.jsonl", ROWS),
    }


def _config(files, kind: str = "bz2", **overrides) -> DataConfig:
    values = {
        "source": "jsonl" if kind == "jsonl" else "csv",
        "path": str(files[kind]),
        "label_column": "category",
        "label_map": {"fresh": 1, "rotten": 0},
        "group_column": "movie_name",
        "tokenizer": str(files["tokenizer"]),
        "max_length": 16,
    }
    return DataConfig(**(values | overrides))


def test_csv_source_splits_every_row_once_with_labels_and_groups(files):
    from compress.data.sources import load_raw

    bundle = load_data(_config(files), seed=0)
    sizes = (len(bundle.train), len(bundle.val), len(bundle.test))
    assert sum(sizes) == len(ROWS) and min(sizes) > 0
    raw = load_raw(_config(files))
    assert raw.groups is not None and len(set(raw.groups)) == 24
    assert set(bundle.train.y.tolist()) == {0, 1}
    assert bundle.num_classes == 2
    assert bundle.text.label_names == ["rotten", "fresh"]


def test_groups_do_not_leak_between_splits(files):
    """Give every movie its own token so each row's split reveals its movie."""
    rows = [dict(r, text=f"{r['text']} {r['movie_name'].replace(' ', '')}") for r in ROWS]
    folder = files["csv"].parent / "leak"
    folder.mkdir(exist_ok=True)
    path = write_reviews(folder / "movies.csv", rows)
    write_tokenizer(folder / "tokenizer.json", [r["text"] for r in rows])
    bundle = load_data(
        _config(files, path=str(path), tokenizer=str(folder / "tokenizer.json")), seed=3
    )
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    movie_ids = {tokenizer.token_to_id(f"movie{i}") for i in range(24)}

    def seen(split: Split) -> set[int]:
        return set(split.inputs[0].flatten().tolist()) & movie_ids

    train, val, test = seen(bundle.train), seen(bundle.val), seen(bundle.test)
    assert train and val and test
    assert not (train & test) and not (train & val) and not (val & test)


def test_csv_bz2_and_jsonl_tokenize_identically_and_pad_on_the_right(files):
    bundles = [load_data(_config(files, kind), seed=0) for kind in ("csv", "bz2", "jsonl")]
    first = bundles[0]
    for other in bundles[1:]:
        assert torch.equal(other.train.inputs[0], first.train.inputs[0])
        assert torch.equal(other.test.y, first.test.y)
    ids, mask = first.train.inputs
    assert ids.dtype == mask.dtype == torch.int64
    assert torch.equal(first.train.lengths, mask.sum(1))
    # right padding: every row's ones come first, and padded positions hold the pad id 0
    assert torch.equal(mask, (torch.arange(ids.shape[1]) < first.train.lengths[:, None]).long())
    assert int(ids[mask == 0].abs().sum()) == 0
    assert first.signature.names == ["input_ids", "attention_mask"]
    assert first.signature.inputs[0].shape == ("batch", "sequence")


def test_label_map_and_truncation(files):
    bundle = load_data(_config(files, group_column=None, max_length=4), seed=0)
    assert bundle.train.inputs[0].shape[1] <= 4
    # label follows the mood words: fresh rows contain a GOOD word; check one known row
    from compress.data.sources import load_raw

    raw = load_raw(_config(files))
    assert raw.labels[:4].tolist() == [0, 1, 0, 1]  # rows alternate rotten, fresh


def test_labels_without_a_map_are_numbered_in_sorted_order(files):
    raw_config = _config(files, label_map=None)
    from compress.data.sources import load_raw

    raw = load_raw(raw_config)
    assert raw.label_names == ["fresh", "rotten"]
    assert raw.labels[:2].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"text_column": "review"}, "no column 'review'"),
        ({"label_map": {"fresh": 1}}, "category = 'rotten' is not in data.label_map"),
    ],
)
def test_errors_name_the_file_and_the_column(files, change, message):
    with pytest.raises(DataError) as info:
        load_data(_config(files, **change), seed=0)
    assert message in str(info.value)
    assert str(files["bz2"]) in str(info.value)


def test_empty_text_names_the_row(files, tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[6]["text"] = "   "
    path = write_reviews(tmp_path / "empty.jsonl", rows)
    with pytest.raises(DataError, match=r"line 7: text is empty"):
        load_data(_config(files, "jsonl", path=str(path)), seed=0)


def test_text_keys_are_refused_for_image_sources():
    with pytest.raises(ValueError, match="label_column only apply to the text sources"):
        DataConfig(source="sklearn-digits", label_column="y")
    with pytest.raises(ValueError, match="needs data.path"):
        DataConfig(source="csv")


_RECIPE = """
name = "bad-text"
[data]
source = "csv"
path = "{path}"
label_column = "category"
label_map = {{ fresh = 1, rotten = 0 }}
tokenizer = "{tokenizer}"
{extra}
[model]
architecture = "mlp"
[[stages]]
type = "train"
epochs = 1
"""


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-column", "no column 'review' (data.*_column)"),
        ("unknown-label", "row 3: category = 'meh' is not in data.label_map"),
        ("empty-text", "row 5: review_text is empty"),
    ],
)
def test_cli_exits_2_naming_the_column(files, tmp_path, case, expected):
    rows = [{"review_text": r["text"], "category": r["category"]} for r in ROWS[:40]]
    extra = 'text_column = "review_text"'
    if case == "missing-column":
        extra = 'text_column = "review"'
    elif case == "unknown-label":
        rows[2]["category"] = "meh"
    else:
        rows[4]["review_text"] = ""
    path = write_reviews(tmp_path / "bad.csv", rows)
    recipe = tmp_path / "bad.toml"
    recipe.write_text(_RECIPE.format(path=path, tokenizer=files["tokenizer"], extra=extra))
    run = run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr
    assert expected in run.stderr
    assert str(path) in run.stderr


def test_bucketed_batches_cover_every_row_once_with_similar_lengths():
    lengths = torch.from_numpy(np.random.default_rng(0).integers(1, 60, 1000))
    width = int(lengths.max())
    ids = torch.arange(width).repeat(1000, 1) + 1
    mask = (torch.arange(width) < lengths[:, None]).long()
    split = Split((ids * mask, mask), torch.zeros(1000, dtype=torch.int64), lengths=lengths)
    batches = batch_plan(split, 16, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    spread = np.mean([float(lengths[b].max() - lengths[b].min()) for b in batches])
    plain = Split(split.x, split.y)  # no lengths: plain shuffled batches
    random_spread = np.mean(
        [
            float(lengths[b].max() - lengths[b].min())
            for b in batch_plan(plain, 16, torch.Generator().manual_seed(0))
        ]
    )
    assert spread < random_spread / 4
    trimmed = take_batch(split, batches[0])
    assert trimmed[0].shape[1] == int(lengths[batches[0]].max())
    assert torch.equal(trimmed[1].sum(1), lengths[batches[0]])


def test_plain_batches_draw_the_same_order_as_before():
    split = Split(torch.zeros(10, 3), torch.zeros(10, dtype=torch.int64))
    batches = batch_plan(split, 4, torch.Generator().manual_seed(5))
    order = torch.randperm(10, generator=torch.Generator().manual_seed(5))
    assert [b.tolist() for b in batches] == [order[i : i + 4].tolist() for i in (0, 4, 8)]


def test_jsonl_line_that_is_not_json_is_named(files, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 is not JSON"):
        load_data(_config(files, "jsonl", path=str(path)), seed=0)


def test_excluded_labels_are_dropped_before_any_check(files, tmp_path):
    rows = [dict(r) for r in ROWS] + [{"text": "", "category": "plot", "movie_name": "movie 1"}]
    path = write_reviews(tmp_path / "with-plot.csv", rows)
    with pytest.raises(DataError, match="is empty"):
        load_data(_config(files, "csv", path=str(path)), seed=0)
    bundle = load_data(_config(files, "csv", path=str(path), exclude_labels=["plot"]), seed=0)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == len(ROWS)
    assert "(1 rows labelled ['plot'] left out)" in bundle.description
