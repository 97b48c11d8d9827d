"""`source = "text-corpus"`: plain text documents as token windows for a causal LM.

Each file is one document: read as UTF-8 (a byte-order mark dropped, line ends made
`\\n` as Python's text mode does), tokenized whole with the model's `tokenizer.json`
(the `tokenizers` library, `add_special_tokens=False`: the windows hold the text's own
tokens, no BOS), and cut from its start into non-overlapping windows of `window`
tokens; the last partial window is dropped. Splits are by document, so no window spans
two documents or two splits: the test split is the recipe's held-out documents
(`test_files` / `test_package_files`) or a seeded `test_fraction` of the documents, and
validation a seeded `val_fraction` of the training documents (at least one each).

Each split's `x` is `(input_ids, attention_mask)`, int64 `[n, window]`, the mask all
ones; there are no labels (`y` is -1 everywhere and `labeled` False, as for unlabeled
images) and the bundle's `task` is "causal-lm", its `num_classes` the vocabulary size.
Caps: `max_val_tokens` / `max_test_tokens` keep the first windows in order (16,384
tokens of Hamlet = its first 32 windows of 512); `max_train_tokens` a seeded sample of
windows over every training document, in document order.

An empty file, a binary or non-UTF-8 one, one shorter than a window, a pattern that
matches nothing, a missing package file: DataError naming the file and the key.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.data.bundle import DataBundle, Split, content_identity
from compress.data.sources import register_data_source
from compress.data.splits import split_indices
from compress.errors import DataError
from compress.models.gguf_folder import package_file
from compress.models.signature import InputSignature
from compress.recipe.schema.text_corpus import TEXT_CORPUS, TextCorpusConfig

# copied into final/ beside the model when present in the tokenizer's folder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Document:
    """One file's text and where the recipe named it (`data.files[0]`, ...)."""

    path: Path
    key: str
    text: str


@dataclass
class CorpusInfo:
    """How the documents were tokenized: `DataBundle.text` of a corpus."""

    tokenizer_file: Path
    window: int
    vocab_size: int
    ship: list[Path] = field(default_factory=list)  # copied into final/ beside the model
    # split name -> the documents it was cut from, in row order
    documents: dict[str, list[Path]] = field(default_factory=dict)

    def contract(self) -> dict[str, Any]:
        return {
            "kind": "causal-lm",
            "tokenizer": self.tokenizer_file.name,
            "library": "tokenizers (Tokenizer.from_file); transformers' fast tokenizers "
            "read the same file",
            "add_special_tokens": False,
            "window": self.window,
            "attention_mask": "1 for each token",
        }


@dataclass
class Corpus:
    """What the loader returns: the documents read and checked, not yet tokenized
    (the tokenizer and the seed come with `to_bundle`)."""

    train: list[Document]
    test: list[Document]  # the recipe's held-out documents; [] -> a share is carved

    def to_bundle(self, config: TextCorpusConfig, seed: int) -> DataBundle:
        return build_corpus_bundle(self, config, seed)


def read_document(path: Path, key: str) -> Document:
    """The text of `path`; DataError when it is empty, binary or not UTF-8.

    Example:
        >>> read_document(Path("data/janeausten/emma.txt"), "data.files[0]")  # doctest: +SKIP
    """
    where = f"text-corpus {key}: {path}"
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: unreadable ({exc.strerror or exc})") from None
    if not payload:
        raise DataError(f"{where}: empty file (0 bytes)")
    if b"\x00" in payload:
        offset = payload.index(b"\x00")
        raise DataError(f"{where}: binary, not text (a NUL byte at offset {offset})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{where}: not UTF-8 text (byte 0x{payload[exc.start]:02x} at offset "
            f"{exc.start}: {exc.reason})"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DataError(f"{where}: empty (whitespace only)")
    return Document(path, key, text)


def _matches(pattern: str, key: str) -> list[Path]:
    found = sorted(glob.glob(str(Path(pattern).expanduser()), recursive=True))
    files = [Path(p) for p in found if Path(p).is_file()]
    if not files:
        what = "no file" if not found else f"no file, only folders ({found[0]}...)"
        raise DataError(
            f"text-corpus {key}: {pattern!r} matches {what} (relative to the working "
            f"directory {Path.cwd()})"
        )
    return files


def find_documents(config: TextCorpusConfig, prefix: str = "") -> list[tuple[Path, str]]:
    """(path, key) of every document the `files` / `package_files` keys (or their `test_`
    twins) name: each pattern's matches in sorted order, then the package files."""
    out: list[tuple[Path, str]] = []
    for index, pattern in enumerate(getattr(config, f"{prefix}files")):
        key = f"data.{prefix}files[{index}]"
        out.extend((path, key) for path in _matches(pattern, key))
    package = getattr(config, f"{prefix}package")
    for index, name in enumerate(getattr(config, f"{prefix}package_files")):
        key = f"data.{prefix}package_files[{index}]"
        try:
            out.append((package_file(package, name), key))
        except DataError as exc:
            raise DataError(f"text-corpus {key}: {exc}") from None
    seen: set[Path] = set()
    unique = []
    for path, key in out:  # a file two patterns match is one document
        if path.resolve() not in seen:
            seen.add(path.resolve())
            unique.append((path, key))
    return unique


@register_data_source(TEXT_CORPUS, config_class=TextCorpusConfig)
def load_corpus(config: TextCorpusConfig) -> Corpus:
    """Find and read the documents of `config` (see the module docstring).

    Raises:
        DataError: a pattern that matches nothing, a missing package file, a file that
            is empty, binary or not UTF-8, or one named for both training and test.

    Example:
        >>> config = TextCorpusConfig(files=["data/janeausten/*.txt"])  # doctest: +SKIP
        >>> len(load_corpus(config).train)                              # doctest: +SKIP
        6
    """
    train = find_documents(config)
    test = find_documents(config, "test_")
    held = {path.resolve(): key for path, key in test}
    for path, key in train:
        if path.resolve() in held:
            raise DataError(
                f"text-corpus {key} and {held[path.resolve()]}: {path} is named for training "
                "and for test (a test score on trained text says nothing)"
            )
    return Corpus(
        [read_document(path, key) for path, key in train],
        [read_document(path, key) for path, key in test],
    )


def corpus_tokenizer(config: TextCorpusConfig) -> Path:
    """The tokenizer.json `data.tokenizer` names (a file or its folder)."""
    if not config.tokenizer:
        raise DataError(
            "text-corpus: no tokenizer: set data.tokenizer (a tokenizer.json or its folder), "
            "or use a model whose family names a folder (hf-causal-lm)"
        )
    path = Path(config.tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"text-corpus data.tokenizer: {path} not found")
    return path


def tokenize(documents: list[Document], path: Path) -> tuple[list[np.ndarray], int]:
    """(token ids of each whole document, vocabulary size), no special tokens added."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise DataError(
            f"text-corpus data.tokenizer: {path} is not a tokenizer.json ({exc})"
        ) from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoded = tokenizer.encode_batch([d.text for d in documents], add_special_tokens=False)
    ids = [np.asarray(e.ids, dtype=np.int64) for e in encoded]
    return ids, int(tokenizer.get_vocab_size())


def windows(ids: np.ndarray, window: int) -> np.ndarray:
    """Non-overlapping `window`-token rows from the start of `ids`; the rest dropped.

    Example:
        >>> windows(np.arange(7), 3).tolist()
        [[0, 1, 2], [3, 4, 5]]
    """
    count = len(ids) // window
    return ids[: count * window].reshape(count, window)


def _document_splits(corpus: Corpus, config: TextCorpusConfig, seed: int):
    """(train, val, test) lists of documents: whole documents, seeded, at least one each
    (the same seeded draws as every other source's splits, `split_indices`)."""
    documents = corpus.train
    needed = 2 if corpus.test else 3
    if len(documents) < needed:
        what = "training and validation" if corpus.test else "training, validation and test"
        raise DataError(
            f"text-corpus: {len(documents)} training document{'s' * (len(documents) != 1)} "
            f"cannot be split by document into {what} (at least {needed}): name more files"
            + ("" if corpus.test else ", or held-out ones in test_files / test_package_files")
        )
    train, val, test = split_indices(
        np.zeros(len(documents), dtype=np.int64), config, seed, carve_test=not corpus.test
    )
    train_docs, val_docs = [documents[i] for i in train], [documents[i] for i in val]
    return train_docs, val_docs, corpus.test if test is None else [documents[i] for i in test]


def _rows(documents: list[Document], ids: dict[int, np.ndarray], window: int) -> np.ndarray:
    """Every document's windows, documents in order; DataError for a document shorter
    than one window (it would add nothing, silently)."""
    parts = []
    for document in documents:
        tokens = ids[id(document)]
        if len(tokens) < window:
            raise DataError(
                f"text-corpus {document.key}: {document.path}: {len(tokens)} tokens, fewer "
                f"than one window of {window} (data.window)"
            )
        parts.append(windows(tokens, window))
    return np.concatenate(parts) if parts else np.zeros((0, window), dtype=np.int64)


def _cap(rows: np.ndarray, tokens: int | None, window: int, seed: int | None) -> np.ndarray:
    """At most `tokens` tokens of `rows`: the first windows (seed None) or a seeded
    sample kept in order."""
    if tokens is None or len(rows) * window <= tokens:
        return rows
    count = tokens // window
    if seed is None:
        return rows[:count]
    chosen = np.random.default_rng(seed).choice(len(rows), size=count, replace=False)
    return rows[np.sort(chosen)]


def _split(rows: np.ndarray) -> Split:
    ids = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
    labels = torch.full((len(rows),), -1, dtype=torch.int64)
    return Split((ids, torch.ones_like(ids)), labels, labeled=False)


def _named(documents: list[Document]) -> str:
    names = [d.path.name for d in documents]
    return (
        ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} and {len(names) - 3} more"
    )


def build_corpus_bundle(corpus: Corpus, config: TextCorpusConfig, seed: int) -> DataBundle:
    """Split the documents, tokenize them and cut them into windows (module docstring).

    Raises:
        DataError: too few documents to split, a document shorter than one window, no
            tokenizer or an unreadable one.
    """
    window = config.window
    train_docs, val_docs, test_docs = _document_splits(corpus, config, seed)
    path = corpus_tokenizer(config)
    everything = [*train_docs, *val_docs, *test_docs]
    ids, vocab = tokenize(everything, path)
    by_document = {id(d): tokens for d, tokens in zip(everything, ids)}
    train = _cap(_rows(train_docs, by_document, window), config.max_train_tokens, window, seed + 2)
    val = _cap(_rows(val_docs, by_document, window), config.max_val_tokens, window, None)
    test = _cap(_rows(test_docs, by_document, window), config.max_test_tokens, window, None)
    documents = {
        name: [d.path for d in docs]
        for name, docs in (("train", train_docs), ("val", val_docs), ("test", test_docs))
    }
    ship = [path.parent / name for name in TOKENIZER_FILES if (path.parent / name).is_file()]
    held = "held-out documents" if corpus.test else "by document"
    description = (
        f"text corpus, windows of {window} tokens: train {len(train)} from {_named(train_docs)}; "
        f"val {len(val)} from {_named(val_docs)}; test {len(test)} from {_named(test_docs)} "
        f"({held}); tokenizer {path}"
    )
    return DataBundle(
        train=_split(train),
        val=_split(val),
        test=_split(test),
        num_classes=vocab,
        input_shape=(window,),
        scale=1.0,
        mean=[],
        std=[],
        description=description,
        identity=content_identity(train, val, test, np.array(window)),
        inputs=InputSignature.text(vocab),
        text=CorpusInfo(path, window, vocab, ship, documents),
        labeled=False,
        task="causal-lm",
    )
