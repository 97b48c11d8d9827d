"""Parameter and multiply-accumulate counts, measured with forward hooks."""

from __future__ import annotations

import torch
from torch import nn

from compress.models.architectures import Attention
from compress.models.signature import InputSignature, as_signature


def count_params(model: nn.Module) -> int:
    """All parameters (dense count, zeros included)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what unstructured pruning reduces)."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kernel = 1
    for size in module.kernel_size:
        kernel *= size
    per_output = kernel * module.in_channels // module.groups
    return output[0].numel() * per_output


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    return output[0].numel() * module.in_features


def _attention_macs(module: nn.MultiheadAttention, output) -> int:
    tokens = output[0][0].numel() // module.embed_dim  # output is (attn_out, weights)
    embed = module.embed_dim
    projections = 4 * tokens * embed * embed  # q, k, v and out projections
    scores = 2 * tokens * tokens * embed  # q @ k^T and weights @ v
    return projections + scores


def _fused_attention_macs(module, output) -> int:
    # qkv and proj are Linear layers with their own hooks; add q @ k^T and weights @ v
    tokens = output[0].shape[0]
    return 2 * tokens * tokens * module.num_heads * module.head_dim


def _bert_attention_macs(module, output) -> int:
    # a BertSelfAttention-like module: query/key/value are hooked Linears; add
    # q @ k^T and weights @ v, from the heads it has now (pruning changes them)
    tokens = output[0].shape[-2]
    return 2 * tokens * tokens * module.num_attention_heads * module.attention_head_size


def _rule(module: nn.Module):
    """The MAC rule for `module`: by type, or by attributes for attention modules of
    libraries we do not import (transformers' BertSelfAttention and its kin)."""
    rule = _MAC_RULES.get(type(module))
    if rule is None and all(
        hasattr(module, name) for name in ("num_attention_heads", "attention_head_size", "query")
    ):
        return _bert_attention_macs
    return rule


_MAC_RULES = {
    nn.Conv1d: _conv_macs,
    nn.Conv2d: _conv_macs,
    nn.Linear: _linear_macs,
    nn.MultiheadAttention: _attention_macs,
    Attention: _fused_attention_macs,
}


def _zeros(signature: InputSignature) -> tuple[torch.Tensor, ...]:
    """One sample of zeros (ones for integer inputs: a mask of zeros masks everything)."""
    sizes = signature.sizes(1)
    return tuple(
        torch.zeros(spec.concrete(sizes))
        if spec.dtype == "float32"
        else torch.ones(spec.concrete(sizes), dtype=torch.int64)
        for spec in signature.inputs
    )


@torch.no_grad()
def count_macs(model: nn.Module, signature: InputSignature | tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample's forward pass (convs, linears, attention).

    A model with a sequence axis is counted at the signature's default length.

    Example:
        >>> count_macs(nn.Linear(4, 2), (4,))
        8
    """
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += _rule(module)(module, output)

    handles = [
        module.register_forward_hook(hook) for module in model.modules() if _rule(module)
    ]
    was_training = model.training
    model.eval()
    try:
        model(*_zeros(as_signature(signature)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return int(total)
