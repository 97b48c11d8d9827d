"""The `text-corpus` source: plain text documents as token windows for a causal LM,
split by document, capped, seeded; every bad file a DataError naming it and its key."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from compress.data import load_data  # noqa: E402
from compress.data.text_corpus import windows  # noqa: E402
from compress.errors import DataError, RecipeError  # noqa: E402
from compress.recipe import validate_recipe  # noqa: E402
from compress.recipe.schema import DataConfig, TextCorpusConfig  # noqa: E402
from compress.testing import run_cli, tiny_recipe_dict  # noqa: E402
from compress.testing.tiny_llama import write_bpe_tokenizer, write_corpus  # noqa: E402

WINDOW = 32


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six documents of the tiny Llama's sentences (100-200 windows of 32 tokens each
    in all), a seventh as held-out text, and the byte-level BPE tokenizer."""
    root = tmp_path_factory.mktemp("corpus")
    vocab = write_bpe_tokenizer(root / "tokenizer")
    documents = write_corpus(root / "docs", documents=6, lines=20)
    held = write_corpus(root / "held", documents=1, lines=30, seed=7)[0]
    return {"root": root, "tokenizer": root / "tokenizer", "vocab": vocab,
            "documents": documents, "held": held}  # fmt: skip


def _config(corpus, **overrides) -> TextCorpusConfig:
    values = {
        "files": [str(corpus["root"] / "docs" / "*.txt")],
        "tokenizer": str(corpus["tokenizer"]),
        "window": WINDOW,
    }
    return TextCorpusConfig(**(values | overrides))


def _tokens(corpus, path) -> np.ndarray:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(corpus["tokenizer"] / "tokenizer.json"))
    text = path.read_text(encoding="utf-8")
    return np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)


def _expected_rows(corpus, paths) -> np.ndarray:
    return np.concatenate([windows(_tokens(corpus, p), WINDOW) for p in paths])


def test_windows_are_each_documents_own_tokens_in_order_without_labels(corpus):
    bundle = load_data(_config(corpus), seed=0)

    assert bundle.task == "causal-lm" and not bundle.labeled
    assert bundle.num_classes == corpus["vocab"] and bundle.input_shape == (WINDOW,)
    assert [s.name for s in bundle.signature.inputs] == ["input_ids", "attention_mask"]
    contract = bundle.input_contract()
    assert contract["output"]["shape"] == ["batch", "sequence", corpus["vocab"]]
    assert contract["preprocessing"]["add_special_tokens"] is False
    assert contract["preprocessing"]["window"] == WINDOW
    for name in ("train", "val", "test"):
        split = getattr(bundle, name)
        ids, mask = split.x
        assert ids.dtype == mask.dtype == torch.int64
        assert ids.shape == mask.shape and ids.shape[1] == WINDOW and len(ids) > 0
        assert bool((mask == 1).all()) and bool((split.y == -1).all()) and not split.labeled
        # the rows are exactly the split's documents cut into windows: none spans two
        expected = _expected_rows(corpus, bundle.text.documents[name])
        np.testing.assert_array_equal(ids.numpy(), expected)


def test_documents_split_whole_and_seeded(corpus):
    bundle = load_data(_config(corpus), seed=0)
    again = load_data(_config(corpus), seed=0)

    parts = bundle.text.documents
    assert [len(parts[n]) for n in ("train", "val", "test")] == [4, 1, 1]
    assert sorted(p for n in parts for p in parts[n]) == sorted(corpus["documents"])
    assert again.identity == bundle.identity and again.text.documents == parts
    others = [load_data(_config(corpus), seed=s).text.documents["test"] for s in range(1, 6)]
    assert any(test != parts["test"] for test in others)  # the seed draws the documents


def test_held_out_documents_are_the_test_split_and_capped_in_order(corpus):
    config = _config(corpus, test_files=[str(corpus["held"])], max_test_tokens=3 * WINDOW + 5)
    bundle = load_data(config, seed=0)

    assert bundle.text.documents["test"] == [corpus["held"]]
    assert len(bundle.text.documents["train"]) == 5 and len(bundle.text.documents["val"]) == 1
    # the cap keeps whole windows, the first ones, in order
    first = windows(_tokens(corpus, corpus["held"]), WINDOW)[:3]
    np.testing.assert_array_equal(bundle.test.x[0].numpy(), first)


def test_the_train_cap_is_a_seeded_sample_of_windows_in_order(corpus):
    full = load_data(_config(corpus), seed=0).train.x[0].numpy()
    capped = load_data(_config(corpus, max_train_tokens=10 * WINDOW), seed=0).train.x[0].numpy()
    again = load_data(_config(corpus, max_train_tokens=10 * WINDOW), seed=0).train.x[0].numpy()

    assert capped.shape == (10, WINDOW) and len(full) > 10
    np.testing.assert_array_equal(capped, again)
    position = -1
    for row in capped:  # a subsequence of the uncapped rows: windows kept in order
        position = next(i for i in range(position + 1, len(full)) if (full[i] == row).all())
    assert not np.array_equal(capped, full[:10])  # spread over the documents, not the first


def test_val_cap_and_val_fraction_count_documents(corpus):
    bundle = load_data(_config(corpus, val_fraction=0.34, max_val_tokens=2 * WINDOW), seed=0)

    assert len(bundle.text.documents["val"]) == 2
    assert len(bundle.val) == 2


def test_package_files_are_found_without_importing_the_package(corpus, tmp_path, monkeypatch):
    package = tmp_path / "site" / "fake_texts"
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never import me')\n")
    (package / "data" / "play.txt").write_text(corpus["held"].read_text())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    config = _config(corpus, test_package="fake_texts", test_package_files=["data/play.txt"])
    bundle = load_data(config, seed=0)

    assert bundle.text.documents["test"] == [package / "data" / "play.txt"]
    np.testing.assert_array_equal(
        bundle.test.x[0].numpy(), windows(_tokens(corpus, corpus["held"]), WINDOW)
    )
    missing = _config(corpus, test_package="fake_texts", test_package_files=["data/none.txt"])
    with pytest.raises(DataError, match=r"data\.test_package_files\[0\]: .*'data/none.txt'"):
        load_data(missing, seed=0)


def _bad(tmp_path, corpus, name: str, payload: bytes):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    for path in corpus["documents"][:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    bad = folder / name
    bad.write_bytes(payload)
    return bad


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", "empty file (0 bytes)"),
        (b"   \n\n ", "empty (whitespace only)"),
        (b"PK\x03\x04\x00\x00binary", "binary, not text (a NUL byte at offset 4)"),
        ("caf\xe9 au lait".encode("latin-1"), "not UTF-8 text (byte 0xe9 at offset 3"),
        (b"The king is dead.\n", "tokens, fewer than one window of 32 (data.window)"),
    ],
)
def test_a_bad_file_is_a_data_error_naming_it_and_its_key(corpus, tmp_path, payload, expected):
    bad = _bad(tmp_path, corpus, "zz.txt", payload)
    config = _config(corpus, files=[str(tmp_path / "docs" / "*.txt")])

    with pytest.raises(DataError) as info:
        load_data(config, seed=0)

    message = str(info.value)
    assert expected in message and str(bad) in message
    assert message.startswith("text-corpus data.files[0]: ")


def test_a_pattern_that_matches_nothing_names_its_key(corpus, tmp_path):
    config = _config(corpus, files=[str(corpus["documents"][0]), str(tmp_path / "no" / "*.txt")])

    with pytest.raises(DataError, match=r"data\.files\[1\]: '.*no/\*\.txt' matches no file"):
        load_data(config, seed=0)


def test_splitting_needs_enough_documents_and_never_tests_on_training_text(corpus):
    two = _config(corpus, files=[str(p) for p in corpus["documents"][:2]])
    with pytest.raises(DataError, match="2 training documents cannot be split by document"):
        load_data(two, seed=0)
    same = _config(corpus, test_files=[str(corpus["documents"][0])])
    with pytest.raises(DataError, match="named for training and for test"):
        load_data(same, seed=0)
    with pytest.raises(DataError, match="no tokenizer"):
        load_data(_config(corpus, tokenizer=None), seed=0)


def _recipe(**data) -> dict:
    return tiny_recipe_dict(
        data={"source": "text-corpus", "files": ["docs/*.txt"], **data},
        model={"weights": "w.pt"},
        stages=[{"type": "export"}],
    )


def test_the_recipe_validates_its_keys_by_path():
    recipe = validate_recipe(_recipe(window=64, max_test_tokens=128), "t.toml")
    assert isinstance(recipe.data, TextCorpusConfig) and recipe.data.window == 64
    again = validate_recipe(tomllib.loads(recipe.to_toml()), "recipe.resolved.toml")
    assert again.data == recipe.data  # the resolved recipe reads back

    cases = [
        ({"windw": 8}, "t.toml: data.windw: unknown key, got 8"),
        ({"label_column": "y"}, "t.toml: data: label_column does not apply to data.source"),
        ({"max_test_tokens": 8}, "t.toml: data: max_test_tokens = 8 holds no window of 512"),
        ({"package": "x"}, "t.toml: data: package and package_files come together"),
        ({"window": 1}, "t.toml: data.window: must be >= 2"),
    ]
    for keys, expected in cases:
        with pytest.raises(RecipeError) as info:
            validate_recipe(_recipe(**keys), "t.toml")
        assert str(info.value).startswith(expected), str(info.value)


def test_a_recipe_with_training_stages_is_refused_the_data_has_no_labels():
    raw = _recipe()
    raw["stages"] = [{"type": "train", "epochs": 1}]
    with pytest.raises(RecipeError, match=r"stages\[0\]\.type \(train\): 'train' trains on labels"):
        validate_recipe(raw, "t.toml")


def test_the_run_gives_the_corpus_the_models_tokenizer_only_when_it_names_none():
    assert TextCorpusConfig(files=["x"]).takes_model_tokenizer()
    assert not TextCorpusConfig(files=["x"], tokenizer="tok").takes_model_tokenizer()
    assert DataConfig(source="csv", path="x.csv").takes_model_tokenizer()
    assert not DataConfig().takes_model_tokenizer()


def test_cli_exits_2_naming_the_bad_file(corpus, tmp_path):
    bad = _bad(tmp_path, corpus, "zz.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    recipe = tmp_path / "bad.toml"
    recipe.write_text(
        'name = "bad"\ndescription = "a corpus with a binary file"\n'
        '[data]\nsource = "text-corpus"\nfiles = ["docs/*.txt"]\n'
        f'tokenizer = "{corpus["tokenizer"]}"\nwindow = 32\n'
        '[model]\narchitecture = "mlp"\nweights = "w.pt"\n[[stages]]\ntype = "export"\n'
    )
    run = run_cli("run", recipe, "--out", tmp_path / "run", cwd=tmp_path, timeout=120)

    assert run.returncode == 2, run.stderr
    assert "binary, not text (a NUL byte at offset 8)" in run.stderr
    assert "docs/zz.txt" in run.stderr and str(bad.name) in run.stderr


def test_without_a_tokenizer_the_run_uses_the_model_familys_folder(corpus, tmp_path):
    from compress.pipeline.setup import load_run_data
    from compress.testing.text import tiny_bert_folder

    # any family that names a folder (hf-encoder here; hf-causal-lm for decoders)
    folder = tiny_bert_folder(tmp_path / "bert")
    raw = _recipe(files=[str(corpus["root"] / "docs" / "*.txt")], window=WINDOW)
    raw["model"] = {"architecture": "hf-encoder", "path": str(folder), "weights": "w.pt"}
    recipe = validate_recipe(raw, "t.toml")

    bundle = load_run_data(recipe)

    assert bundle.text.tokenizer_file == folder / "tokenizer.json"
    assert bundle.text.ship == [folder / "tokenizer.json"]
