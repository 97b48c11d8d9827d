"""Graph edits of an exported decoder LM: its weight MatMuls, and replacing one with MatMulNBits.

An exported causal LM (onnxruntime-genai's builder, or compress.runtime.lm_export) names its
weight MatMuls after the module: `/model/layers.3/attn/qkv_proj/MatMul` (q, k and v packed along
N), `/model/layers.3/mlp/down_proj/MatMul`, `/lm_head/MatMul`. `lm_matmuls` lists them as sites
(`layers.3.qkv_proj`) with the Hugging Face parameters they cover; `replace_matmul` swaps one for
MatMulNBits plus, when the encoding has a per-block constant term, `+ blocksum(x) @ C`. The
block sum is one MatMul of `x` by a constant 0/1 matrix `[K, K/32]`, computed once per distinct
input (q/k/v and gate/up read the same tensor) and reused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from compress.quantization.nbits import NBits

_PROJ = re.compile(r"layers\.(\d+)/(?:self_attn|attn|mlp)/(\w+?)(?:/MatMul|$)")
_HF = {
    "qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "q_proj": ("self_attn.q_proj",),
    "k_proj": ("self_attn.k_proj",),
    "v_proj": ("self_attn.v_proj",),
    "o_proj": ("self_attn.o_proj",),
    "gate_proj": ("mlp.gate_proj",),
    "gate_up_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "up_proj": ("mlp.up_proj",),
    "down_proj": ("mlp.down_proj",),
}


@dataclass
class MatMulSite:
    """One weight MatMul of the exported LM.

    Attributes:
        name: site name, `layers.3.qkv_proj` or `lm_head`.
        node: the MatMul node's name.
        weight: its weight initializer (fp32 `[K, N]`).
        k: input width.
        n: output width.
        hf_names: Hugging Face parameters it computes, in N order.
    """

    name: str
    node: str
    weight: str
    k: int
    n: int
    hf_names: tuple[str, ...] = field(default_factory=tuple)


def _site_name(node_name: str) -> tuple[str, tuple[str, ...]] | None:
    if "lm_head" in node_name:
        return "lm_head", ("lm_head.weight",)
    match = _PROJ.search(node_name)
    if not match or match.group(2) not in _HF:
        return None
    layer, proj = match.groups()
    hf = tuple(f"model.layers.{layer}.{p}.weight" for p in _HF[proj])
    return f"layers.{layer}.{proj}", hf


def model_matmuls(model) -> list[MatMulSite]:
    """The weight MatMuls of a loaded `onnx.ModelProto` (see `lm_matmuls`)."""
    inits = {t.name: t for t in model.graph.initializer}
    sites = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        dims = list(inits[node.input[1]].dims)
        named = _site_name(node.name)
        if named is None or len(dims) != 2:
            continue
        sites.append(MatMulSite(named[0], node.name, node.input[1], dims[0], dims[1], named[1]))
    return sites


def lm_matmuls(onnx_path) -> list[MatMulSite]:
    """The weight MatMuls of an exported causal LM, in graph order.

    Args:
        onnx_path: model.onnx of an exported folder (external data is not read).

    Example:
        >>> [s.name for s in lm_matmuls(folder / "model.onnx")][:2]  # doctest: +SKIP
        ['layers.0.qkv_proj', 'layers.0.o_proj']
    """
    import onnx

    return model_matmuls(onnx.load(str(onnx_path), load_external_data=False))


class GraphEditor:
    """Replaces MatMuls of one loaded model in place, sharing block sums between sites."""

    def __init__(self, model):
        self.model = model
        self.graph = model.graph
        self.block_sums: dict[tuple[str, int], str] = {}
        self.new_inits: list = []
        self.removed: set[str] = set()
        self.constants: set[str] = set()
        self.replacements: dict[str, list] = {}
        self.pending: list = []

    def constant(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.new_inits.append(numpy_helper.from_array(array, name))
        self.constants.add(name)
        return name

    def block_sum(self, x: str, k: int, block: int) -> str:
        """The output `[..., K / block]` summing `x` over each block, one node per input."""
        from onnx import helper

        key = (x, block)
        if key not in self.block_sums:
            base = f"{x}/BlockSum{block}"
            ones = f"/model/constants/BlockSum/{k}x{k // block}"
            if ones not in self.constants:  # one 0/1 matrix per width, shared
                matrix = np.zeros((k, k // block), np.float32)
                matrix[np.arange(k), np.arange(k) // block] = 1.0
                self.constant(ones, matrix)
            node = helper.make_node("MatMul", [x, ones], [f"{base}/output_0"], name=base)
            self.pending.append(node)
            self.block_sums[key] = f"{base}/output_0"
        return self.block_sums[key]

    def augmented(self, x: str, k: int, block: int, aux_blocks: int) -> str:
        """`[x, blocksum(x) zero-padded to aux_blocks * block]` along the last axis, once per
        input: a MatMul by a 0/1 matrix (its padding columns zero) and a Concat."""
        from onnx import helper

        key = (x, -aux_blocks)
        if key not in self.block_sums:
            width = aux_blocks * block
            ones = f"/model/constants/BlockSum/{k}x{width}"
            if ones not in self.constants:
                matrix = np.zeros((k, width), np.float32)
                matrix[np.arange(k), np.arange(k) // block] = 1.0
                self.constant(ones, matrix)
            base = f"{x}/Augment{width}"
            self.pending += [
                helper.make_node("MatMul", [x, ones], [f"{base}/sums"], name=f"{base}/BlockSum"),
                helper.make_node(
                    "Concat",
                    [x, f"{base}/sums"],
                    [f"{base}/output_0"],
                    name=f"{base}/Concat",
                    axis=-1,
                ),
            ]
            self.block_sums[key] = f"{base}/output_0"
        return self.block_sums[key]

    def replace_matmul(self, node, enc: NBits, *, accuracy_level: int) -> list:
        """Nodes computing `node`'s output with `enc` (MatMulNBits [+ the constant term])."""
        from onnx import helper

        self.pending: list = []
        x, out = node.input[0], node.output[0]
        base = node.name.removesuffix("/MatMul") + "/MatMulNBits"
        if enc.aux_blocks:
            width = enc.aux_blocks * enc.block_size
            x = self.augmented(x, enc.k - width, enc.block_size, enc.aux_blocks)
        inputs = [
            x,
            self.constant(f"{base}.B", enc.packed),
            self.constant(f"{base}.scales", enc.scales),
        ]
        if enc.zero_points is not None:
            inputs.append(self.constant(f"{base}.zero_points", enc.zero_points))
        main_out = out if enc.offset is None else f"{base}/output_0"
        self.pending.append(
            helper.make_node(
                "MatMulNBits",
                inputs,
                [main_out],
                name=base,
                domain="com.microsoft",
                K=enc.k,
                N=enc.n,
                bits=enc.bits,
                block_size=enc.block_size,
                accuracy_level=accuracy_level,
            )
        )
        if enc.offset is not None:
            sums = self.block_sum(x, enc.k, enc.block_size)
            corr = f"{base}/Offset"
            offset = self.constant(f"{corr}.C", enc.offset.astype(np.float32))
            self.pending.append(
                helper.make_node("MatMul", [sums, offset], [f"{corr}/output_0"], name=corr)
            )
            self.pending.append(
                helper.make_node(
                    "Add", [main_out, f"{corr}/output_0"], [out], name=f"{base}/AddOffset"
                )
            )
        self.removed.add(node.input[1])
        return self.pending

    def finish(self) -> None:
        """Splice the replacement nodes in place of the named MatMuls, drop unused weights."""
        nodes = []
        for node in self.graph.node:
            nodes.extend(self.replacements.get(node.name, [node]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        used = {i for n in self.graph.node for i in n.input}
        keep = [t for t in self.graph.initializer if t.name in used or t.name not in self.removed]
        keep = [t for t in keep if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep + self.new_inits)


def merge_gate_up(model, layers: set[int]) -> None:
    """Replace each named layer's gate_proj and up_proj MatMuls (same input) by one MatMul of
    the two weights side by side and a Split back into their outputs: one weight MatMul, one
    block sum and one constant term per layer instead of two (fewer nodes per decoded token).
    The merged site is `layers.N.gate_up_proj`."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    sites = {s.name: s for s in model_matmuls(model)}
    nodes = {n.name: n for n in model.graph.node}
    replace: dict[str, list] = {}
    for layer in sorted(layers):
        gate, up = sites.get(f"layers.{layer}.gate_proj"), sites.get(f"layers.{layer}.up_proj")
        if gate is None or up is None:
            continue
        g_node, u_node = nodes[gate.node], nodes[up.node]
        if g_node.input[0] != u_node.input[0] or gate.k != up.k:
            continue
        weight = np.concatenate(
            [numpy_helper.to_array(inits[gate.weight]), numpy_helper.to_array(inits[up.weight])],
            axis=1,
        )
        base = gate.node.replace("gate_proj", "gate_up_proj")
        name = f"{base}.weight"
        model.graph.initializer.append(numpy_helper.from_array(weight, name))
        sizes = f"{base}/split"
        model.graph.initializer.append(
            numpy_helper.from_array(np.array([gate.n, up.n], np.int64), sizes)
        )
        merged = f"{base}/output_0"
        replace[gate.node] = [
            helper.make_node("MatMul", [g_node.input[0], name], [merged], name=base),
            helper.make_node(
                "Split",
                [merged, sizes],
                [g_node.output[0], u_node.output[0]],
                name=f"{base}/Split",
                axis=-1,
            ),
        ]
        replace[up.node] = []
    if not replace:
        return
    kept = []
    for node in model.graph.node:
        kept.extend(replace.get(node.name, [node]))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {i for n in model.graph.node for i in n.input}
    unused = [t for t in model.graph.initializer if t.name not in used]
    for t in unused:
        model.graph.initializer.remove(t)
