"""Parameter and multiply-accumulate counts.

MACs are counted from the operators a forward pass runs (torch's
`FlopCounterMode`: matmuls, convolutions, attention), not from a table of module
types: a model built from `nn.Conv2d` subclasses with their own `forward` (a
TensorFlow port's "same" padding), a library's attention module or a plain
`torch.matmul` in a custom `forward` is counted like any other. One MAC is two of
torch's FLOPs. `compare_macs` checks the count against the exported ONNX graph's.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from compress.models.signature import InputSignature, as_signature

# Beyond this relative difference the torch and ONNX counts are reported as disagreeing.
MACS_TOLERANCE = 0.02


def count_params(model: nn.Module) -> int:
    """All parameters (dense count, zeros included)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Parameters that are not exactly zero (what unstructured pruning reduces)."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def _zeros(signature: InputSignature) -> tuple[torch.Tensor, ...]:
    """One sample of zeros (ones for integer inputs: a mask of zeros masks everything)."""
    sizes = signature.sizes(1)
    return tuple(
        torch.zeros(spec.concrete(sizes))
        if spec.dtype == "float32"
        else torch.ones(spec.concrete(sizes), dtype=torch.int64)
        for spec in signature.inputs
    )


def _custom_formulas() -> dict:
    """Operators torch's counter has no formula for on CPU: scaled-dot-product attention
    dispatches to `_scaled_dot_product_flash_attention_for_cpu` there (BERT's sdpa
    attention, nn.MultiheadAttention without weights), which would count as zero."""
    from torch.utils.flop_counter import sdpa_flop_count

    aten = torch.ops.aten
    formulas = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(aten, name, None)
        if op is not None:
            formulas[op] = lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v)
    return formulas


@contextlib.contextmanager
def _no_fused_attention():
    """nn.MultiheadAttention and nn.TransformerEncoderLayer take a fused "fast path" in
    eval mode whose one kernel the counter cannot see; count the unfused path (the
    same arithmetic, and what the ONNX export contains)."""
    backend = getattr(torch.backends, "mha", None)
    if backend is None:
        yield
        return
    previous = backend.get_fastpath_enabled()
    backend.set_fastpath_enabled(False)
    try:
        yield
    finally:
        backend.set_fastpath_enabled(previous)


@torch.no_grad()
def count_macs(model: nn.Module, signature: InputSignature | tuple[int, ...]) -> int:
    """Multiply-accumulates of one sample's forward pass, whatever the module types.

    Counts every matmul, linear, convolution (grouped and depthwise by their weight
    shape) and attention product torch runs; element-wise work (norms, activations,
    softmax) is not counted, as in the ONNX count. A model with a sequence axis is
    counted at the signature's default length.

    Example:
        >>> count_macs(nn.Linear(4, 2), (4,))
        8
    """
    from torch.utils.flop_counter import FlopCounterMode

    inputs = _zeros(as_signature(signature))  # made outside the mode: no dispatch cost
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_custom_formulas())
    try:
        with _no_fused_attention(), counter:
            model(*inputs)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops()) // 2


def compare_macs(torch_macs: int, onnx_macs: int, where: str = "") -> str | None:
    """None when the torch and ONNX graph counts agree within `MACS_TOLERANCE`, else
    the sentence the report shows instead of one of them silently.

    Example:
        >>> compare_macs(1000, 1010) is None
        True
        >>> compare_macs(1000, 2000)
        'MACs: torch counts 1,000, the ONNX graph 2,000 (100.0% apart, more than 2%)'
    """
    larger = max(torch_macs, onnx_macs)
    if larger == 0 or abs(torch_macs - onnx_macs) / larger <= MACS_TOLERANCE:
        return None
    gap = abs(torch_macs - onnx_macs) / max(min(torch_macs, onnx_macs), 1)
    return (
        f"{where}MACs: torch counts {torch_macs:,}, the ONNX graph {onnx_macs:,} "
        f"({gap:.1%} apart, more than {MACS_TOLERANCE:.0%})"
    )
