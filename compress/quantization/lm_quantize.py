"""Weight-only quantization of an exported causal-LM folder, per MatMul site.

Each weight MatMul (`compress.quantization.lm_graph.lm_matmuls`) gets one of:
- "fp32": left as it is;
- "int8" / "int4": block-wise MatMulNBits from the float weight (RTN, or HQQ through
  onnxruntime's quantizer);
- "source": the checkpoint's own GGUF blocks re-encoded exactly (`nbits.from_blocks`):
  nothing is quantized twice.
The tied token embedding (the builder gathers rows of the LM head's weight) follows the LM
head: when the head becomes MatMulNBits without a constant term, the embedding reads the same
quantized table through GatherBlockQuantized (one copy, exact); otherwise it keeps a float table.

Example:
    >>> summary = quantize_lm(fp32_dir, out_dir, {"lm_head": "source"},        # doctest: +SKIP
    ...                       blocks=read_gguf_blocks(gguf_path))
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from compress.errors import DataError
from compress.quantization.lm_graph import GraphEditor, MatMulSite, model_matmuls
from compress.quantization.nbits import NBits, from_blocks, rtn

CHOICES = ("fp32", "int8", "int4", "source", "source-fused", "source-zp")
_OFFSETS = {"source": "exact", "source-fused": "fused", "source-zp": "round"}


def _float_weight(model, site: MatMulSite) -> np.ndarray:
    from onnx import numpy_helper

    init = next(t for t in model.graph.initializer if t.name == site.weight)
    return numpy_helper.to_array(init).astype(np.float32)


def _source_parts(site: MatMulSite, blocks: dict) -> list:
    names = list(site.hf_names)
    if names == ["lm_head.weight"] and "lm_head.weight" not in blocks:
        names = ["model.embed_tokens.weight"]  # tied: the head is the embedding
    missing = [n for n in names if n not in blocks]
    if missing:
        raise DataError(f"site {site.name}: the GGUF blocks hold no {missing}")
    return [blocks[n] for n in names]


def encode_site(
    model, site: MatMulSite, choice: str, *, block_size: int, algorithm: str, blocks: dict | None
) -> NBits:
    """The MatMulNBits encoding of `site` for `choice` ("int8", "int4" or "source")."""
    if choice.startswith("source"):
        if blocks is None:
            raise DataError(f"site {site.name}: {choice!r} needs the GGUF blocks (blocks=...)")
        enc = from_blocks(_source_parts(site, blocks), offsets=_OFFSETS[choice])
        if (enc.k - enc.aux_blocks * enc.block_size, enc.n) != (site.k, site.n):
            raise DataError(
                f"site {site.name}: GGUF blocks are {enc.k}x{enc.n}, "
                f"the graph's weight {site.k}x{site.n}"
            )
        return enc
    bits = {"int8": 8, "int4": 4}[choice]
    weight = _float_weight(model, site)
    if algorithm == "hqq":
        from compress.quantization.lm_hqq import hqq

        return hqq(weight, bits, block_size)
    return rtn(weight, bits, block_size)


def _share_embedding(model, editor: GraphEditor, head: MatMulSite, enc: NBits | None) -> str:
    """Point the tied embedding Gather at the LM head's table; returns what was done."""
    from onnx import helper

    graph = model.graph
    transpose = next(
        (n for n in graph.node if n.op_type == "Transpose" and n.input[0] == head.weight), None
    )
    gather = transpose and next(
        (n for n in graph.node if n.op_type == "Gather" and n.input[0] == transpose.output[0]), None
    )
    if gather is None:
        return "embedding not tied to the LM head in the graph: left as it was"
    if enc is not None and enc.offset is None:
        base = gather.name.removesuffix("/Gather")
        table = editor.constant(f"{base}/Shape", np.array([enc.n, -1], np.int64))
        b = f"{head.node.removesuffix('/MatMul')}/MatMulNBits.B"
        inputs = [
            f"{base}/Reshape/output_0",
            gather.input[1],
            f"{head.node.removesuffix('/MatMul')}/MatMulNBits.scales",
        ]
        if enc.zero_points is not None:
            inputs.append(f"{head.node.removesuffix('/MatMul')}/MatMulNBits.zero_points")
        nodes = [
            helper.make_node("Reshape", [b, table], [inputs[0]], name=f"{base}/Reshape"),
            helper.make_node(
                "GatherBlockQuantized",
                inputs,
                list(gather.output),
                name=f"{base}/GatherBlockQuantized",
                domain="com.microsoft",
                bits=enc.bits,
                block_size=enc.block_size,
                gather_axis=0,
                quantize_axis=1,
            ),
        ]
        said = f"shares the LM head's {enc.bits}-bit table (GatherBlockQuantized)"
    elif enc is None:
        return "tied to the fp32 LM head (Transpose + Gather)"
    else:
        table = editor.constant(f"{gather.name}.table", enc.dequantize().T.copy())
        nodes = [
            helper.make_node(
                "Gather", [table, gather.input[1]], list(gather.output), name=gather.name
            )
        ]
        said = "fp32 table (the head's encoding has a constant term GatherBlockQuantized lacks)"
    editor.replacements[transpose.name] = []
    editor.replacements[gather.name] = nodes
    return said


def _merged_plan(model, plan: dict[str, str]) -> dict[str, str]:
    """Merge gate/up of the layers where both get the same quantized choice; the plan with
    their merged site instead."""
    from compress.quantization.lm_graph import merge_gate_up

    layers = set()
    for name, choice in plan.items():
        if name.endswith(".gate_proj") and choice != "fp32":
            layer = name.split(".")[1]
            if plan.get(f"layers.{layer}.up_proj") == choice:
                layers.add(int(layer))
    merge_gate_up(model, layers)
    merged = dict(plan)
    for layer in layers:
        merged[f"layers.{layer}.gate_up_proj"] = merged.pop(f"layers.{layer}.gate_proj")
        del merged[f"layers.{layer}.up_proj"]
    return merged


def quantize_lm(
    src_folder: Path,
    dst_folder: Path,
    plan: dict[str, str],
    *,
    block_size: int = 32,
    algorithm: str = "rtn",
    accuracy_level: int = 4,
    blocks: dict | None = None,
    merge: bool = True,
) -> dict:
    """Write `dst_folder`: `src_folder`'s causal LM with each MatMul site quantized per `plan`.

    Args:
        src_folder: exported folder (model.onnx [+ .data], genai_config.json, tokenizer files).
        dst_folder: written: model.onnx (one file, no external data) and the other files copied.
        plan: site name (`layers.3.qkv_proj`, `lm_head`) -> "fp32" | "int8" | "int4" | "source";
            sites not named stay fp32.
        block_size: block of the int8 / int4 encodings ("source" keeps the GGUF's 32).
        algorithm: "rtn" or "hqq" for int8 / int4.
        accuracy_level: MatMulNBits accuracy_level (0 fp32, 1 fp32, 2 fp16, 4 int8 compute).
        blocks: `read_gguf_blocks(...)`, needed by "source".
        merge: a layer whose gate_proj and up_proj get the same choice runs them as one
            MatMulNBits (`lm_graph.merge_gate_up`: fewer nodes per token).

    Returns:
        {"sites": {site: choice}, "embedding": what the tied embedding does, "bytes": int,
         "accuracy_level": int, "algorithm": str}.

    Raises:
        DataError: unknown site or choice, or "source" without matching blocks.
    """
    import onnx

    src_folder, dst_folder = Path(src_folder), Path(dst_folder)
    model = onnx.load(str(src_folder / "model.onnx"))
    original = [s.name for s in model_matmuls(model)]
    unknown = sorted(set(plan) - set(original))
    if unknown:
        raise DataError(f"{src_folder}: plan names sites not in the graph: {unknown[:5]}")
    bad = {k: v for k, v in plan.items() if v not in CHOICES}
    if bad:
        raise DataError(f"plan: choices must be one of {CHOICES}, got {bad}")
    summary_sites = {n: plan.get(n, "fp32") for n in original}
    if merge:
        plan = _merged_plan(model, plan)
    sites = {s.name: s for s in model_matmuls(model)}
    editor = GraphEditor(model)
    nodes = {n.name: n for n in model.graph.node}
    encodings: dict[str, NBits] = {}
    for name, site in sites.items():
        choice = plan.get(name, "fp32")
        if choice == "fp32":
            continue
        enc = encode_site(
            model, site, choice, block_size=block_size, algorithm=algorithm, blocks=blocks
        )
        encodings[name] = enc
        editor.replacements[site.node] = editor.replace_matmul(
            nodes[site.node], enc, accuracy_level=accuracy_level
        )
    embedding = "no LM head site"
    if "lm_head" in sites:
        embedding = _share_embedding(model, editor, sites["lm_head"], encodings.get("lm_head"))
    editor.finish()
    dst_folder.mkdir(parents=True, exist_ok=True)
    for path in src_folder.iterdir():
        if path.is_file() and not path.name.startswith("model.onnx"):
            shutil.copy2(path, dst_folder / path.name)
    onnx.save(model, str(dst_folder / "model.onnx"))
    _point_config(dst_folder)
    return {
        "sites": summary_sites,
        "embedding": embedding,
        "bytes": (dst_folder / "model.onnx").stat().st_size,
        "accuracy_level": accuracy_level,
        "algorithm": algorithm,
    }


def _point_config(folder: Path) -> None:
    config_path = folder / "genai_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["model"]["decoder"]["filename"] = "model.onnx"
        config_path.write_text(json.dumps(config, indent=4))


def blocks_mismatch(onnx_path: Path, blocks: dict) -> str | None:
    """None when every weight site of the export equals its GGUF blocks dequantized (so
    "source" re-encodes this very model); else the first site that differs, and how."""
    import onnx

    model = onnx.load(str(onnx_path))
    for site in model_matmuls(model):
        try:
            parts = _source_parts(site, blocks)
        except DataError as error:
            return str(error)
        expected = np.concatenate([p.dequantize() for p in parts], axis=0).T
        weight = _float_weight(model, site)
        if expected.shape != weight.shape:
            return f"site {site.name}: {weight.shape} in the graph, {expected.shape} in the file"
        if not np.array_equal(expected, weight):
            return f"site {site.name}: values differ (max {np.abs(expected - weight).max():.3g})"
    return None
