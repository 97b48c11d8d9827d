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
    return blocks, _export_fp32(deq, root / "fp32"), deq


def _export_fp32(hf, out):
    """onnxruntime-genai's builder, fp32 with the KV cache: what the export stage writes."""
    subprocess.run(
        [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
         str(out), "-p", "fp32", "-e", "cpu", "-c", str(out.parent / f"{out.name}.cache")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


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
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file="tiny.gguf", dtype=torch.float32
    )
    state = loaded.state_dict()
    assert {"Q4_1", "Q8_0"} <= {b.format for b in blocks.values()}
    for name, block in blocks.items():
        np.testing.assert_array_equal(
            block.dequantize().reshape(state[name].shape), state[name].numpy(), err_msg=name
        )


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
    for choice in ("source", "source-fused", "int8", "int4"):
        out = tmp_path / choice
        plan = {s: choice for s in sites}
        if choice == "source-fused":
            plan["lm_head"] = "source"
        summaries[choice] = quantize_lm(fp32, out, plan, blocks=blocks, accuracy_level=0)
        errors[choice] = float(np.abs(_logits(out, IDS) - ref).max())
    scale = float(np.abs(ref).max())
    assert errors["source"] < 1e-4 * scale, errors
    assert errors["int4"] > 100 * errors["source"] and errors["int4"] > 1e-2 * scale, errors
    assert errors["int8"] < errors["int4"] / 4, errors
    # fused: the offset's remainder rounded to 4 bits in extra blocks: close, not exact
    assert errors["source"] < errors["source-fused"] < errors["int4"] / 4, errors
    assert "8-bit table" in summaries["source"]["embedding"]
    assert "4-bit table" in summaries["int4"]["embedding"]


def test_fused_encoding_computes_what_it_dequantizes_to(lm):
    """NBits.dequantize of a fused site (codes, zero points, remainder blocks) is the weight
    MatMulNBits computes with; its error against the GGUF weight is under 1/20 of a step."""
    from compress.quantization.nbits import from_blocks

    blocks, _, _ = lm
    part = blocks["model.layers.0.mlp.down_proj.weight"]
    exact = part.dequantize().T
    fused = from_blocks([part], offsets="fused")
    rounded = from_blocks([part], offsets="round")
    assert fused.aux_blocks == 1 and fused.k == 128 + 32
    step = part.scale.astype(np.float32).T.repeat(32, axis=0)
    assert np.abs(fused.dequantize() - exact).max() < 0.05 * step.max()
    assert np.abs(rounded.dequantize() - exact).max() > 0.2 * step.min()
    np.testing.assert_allclose(from_blocks([part]).dequantize(), exact, atol=1e-6)


def test_hqq_int4_is_closer_than_rtn(lm, tmp_path):
    """algorithm = "hqq" (onnxruntime's quantizer, float zero points) moves the logits less
    than RTN int4 on the same sites."""
    from compress.quantization.lm_quantize import quantize_lm

    _, fp32, _ = lm
    ref = _logits(fp32, IDS)
    plan = {"layers.0.down_proj": "int4", "layers.1.gate_proj": "int4"}
    errors = {}
    for algorithm in ("rtn", "hqq"):
        quantize_lm(fp32, tmp_path / algorithm, plan, algorithm=algorithm, accuracy_level=0)
        errors[algorithm] = float(np.abs(_logits(tmp_path / algorithm, IDS) - ref).max())
    assert 0 < errors["hqq"] < errors["rtn"], errors


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
    assert not [
        t.name
        for t in model.graph.initializer
        if np.prod(t.dims) >= vocab and t.data_type == onnx.TensorProto.FLOAT
    ]


def test_quantized_folder_generates_with_genai(lm, tmp_path):
    import onnxruntime_genai as og

    from compress.quantization.lm_graph import lm_matmuls
    from compress.quantization.lm_quantize import quantize_lm

    blocks, fp32, _ = lm
    out = tmp_path / "gen"
    quantize_lm(
        fp32, out, {s.name: "source" for s in lm_matmuls(fp32 / "model.onnx")}, blocks=blocks
    )
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


@pytest.fixture(scope="module")
def windows(lm):
    """Windows sampled from the fp32 model itself: any change of its weights raises their
    perplexity in expectation (random text would not: a random model's perplexity on it can
    go either way)."""
    _, fp32, _ = lm
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 250, size=(4, 1)).astype(np.int64)
    while ids.shape[1] < 32:
        logits = _logits(fp32, ids)[:, -1].astype(np.float64)
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        nxt = [rng.choice(len(row), p=row) for row in p]
        ids = np.concatenate([ids, np.asarray(nxt, np.int64)[:, None]], axis=1)
    return ids


def test_search_keeps_source_where_it_is_within_the_limit(lm, windows, tmp_path):
    """With the GGUF blocks every site keeps its own codes (fused offsets; the head its exact
    8-bit table): within the limit, one evaluation."""
    from compress.quantization.lm_placement import search_placement

    blocks, fp32, _ = lm
    result = search_placement(
        fp32, tmp_path, windows, blocks=blocks, perplexity_limit=0.05, log=lambda line: None
    )
    assert set(result.plan.values()) == {"source-fused", "source"}
    assert result.plan["lm_head"] == "source"
    assert len(result.trials) == 1
    assert abs(result.perplexity / result.baseline_perplexity - 1) < 0.05
    assert all("fastest rung" in d["reason"] for d in result.decisions)


def test_search_moves_the_costliest_group_up_the_ladder(lm, windows, tmp_path):
    """Without blocks int4 RTN is the first rung; over a tight limit the search moves groups
    to int8 one at a time (the largest gain first) until the plan fits."""
    from compress.quantization.lm_placement import search_placement

    _, fp32, _ = lm
    result = search_placement(
        fp32, tmp_path, windows, perplexity_limit=0.002, log=lambda line: None
    )
    first = result.trials[0]["perplexity"]
    assert first / result.baseline_perplexity - 1 > 0.002  # int4 everywhere costs too much
    assert "int8" in set(result.plan.values())
    assert result.perplexity < first
    kept = [t for t in result.trials[1:] if t["kept"]]
    assert kept and all(t["plan"] == "int8" for t in kept)
    moved = [d for d in result.decisions if d["choice"] == "int8"]
    assert moved and "largest perplexity cost" in moved[0]["reason"]
    assert not list(tmp_path.glob("trial*"))  # trial folders removed as it goes


class _Train:
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def take(self, index):
        import torch

        return [torch.as_tensor(self.ids[index])]


def _context(tmp_path, fp32, gguf, windows, task="causal-lm"):
    from types import SimpleNamespace

    from compress.recipe.schema.runtime import GenerationConfig

    profile = GenerationConfig(prompt=8, generate=8, rounds=1, warmup=0)
    recipe = SimpleNamespace(
        model=SimpleNamespace(task=task, gguf=str(gguf), package=None),
        runtime=SimpleNamespace(generation_profile=lambda: profile),
    )
    workdir = tmp_path / "quantize"
    workdir.mkdir(parents=True)
    return SimpleNamespace(
        recipe=recipe,
        data=SimpleNamespace(train=_Train(windows)),
        model=None,
        spec=None,
        workdir=workdir,
        onnx_path=None,
        input_onnx=fp32 / "model.onnx",
        seed=0,
    )


def _method(table):
    from compress.recipe.stages import QuantizeStageConfig
    from compress.stages.quantize_methods.weight_only import WeightOnlyMethod

    config = QuantizeStageConfig.model_validate(
        {"type": "quantize", "method": "weight-only", **table}
    )
    return config, WeightOnlyMethod


def test_weight_only_method_writes_a_folder_and_says_why(lm, windows, tmp_path):
    """auto: the search keeps the GGUF's blocks (checked equal to the export's weights) and
    accuracy_level is timed; the folder generates; the report names each site's reason."""
    import onnxruntime_genai as og

    _, fp32, deq = lm
    config, method = _method(
        {"weights": "auto", "perplexity_increase_max": 0.05, "calibration_windows": 2}
    )
    result = method(config, _context(tmp_path, fp32, deq.parent / "tiny.gguf", windows)).run()
    details = result.details["quantization"]
    assert result.onnx_path == tmp_path / "quantize" / "model.onnx"
    assert "equals the file's blocks" in details["gguf_blocks"]
    assert details["site_counts"] == {"source-fused": 10, "source": 1}
    assert details["accuracy_level"] in (1, 4) and "tokens/s" in details["accuracy_level_choice"]
    # the timed folder of the chosen level is the one shipped (moved, not quantized again)
    import onnx

    graph = onnx.load(str(result.onnx_path)).graph
    levels = {a.i for n in graph.node if n.op_type == "MatMulNBits" for a in n.attribute
              if a.name == "accuracy_level"}  # fmt: skip
    assert levels == {details["accuracy_level"]}
    assert details["bytes"] == result.onnx_path.stat().st_size
    assert not list(tmp_path.glob(".quantize.search*"))
    assert all(d["reason"] for d in details["sites"])
    assert "8-bit table" in details["embedding"]
    og.Model(str(result.onnx_path.parent))  # loads in onnxruntime-genai


def test_weight_only_refuses_other_models_and_changed_weights(lm, windows, tmp_path):
    from compress.errors import StageError

    blocks, fp32, deq = lm
    config, method = _method({"weights": "int8"})
    context = _context(tmp_path, fp32, deq.parent / "tiny.gguf", windows, task="classification")
    with pytest.raises(StageError, match="causal language model"):
        method(config, context).run()
    # a GGUF whose blocks are not this export's weights (another seed): source is refused
    from compress.testing.tiny_gguf import write_tiny_gguf
    from compress.testing.tiny_llama import tiny_llama_folder

    other = write_tiny_gguf(tiny_llama_folder(tmp_path / "other", seed=3), tmp_path / "o.gguf")
    config, method = _method({"weights": "source", "accuracy_level": 4})
    with pytest.raises(StageError, match="weights changed since the file"):
        method(config, _context(tmp_path / "b", fp32, other, windows)).run()


def test_a_student_of_some_layers_keeps_the_files_blocks(lm, windows, tmp_path):
    """A student holding the file's layer 1 alone (model.json: source_layers [1]) still
    equals the GGUF's blocks once they are renumbered, so "source" re-encodes it exactly;
    without the map the blocks are another layer's and are refused."""
    import shutil
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM

    from compress.errors import StageError
    from compress.models.decoder_student import student_from_layers

    _, _, deq = lm
    hf = tmp_path / "student-hf"
    student_from_layers(AutoModelForCausalLM.from_pretrained(deq), [1]).save_pretrained(hf)
    for item in deq.iterdir():
        if item.name.startswith("tokenizer") or item.name == "special_tokens_map.json":
            shutil.copy2(item, hf / item.name)
    fp32 = _export_fp32(hf, tmp_path / "student-fp32")
    gguf = deq.parent / "tiny.gguf"
    config, method = _method({"weights": "source", "accuracy_level": 0})
    context = _context(tmp_path / "mapped", fp32, gguf, windows)
    context.spec = SimpleNamespace(config=SimpleNamespace(source_layers=[1], layers=None))
    result = method(config, context).run()
    assert "layers [1] of the file" in result.details["quantization"]["gguf_blocks"]
    assert result.details["quantization"]["site_counts"] == {"source": 6}  # 5 + the head
    ref = _logits(fp32, IDS)
    assert np.abs(_logits(result.onnx_path.parent, IDS) - ref).max() < 1e-4 * np.abs(ref).max()
    with pytest.raises(StageError, match="weights changed since the file"):
        method(config, _context(tmp_path / "unmapped", fp32, gguf, windows)).run()
