"""Tiny text fixtures: a random BERT folder, a tokenizer built on the spot, review files.

Nothing is downloaded: `tiny_bert_folder` writes a Hugging Face model folder
(config.json, model.safetensors, tokenizer.json) that `hf-encoder` loads like
MiniLM's, with a 2-layer, 32-wide, 4-head `BertConfig`; `write_reviews` writes a
CSV (optionally .bz2) or JSONL of learnable fresh/rotten snippets grouped by movie.
"""

from __future__ import annotations

import bz2
import csv
import io
import json
from pathlib import Path

import numpy as np

GOOD = ["great", "moving", "brilliant", "funny", "tender", "superb", "warm", "sharp"]
BAD = ["dull", "boring", "clumsy", "flat", "tedious", "awful", "bland", "messy"]
FILLER = ["the", "film", "plot", "cast", "story", "is", "a", "and", "very", "with", "its"]

TINY_BERT = {
    "model_type": "bert",
    "vocab_size": 64,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


def reviews(count: int = 240, seed: int = 0, movies: int = 24) -> list[dict[str, str]]:
    """Rows {text, category (fresh/rotten), movie_name}; the label follows the words."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        fresh = bool(i % 2)
        mood = GOOD if fresh else BAD
        words = list(rng.choice(FILLER, size=int(rng.integers(2, 9))))
        words += list(rng.choice(mood, size=int(rng.integers(1, 3))))
        rng.shuffle(words)
        rows.append(
            {
                "text": " ".join(words),
                "category": "fresh" if fresh else "rotten",
                "movie_name": f"movie {i % movies}",
            }
        )
    return rows


def write_tokenizer(path: Path, sentences: list[str]) -> Path:
    """A WordLevel tokenizer.json trained on `sentences`: lowercase, [CLS] ... [SEP],
    [PAD] = 0."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tokenizer = Tokenizer(WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(sentences, WordLevelTrainer(special_tokens=specials))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                        ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )  # fmt: skip
    tokenizer.save(str(path))
    return path


def tiny_bert_folder(folder: Path, seed: int = 0, **overrides) -> Path:
    """A Hugging Face model folder with a random tiny BertModel and its tokenizer."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    sentences = [row["text"] for row in reviews()] + [" ".join(GOOD + BAD + FILLER)]
    write_tokenizer(folder / "tokenizer.json", sentences)
    config = BertConfig(**(TINY_BERT | overrides))
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(folder))
    return folder


def write_reviews(path: Path, rows: list[dict[str, str]] | None = None) -> Path:
    """`rows` (default: `reviews()`) as .csv, .csv.bz2 or .jsonl, by `path`'s suffix."""
    rows = reviews() if rows is None else rows
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(bz2.compress(data) if path.suffix == ".bz2" else data)
    return path
