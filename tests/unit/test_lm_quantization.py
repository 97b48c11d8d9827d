"""Weight-only quantization of an exported causal LM, on the tiny Llama written to GGUF.

The tiny Llama's weights go through the `gguf` package (Q4_1 layers, Q8_0 embedding) and are
read back as blocks; the fp32 ONNX export is of the dequantized model, as a GGUF-loaded model
would be. "source" re-encodes the blocks (int4 codes + constant term, 8-bit head shared with
the embedding) and must give the fp32 logits to round-off; RTN int4 of the same weights must not.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("onnxruntime_genai")
pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """(blocks, fp32 export folder, HF folder) of the tiny Llama via GGUF."""
    from compress.quantization.gguf_blocks import read_gguf_blocks
    from compress.testing.tiny_gguf import dequantized_folder, write_tiny_gguf
    from compress.testing.tiny_llama import tiny_llama_folder

    root = tmp_path_factory.mktemp("lmq")
    hf = tiny_llama_folder(root / "hf")
    blocks = read_gguf_blocks(write_tiny_gguf(hf, root / "tiny.gguf"))
    deq = dequantized_folder(hf, blocks, root / "deq")
    out = root / "fp32"
    subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(deq),
                    "-o", str(out), "-p", "fp32", "-e", "cpu", "-c", str(root / "cache")],
                   check=True, capture_output=True)
    return blocks, out, deq


def _logits(folder, ids: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    config = json.loads((folder / "genai_config.json").read_text())
    head_size = config["model"]["decoder"]["head_size"]
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    for inp in session.get_inputs():
        if inp.name.startswith("past_key_values"):
            feeds[inp.name] = np.zeros((ids.shape[0], inp.shape[1], 0, head_size), np.float32)
    return session.run(["logits"], feeds)[0]


IDS = np.random.default_rng(0).integers(0, 250, size=(2, 19)).astype(np.int64)


def test_blocks_dequantize_to_what_transformers_loads(lm):
    """The GGUF blocks, un-permuted, equal the dequantized weights transformers reads."""
    import torch
    from transformers import AutoModelForCausalLM

    blocks, _, deq = lm
    gguf_dir = deq.parent
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file="tiny.gguf",
                                                  dtype=torch.float32)
    state = loaded.state_dict()
    assert {"Q4_1", "Q8_0"} <= {b.format for b in blocks.values()}
    for name, block in blocks.items():
        np.testing.assert_array_equal(block.dequantize().reshape(state[name].shape),
                                      state[name].numpy(), err_msg=name)


def test_lm_matmuls_maps_builder_sites(lm):
    from compress.quantization.lm_graph import lm_matmuls

    _, fp32, _ = lm
    sites = {s.name: s for s in lm_matmuls(fp32 / "model.onnx")}
    assert len(sites) == 2 * 5 + 1
    qkv = sites["layers.1.qkv_proj"]
    assert qkv.hf_names == tuple(f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkv")
    assert (qkv.k, qkv.n) == (64, 64 + 2 * 32)
    assert (sites["lm_head"].k, sites["layers.0.down_proj"].k) == (64, 128)


def test_source_is_exact_and_int4_is_not(lm, tmp_path):
    """'source' keeps the GGUF's values: logits equal fp32's to round-off (accuracy_level 0,
    fp32 compute); RTN int4 from the dequantized copy moves them; int8 stays close."""
    from compress.quantization.lm_graph import lm_matmuls
    from compress.quantization.lm_quantize import quantize_lm

    blocks, fp32, _ = lm
    sites = [s.name for s in lm_matmuls(fp32 / "model.onnx")]
    ref = _logits(fp32, IDS)
    errors, summaries = {}, {}
    for choice in ("source", "int8", "int4"):
        out = tmp_path / choice
        summaries[choice] = quantize_lm(fp32, out, {s: choice for s in sites}, blocks=blocks,
                                        accuracy_level=0)
        errors[choice] = float(np.abs(_logits(out, IDS) - ref).max())
    scale = float(np.abs(ref).max())
    assert errors["source"] < 1e-4 * scale, errors
    assert errors["int4"] > 100 * errors["source"] and errors["int4"] > 1e-2 * scale, errors
    assert errors["int8"] < errors["int4"] / 4, errors
    assert "8-bit table" in summaries["source"]["embedding"]
    assert "4-bit table" in summaries["int4"]["embedding"]


def test_tied_embedding_is_one_table(lm, tmp_path):
    """The embedding Gather reads the LM head's quantized table: no float copy remains."""
    import onnx

    from compress.quantization.lm_quantize import quantize_lm

    blocks, fp32, _ = lm
    out = tmp_path / "head"
    quantize_lm(fp32, out, {"lm_head": "source"}, blocks=blocks)
    model = onnx.load(str(out / "model.onnx"))
    gather = next(n for n in model.graph.node if n.op_type == "GatherBlockQuantized")
    nbits = next(n for n in model.graph.node if n.op_type == "MatMulNBits")
    reshape = next(n for n in model.graph.node if n.output[0] == gather.input[0])
    assert reshape.input[0] == nbits.input[1] and gather.input[2] == nbits.input[2]
    vocab = 300 * 64
    assert not [t.name for t in model.graph.initializer if np.prod(t.dims) >= vocab
                and t.data_type == onnx.TensorProto.FLOAT]


def test_quantized_folder_generates_with_genai(lm, tmp_path):
    import onnxruntime_genai as og

    from compress.quantization.lm_graph import lm_matmuls
    from compress.quantization.lm_quantize import quantize_lm

    blocks, fp32, _ = lm
    out = tmp_path / "gen"
    quantize_lm(fp32, out, {s.name: "source" for s in lm_matmuls(fp32 / "model.onnx")},
                blocks=blocks)
    model = og.Model(str(out))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=12, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens([1, 2, 3])
    while not generator.is_done():
        generator.generate_next_token()
    assert len(generator.get_sequence(0)) == 12


def test_plan_errors_name_the_site(lm, tmp_path):
    from compress.errors import DataError
    from compress.quantization.lm_quantize import quantize_lm

    _, fp32, _ = lm
    with pytest.raises(DataError, match="layers.9.qkv_proj"):
        quantize_lm(fp32, tmp_path / "x", {"layers.9.qkv_proj": "int4"})
    with pytest.raises(DataError, match="needs the GGUF blocks"):
        quantize_lm(fp32, tmp_path / "y", {"lm_head": "source"})
