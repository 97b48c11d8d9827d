"""A head-prunable stand-in for the self-attention of `nn.TransformerEncoderLayer`.

`nn.MultiheadAttention` cannot lose heads: its forward derives `head_dim` from the
input width (`embed_dim // num_heads`) and unpacks the fused `in_proj_weight` in
thirds of `embed_dim`, so removing heads while keeping the residual width fails,
and Torch-Pruning's own MHA pruner shrinks `embed_dim` itself (the residual, and
every head's dimension). `HeadAttention` computes the same function with a fused
`qkv` Linear laid out head by head, so Torch-Pruning removes whole heads and the
forward reads `num_heads` / `head_dim` as plain attributes.

Its parameters are named `qkv.*` and `out_proj.*`; `compress.models.checkpoint`
records converted modules (`kind: head-attention`) and converts them again when
it rebuilds a saved model.
"""

from __future__ import annotations

import torch
from torch import nn

KIND = "head-attention"


class HeadAttention(nn.Module):
    """Self-attention with whole heads as units; a drop-in for an encoder layer's `self_attn`.

    Args:
        embed_dim: the residual width (input and output features).
        num_heads: attention heads.
        head_dim: features per head (`num_heads * head_dim` may be below `embed_dim`
            once heads are pruned).
        batch_first: inputs are (batch, sequence, features) rather than
            (sequence, batch, features), as in `nn.MultiheadAttention`.
        dropout: attention-weight dropout while training.

    Example:
        >>> attention = HeadAttention.from_multihead_attention(layer.self_attn)  # doctest: +SKIP
    """

    # Read by nn.TransformerEncoderLayer's fast-path checks: these values send it
    # down the plain path (`_sa_block`), which calls this module's forward.
    _qkv_same_embed_dim = False
    in_proj_bias = None

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        batch_first: bool = False,
        dropout: float = 0.0,
        bias: bool = True,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.batch_first = batch_first
        self.dropout = dropout
        self.qkv = nn.Linear(embed_dim, 3 * num_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention) -> HeadAttention:
        """The same function as `mha` (self-attention), weights copied."""
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("only plain self-attention (no kdim/vdim, bias_kv, zero_attn)")
        has_bias = mha.in_proj_bias is not None
        module = cls(
            mha.embed_dim, mha.num_heads, mha.head_dim, mha.batch_first, mha.dropout, has_bias
        )
        module.to(mha.in_proj_weight.device, mha.in_proj_weight.dtype)
        with torch.no_grad():
            module.qkv.weight.copy_(mha.in_proj_weight)
            module.out_proj.weight.copy_(mha.out_proj.weight)
            if has_bias:
                module.qkv.bias.copy_(mha.in_proj_bias)
                module.out_proj.bias.copy_(mha.out_proj.bias)
        module.train(mha.training)
        return module

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """Self-attention over `query` (`key` and `value` must be the same tensor).

        Returns (output, None): attention weights are not returned.
        """
        if key is not query or value is not query:
            raise ValueError("HeadAttention is self-attention: query, key and value must agree")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        bias = _additive_mask(attn_mask, key_padding_mask, is_causal, batch, tokens, scores)
        if bias is not None:
            scores = scores + bias
        weights = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            weights = nn.functional.dropout(weights, p=self.dropout)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)
        out = self.out_proj(out)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive_mask(attn_mask, key_padding_mask, is_causal, batch, tokens, scores):
    """The masks nn.MultiheadAttention accepts, as one additive (batch, 1|H, L, S) bias."""
    bias = None
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(tokens, tokens, dtype=torch.bool, device=scores.device).triu(1)
    for mask, shape in ((attn_mask, None), (key_padding_mask, (batch, 1, 1, tokens))):
        if mask is None:
            continue
        if mask.dim() == 3:
            raise ValueError("per-head 3-D attn_mask is not supported after head conversion")
        if mask.dtype == torch.bool:  # True: may not attend
            mask = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device).masked_fill(
                mask, float("-inf")
            )
        mask = mask.to(scores.dtype)
        mask = mask.reshape(shape) if shape is not None else mask
        bias = mask if bias is None else bias + mask
    return bias


def convert_self_attention_(model: nn.Module) -> list[str]:
    """Replace the `self_attn` of every `nn.TransformerEncoderLayer` by a `HeadAttention`.

    Each encoder holding a converted layer stops using nested tensors (its fast path
    reads `in_proj_weight`). Returns the names of the converted modules.
    """
    converted = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.TransformerEncoderLayer) and isinstance(
            module.self_attn, nn.MultiheadAttention
        ):
            try:
                module.self_attn = HeadAttention.from_multihead_attention(module.self_attn)
            except ValueError:
                continue  # left as it is; structured pruning skips it with a warning
            converted.append(f"{name}.self_attn" if name else "self_attn")
    if converted:
        for module in model.modules():
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False
    return converted


def convert_named_(model: nn.Module, name: str) -> HeadAttention:
    """Convert the one nn.MultiheadAttention called `name` (a saved model's record)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    mha = getattr(parent, child)
    if not isinstance(mha, nn.MultiheadAttention):
        raise ValueError(f"{name} is a {type(mha).__name__}, not nn.MultiheadAttention")
    converted = HeadAttention.from_multihead_attention(mha)
    setattr(parent, child, converted)
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = False
    return converted
