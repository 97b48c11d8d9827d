"""A tiny decoder language model folder, built on the spot: no download.

`tiny_llama_folder` writes what a Hugging Face causal-LM folder holds (config.json,
model.safetensors, generation_config.json, tokenizer.json + tokenizer_config.json):
a 2-layer `LlamaConfig` with grouped-query attention (4 query heads sharing 2 KV heads),
tied embeddings like SmolLM2's, random weights from a seed, and a byte-level BPE
tokenizer trained on `TINY_TEXT`, which onnxruntime-genai's tokenizer reads too.
`write_corpus` writes a few plain-text "documents" for a `text-corpus` data source.

Example:
    >>> folder = tiny_llama_folder(tmp_path / "llama")      # doctest: +SKIP
    >>> sorted(p.name for p in folder.iterdir())[:2]        # doctest: +SKIP
    ['config.json', 'generation_config.json']
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TINY_TEXT = [
    "The king is dead and the queen is sad.",
    "To be or not to be, that is the question.",
    "The ghost walks at night upon the castle wall.",
    "A prince must think before he acts, and then he acts too late.",
    "Words, words, words: the players come to court.",
    "Something is rotten in the state of the kingdom by the sea.",
]

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "max_position_embeddings": 256,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "attention_bias": False,
    "mlp_bias": False,
}


def write_bpe_tokenizer(folder: Path, texts: list[str] | None = None, vocab_size: int = 300) -> int:
    """A byte-level BPE tokenizer (GPT-2 style, as SmolLM2's) trained on `texts`,
    saved as tokenizer.json + tokenizer_config.json in `folder`; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(texts or TINY_TEXT * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    return len(fast)


def tiny_llama_folder(folder: Path, seed: int = 0, **overrides) -> Path:
    """Write a random tiny Llama (`TINY_LLAMA` + `overrides`) and its tokenizer to `folder`.

    Args:
        folder: created if missing; returned.
        seed: torch seed of the random weights (the same seed writes the same bytes).
        overrides: LlamaConfig fields to change, e.g. `num_hidden_layers=3`.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    vocab = write_bpe_tokenizer(folder)
    settings = {**TINY_LLAMA, "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0,
                "pad_token_id": 0, **overrides}  # fmt: skip
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**settings)).eval()
    # random init gives near-uniform next-token distributions; a wider spread of
    # weights makes top-1 agreement and perplexity changes visible in tests
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.08)
    model.save_pretrained(folder)
    GenerationConfig(bos_token_id=0, eos_token_id=0, pad_token_id=0).save_pretrained(folder)
    return folder


def write_corpus(folder: Path, documents: int = 6, lines: int = 40, seed: int = 0) -> list[Path]:
    """`documents` plain-text files of `lines` shuffled `TINY_TEXT` sentences each."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(documents):
        chosen = rng.choice(len(TINY_TEXT), size=lines)
        path = folder / f"doc{index}.txt"
        path.write_text("\n".join(TINY_TEXT[i] for i in chosen) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def read_config(folder: Path) -> dict:
    """config.json of a model folder as a dict."""
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))
