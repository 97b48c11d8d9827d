"""Weights as ONNX Runtime's MatMulNBits tensors: from GGUF blocks (exactly) or by rounding.

MatMulNBits (com.microsoft) computes `y = x @ W` with `W[k, n] = scale[n, b] * (q[n, k] - z[n, b])`
for block `b = k // block_size`; `q` is packed per column `n` (4 bits: element 2i in the low
nibble), `z` defaults to 8 (4 bits) or 128 (8 bits). Every encoder here returns an `NBits`
holding those tensors, plus for a GGUF Q4_1 block its constant term: `w = d q + m` equals
`d (q - 8) + c` with `c = m + 8 d`, so the block keeps its own 4-bit codes with the implicit zero
point 8 and `y = MatMulNBits(x) + blocksum(x) @ C` (C = c as `[K / 32, N]`), exact up to fp32
round-off. Re-quantizing the dequantized copy instead moves every weight (issue #29: +36%
perplexity on SmolLM2), because an integer zero point cannot follow the float offset `m`.

Example:
    >>> enc = from_blocks([blocks["model.layers.0.mlp.up_proj.weight"]])   # doctest: +SKIP
    >>> enc.bits, enc.offset.shape                                          # (4, (18, 1536))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.quantization.gguf_blocks import BLOCK, BlockWeights


@dataclass
class NBits:
    """One MatMul weight `[K, N]` as MatMulNBits inputs.

    Attributes:
        bits: 4 or 8.
        block_size: values per block along K.
        packed: uint8 `[N, K / block_size, block_size * bits / 8]` (input B).
        scales: fp32 `[N, K / block_size]`.
        zero_points: uint8 `[N, blocks * bits / 8]` (4 bits: two per byte, each column padded
            to a whole byte), or None (implicit 8 / 128).
        offset: fp32 `[K / block_size, N]` per-block constant added as `blocksum(x) @ offset`,
            or None (no constant term).
        k: rows of the float weight (K).
        n: columns (N).
        aux_blocks: blocks appended after the K rows ("fused" offsets): the MatMulNBits input
            is `[x, blocksum(x) padded to aux_blocks * block_size]`, K grows by as much.
    """

    bits: int
    block_size: int
    packed: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    offset: np.ndarray | None
    k: int
    n: int
    aux_blocks: int = 0

    def nbytes(self) -> int:
        """Bytes this weight stores (codes, scales, zero points, constant term)."""
        parts = [self.packed, self.scales, self.zero_points, self.offset]
        return int(sum(p.nbytes for p in parts if p is not None))

    def dequantize(self) -> np.ndarray:
        """The weight `[K, N]` this encoding computes with (fp32, including the offset)."""
        codes = unpack(self.packed, self.bits).reshape(self.n, -1, self.block_size)
        blocks = codes.shape[1]
        if self.zero_points is None:
            zero = np.full((self.n, blocks), 2 ** (self.bits - 1), np.float32)
        elif self.zero_points.dtype.kind == "f":  # HQQ: float zero points, not packed
            zero = self.zero_points.reshape(self.n, -1)[:, :blocks]
        else:
            zero = unpack(self.zero_points, self.bits).reshape(self.n, -1)[:, :blocks]
        scale = self.scales.reshape(self.n, blocks)
        w = (codes.astype(np.float32) - zero[..., None]) * scale[..., None]
        if self.offset is not None:
            w = w + self.offset.T[..., None]
        if self.aux_blocks:
            main = blocks - self.aux_blocks
            aux = w[:, main:].reshape(self.n, -1)[:, :main]  # weight of each block's sum
            w = w[:, :main] + aux[..., None]
        return w.reshape(self.n, -1)[:, : self.k].T


def pack(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes `[..., L]` packed along the last axis (4 bits: 2i low nibble, 2i+1 high)."""
    codes = codes.astype(np.uint8)
    if bits == 8:
        return codes
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros(codes.shape[:-1] + (1,), np.uint8)], -1)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of `pack` (4 bits: twice the last axis)."""
    if bits == 8:
        return packed
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def from_blocks(parts: list[BlockWeights], *, offsets: str = "exact") -> NBits:
    """The exact MatMulNBits encoding of GGUF weights `parts` (HF `[out, in]` each, same
    format and in-width), concatenated along out (N), e.g. q, k and v of a packed qkv MatMul.

    Q4_0 / Q4_1 keep their 4-bit codes (implicit zero point 8; Q4_1 adds the constant term);
    Q8_0 becomes 8 bits (`q + 128`, implicit zero point 128).

    `offsets` says how Q4_1's constant term `c` is kept:
    - "exact": fp32 `[K/32, N]`, added as `blocksum(x) @ C` (two nodes and an Add per site);
    - "fused": its whole number of steps as a uint4 zero point (`z = clip(round(8 - c/d))`),
      the remainder `r = c - d (8 - z)` (at most half a step) as 4-bit weights of extra blocks
      whose inputs are the block sums (`aux_blocks`): one MatMulNBits per site, `r` rounded to
      1/30 of its per-column range;
    - "round": the zero point alone (`r` dropped): each block moves by up to half a step.

    Raises:
        ValueError: formats differ, or one is not Q4_0 / Q4_1 / Q8_0.
    """
    formats = {p.format for p in parts}
    if len(formats) != 1 or not formats <= {"Q4_0", "Q4_1", "Q8_0"}:
        raise ValueError(f"cannot keep blocks of formats {sorted(formats)} as one MatMulNBits")
    fmt = formats.pop()
    values = np.concatenate([p.values for p in parts], axis=0)  # [N, K]
    scale = np.concatenate([p.scale for p in parts], axis=0).astype(np.float32)  # [N, K/32]
    n, k = values.shape
    if fmt == "Q8_0":
        codes = (values.astype(np.int16) + 128).astype(np.uint8)
        bits, offset = 8, None
    else:
        codes, bits = values, 4
        per_part = [p.offset() for p in parts]
        offset = np.concatenate(per_part, axis=0).T.copy() if fmt == "Q4_1" else None
    packed = pack(codes.reshape(n, k // BLOCK, BLOCK), bits)
    if offsets == "exact" or offset is None:
        return NBits(bits, BLOCK, packed, scale, None, offset, k, n)
    steps = offset.T / np.where(scale == 0, 1, scale)
    zero = np.clip(np.round(8 - steps), 0, 15).astype(np.uint8)
    if offsets == "round":
        return NBits(bits, BLOCK, packed, scale, pack(zero, 4), None, k, n)
    return _fuse_remainder(packed, scale, zero, offset.T - scale * (8 - zero.astype(np.float32)))


def _fuse_remainder(
    packed: np.ndarray, scale: np.ndarray, zero: np.ndarray, remainder: np.ndarray
) -> NBits:
    """Append the per-block remainders `[N, blocks]` as 4-bit RTN weights of extra blocks."""
    n, blocks = scale.shape
    aux_blocks = -(-blocks // BLOCK)
    aux = rtn(remainder.T.astype(np.float32), 4, BLOCK)  # weight [blocks, N]: blocks along K
    aux_zero = unpack(aux.zero_points, 4)[:, :aux_blocks]
    all_zero = np.concatenate([zero, aux_zero], axis=1)
    return NBits(
        4,
        BLOCK,
        np.concatenate([packed, aux.packed], axis=1),
        np.concatenate([scale, aux.scales], axis=1),
        pack(all_zero, 4),
        None,
        (blocks + aux_blocks) * BLOCK,
        n,
        aux_blocks,
    )


def rtn(weight: np.ndarray, bits: int, block_size: int = 32, *, symmetric: bool = False) -> NBits:
    """Round-to-nearest block quantization of a float weight `[K, N]`, as ONNX Runtime's
    default quantizer does (asymmetric: range widened to include 0, uint zero points).

    Example:
        >>> enc = rtn(np.random.randn(64, 8).astype("float32"), 4)
        >>> bool(np.abs(enc.dequantize() - 0).max() > 0)
        True
    """
    k, n = weight.shape
    blocks = -(-k // block_size)
    padded = np.zeros((blocks * block_size, n), np.float32)
    padded[:k] = weight
    w = padded.T.reshape(n, blocks, block_size)
    top = 2**bits - 1
    if symmetric:
        amax = np.abs(w).max(-1)
        scale = amax / (2 ** (bits - 1) - 0.5)
        zero = np.full(scale.shape, 2 ** (bits - 1), np.float32)
    else:
        lo, hi = np.minimum(w.min(-1), 0), np.maximum(w.max(-1), 0)
        scale = (hi - lo) / top
        zero = np.clip(np.round(-lo / np.where(scale == 0, 1, scale)), 0, top)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)
    codes = np.clip(np.round(w / scale[..., None]) + zero[..., None], 0, top)
    zero_points = None if symmetric else pack(zero.astype(np.uint8), bits)
    return NBits(bits, block_size, pack(codes, bits), scale, zero_points, None, k, n)
