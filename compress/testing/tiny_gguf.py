"""A Hugging Face Llama folder written as a GGUF file, as llama.cpp's converter would.

Layer weights become Q4_1 (or `layer_format`), the token embedding Q8_0, norms F32, q/k rows
permuted like llama.cpp's converter does (transformers and `read_gguf_blocks` undo it).
`dequantized_folder` writes the fp32 folder a GGUF loader would give: the same model with every
weight replaced by its dequantized GGUF value, so tests can export it and compare.

Example:
    >>> folder = tiny_llama_folder(tmp_path / "hf")                      # doctest: +SKIP
    >>> path = write_tiny_gguf(folder, tmp_path / "tiny.gguf")           # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_GGUF_LAYER = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}  # fmt: skip


def _gguf_name(name: str) -> str:
    if name.startswith("model.layers."):
        _, _, layer, rest = name.split(".", 3)
        return f"blk.{layer}.{_GGUF_LAYER[rest.removesuffix('.weight')]}.weight"
    return {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }[name]


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter row order for attn_q / attn_k (rotary halves interleaved)."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(
    folder: Path, path: Path, *, layer_format: str = "Q4_1", embedding_format: str = "Q8_0"
) -> Path:
    """Write the Llama in HF `folder` (model.safetensors + config.json) to GGUF `path`."""
    import gguf
    from safetensors.numpy import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    weights = load_file(Path(folder) / "model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta", 10000.0))
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    for name, w in sorted(weights.items()):
        w = np.ascontiguousarray(w.astype(np.float32))
        if ".q_proj." in name:
            w = _permute(w, heads)
        elif ".k_proj." in name:
            w = _permute(w, kv_heads)
        if w.ndim == 1:
            writer.add_tensor(_gguf_name(name), w)
            continue
        kind = embedding_format if "embed_tokens" in name else layer_format
        qtype = gguf.GGMLQuantizationType[kind]
        writer.add_tensor(_gguf_name(name), gguf.quants.quantize(w, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def dequantized_folder(folder: Path, blocks: dict, out: Path) -> Path:
    """Copy HF `folder` to `out` with every weight in `blocks` replaced by its dequantized
    value (what transformers' GGUF loader would give)."""
    import shutil

    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for item in Path(folder).iterdir():
        if item.is_file() and item.name != "model.safetensors":
            shutil.copy2(item, out / item.name)
    weights = load_file(Path(folder) / "model.safetensors")
    for name in weights:
        if name in blocks:
            weights[name] = blocks[name].dequantize().reshape(weights[name].shape)
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    return out
