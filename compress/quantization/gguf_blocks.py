"""The block-quantized weights of a GGUF file, kept as blocks (not dequantized).

A GGUF checkpoint stores each weight row in blocks of 32 values: Q4_0 (`w = d * (q - 8)`),
Q4_1 (`w = d * q + m`, q in 0..15) or Q8_0 (`w = d * q`, q int8), with `d` and `m` fp16.
transformers dequantizes them to fp32; quantizing that copy again moves every weight (an
integer zero point cannot follow Q4_1's float offset `m`), so the weight-only quantizer
re-encodes the blocks themselves (compress.quantization.nbits). This module reads them,
names them as the Hugging Face model does, and applies the same q/k row permutation as
transformers' GGUF loader, so `dequantize()` equals the fp32 weights it loads, bit for bit.

Example:
    >>> blocks = read_gguf_blocks(path)                                    # doctest: +SKIP
    >>> w = blocks["model.layers.0.mlp.down_proj.weight"].dequantize()     # [out, in] fp32
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.errors import DataError

BLOCK = 32

# GGUF block layouts: bytes per block of 32 and whether a minimum `m` follows `d`.
_LAYOUTS = {"Q4_0": (18, False), "Q4_1": (20, True), "Q8_0": (34, False)}

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


@dataclass
class BlockWeights:
    """One weight matrix `[rows, cols]` (HF layout: out_features x in_features) as blocks
    of 32 along `cols`.

    Attributes:
        format: "Q4_0", "Q4_1", "Q8_0" or "F32" (then `values` holds the fp32 weight).
        values: the integer codes, one per weight, `[rows, cols]` (uint8 0..15 for the
            4-bit formats, int8 for Q8_0), or the fp32 weight for "F32".
        scale: `d`, fp16 `[rows, cols // 32]` (None for "F32").
        minimum: `m` for Q4_1, fp16 `[rows, cols // 32]`; None otherwise.
    """

    format: str
    values: np.ndarray
    scale: np.ndarray | None = None
    minimum: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    def offset(self) -> np.ndarray | None:
        """The per-block constant `c` in `w = d * (q - 8) + c` for the 4-bit formats (fp32
        `[rows, cols // 32]`): `m + 8 d` for Q4_1, zero for Q4_0; None otherwise."""
        if self.format == "Q4_1":
            return self.minimum.astype(np.float32) + 8 * self.scale.astype(np.float32)
        if self.format == "Q4_0":
            return np.zeros(self.scale.shape, np.float32)
        return None

    def dequantize(self) -> np.ndarray:
        """The fp32 weight `[rows, cols]`, computed as gguf (and so transformers) does."""
        if self.format == "F32":
            return self.values.astype(np.float32)
        rows, cols = self.shape
        q = self.values.reshape(rows, cols // BLOCK, BLOCK).astype(np.float32)
        d = self.scale.astype(np.float32)[..., None]
        if self.format == "Q4_1":
            w = d * q + self.minimum.astype(np.float32)[..., None]
        elif self.format == "Q4_0":
            w = d * (q - 8)
        else:
            w = d * q
        return w.reshape(rows, cols)

    def permuted_rows(self, order: np.ndarray) -> BlockWeights:
        """The same weights with rows taken in `order` (blocks run along columns, so a row
        permutation keeps every block whole)."""
        scale = None if self.scale is None else self.scale[order]
        minimum = None if self.minimum is None else self.minimum[order]
        return BlockWeights(self.format, self.values[order], scale, minimum)


def decode_blocks(kind: str, raw: np.ndarray, rows: int, cols: int) -> BlockWeights:
    """Block codes of one GGUF tensor from its raw bytes `raw` (uint8 `[rows, bytes]`).

    Raises:
        DataError: an unsupported format or a column count not a multiple of 32.
    """
    if kind not in _LAYOUTS:
        raise DataError(f"GGUF tensor format {kind} is not supported (Q4_0, Q4_1, Q8_0, F32)")
    if cols % BLOCK:
        raise DataError(f"GGUF tensor has {cols} columns, not a multiple of {BLOCK}")
    size, has_min = _LAYOUTS[kind]
    blocks = np.ascontiguousarray(raw).reshape(rows, cols // BLOCK, size)
    scale = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    start = 4 if has_min else 2
    minimum = blocks[..., 2:4].copy().view(np.float16)[..., 0] if has_min else None
    body = blocks[..., start:]
    if kind == "Q8_0":
        values = body.copy().view(np.int8)
    else:
        # ggml packs element j in the low nibble and element j + 16 in the high nibble
        values = np.concatenate([body & 0x0F, body >> 4], axis=-1)
    return BlockWeights(kind, values.reshape(rows, cols), scale, minimum)


def hf_name(gguf_name: str) -> str | None:
    """The Hugging Face parameter name of a Llama GGUF tensor (None: unknown name)."""
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}.weight"
    stem = gguf_name.removesuffix(".weight")
    return f"{_TOP_NAMES[stem]}.weight" if stem in _TOP_NAMES else None


def unpermute_order(rows: int, heads: int) -> np.ndarray:
    """The row order transformers' GGUF loader applies to attn_q / attn_k (llama.cpp's
    converter interleaves the rotary halves of each head; this undoes it)."""
    dim = rows // heads // 2
    return np.arange(rows).reshape(heads, dim, 2).swapaxes(2, 1).reshape(rows)


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.parts[field.data[0]][0].item()


def read_gguf_blocks(gguf_path: Path) -> dict[str, BlockWeights]:
    """Every weight tensor of a Llama-architecture GGUF file as blocks, keyed by Hugging Face
    parameter name (`model.layers.0.self_attn.q_proj.weight`, `model.embed_tokens.weight`).

    Args:
        gguf_path: the .gguf file.

    Returns:
        name -> BlockWeights, rows as in the HF model (q/k rows un-permuted).

    Raises:
        DataError: not a readable GGUF file, not a Llama architecture, or a format other than
            Q4_0 / Q4_1 / Q8_0 / F32.

    Example:
        >>> read_gguf_blocks(path)["model.embed_tokens.weight"].format  # doctest: +SKIP
        'Q8_0'
    """
    import gguf

    try:
        reader = gguf.GGUFReader(str(gguf_path))
    except (OSError, ValueError) as error:
        raise DataError(f"{gguf_path}: not a readable GGUF file: {error}") from error
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    if arch != "llama":
        raise DataError(f"{gguf_path}: architecture {arch!r}; only 'llama' blocks are read")
    heads = _field(reader, "llama.attention.head_count")
    kv_heads = _field(reader, "llama.attention.head_count_kv") or heads
    out: dict[str, BlockWeights] = {}
    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if name is None:
            continue
        kind = tensor.tensor_type.name
        cols, rows = (
            (int(n) for n in tensor.shape[:2])
            if len(tensor.shape) > 1
            else (int(tensor.shape[0]), 1)
        )
        try:
            if kind == "F32":
                values = np.asarray(tensor.data, np.float32).reshape(rows, cols)
                weights = BlockWeights("F32", values)
            else:
                weights = decode_blocks(kind, np.asarray(tensor.data), rows, cols)
        except DataError as error:
            raise DataError(f"{gguf_path}: tensor {tensor.name}: {error}") from error
        if ".q_proj." in name:
            weights = weights.permuted_rows(unpermute_order(rows, heads))
        elif ".k_proj." in name:
            weights = weights.permuted_rows(unpermute_order(rows, kv_heads))
        out[name] = weights
    return out
