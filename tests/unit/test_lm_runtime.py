"""Decoder LMs on ONNX Runtime: export with a KV cache, parity with torch, perplexity,
agreement and KL, decode speed and generation through onnxruntime-genai (tiny Llama)."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress.errors import StageError
from compress.runtime.lm_export import export_causal_lm, set_genai_threads
from compress.runtime.lm_parity import check_lm_parity
from compress.runtime.lm_quality import lm_quality
from compress.testing.tiny_llama import TINY_TEXT, tiny_llama_folder

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-llama") / "hf")


@pytest.fixture(scope="module")
def model(hf_folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_folder).eval()


@pytest.fixture(scope="module")
def exported(model, hf_folder, tmp_path_factory):
    """The tiny Llama exported once: the folder's model.onnx. Do not modify it."""
    return export_causal_lm(model, hf_folder, tmp_path_factory.mktemp("onnx") / "fp32")


@pytest.fixture(scope="module")
def corrupted(exported, tmp_path_factory):
    """A copy of `exported` with one weight of layer 0's q/k/v MatMul moved by 1.0."""
    folder = tmp_path_factory.mktemp("corrupted") / "bad"
    shutil.copytree(exported.parent, folder)
    graph = onnx.load(folder / "model.onnx")
    tensor = next(t for t in graph.graph.initializer if "layers.0" in t.name and "qkv" in t.name)
    values = numpy_helper.to_array(tensor).copy()
    values.flat[3] += 1.0
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save_model(graph, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def windows(hf_folder):
    """Tokenized TINY_TEXT as 4 windows of 24 tokens."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(hf_folder)(" ".join(TINY_TEXT * 3))["input_ids"]
    return np.asarray(ids[: 4 * 24], dtype=np.int64).reshape(4, 24)


def test_export_writes_one_self_contained_folder(exported):
    folder = exported.parent
    names = sorted(path.name for path in folder.iterdir())
    config = json.loads((folder / "genai_config.json").read_text())
    decoder = config["model"]["decoder"]

    assert exported.name == "model.onnx"
    assert "model.onnx.data" not in names and "tokenizer.json" in names
    assert decoder["filename"] == "model.onnx"
    assert decoder["session_options"]["intra_op_num_threads"] == 1
    # nothing staged beside it is left behind
    assert sorted(p.name for p in folder.parent.iterdir()) == ["fp32"]
    graph = onnx.load(exported, load_external_data=False)
    assert all(not t.external_data for t in graph.graph.initializer)


def test_set_genai_threads_rewrites_only_on_change(exported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(exported.parent, folder)
    path = folder / "genai_config.json"
    before = path.read_bytes()

    set_genai_threads(folder, 1)
    unchanged = path.read_bytes()
    set_genai_threads(folder, 3)
    options = json.loads(path.read_text())["model"]["decoder"]["session_options"]

    assert unchanged == before
    assert options["intra_op_num_threads"] == 3 and options["inter_op_num_threads"] == 1


def test_parity_with_and_without_past(model, exported):
    worst = check_lm_parity(model, exported)

    assert 0.0 < worst < 1e-4


def test_parity_at_other_batch_prompt_and_past_lengths(model, exported):
    worst = check_lm_parity(model, exported, batch=3, prompt_lengths=(1, 33), past_length=11)

    assert worst < 1e-4


def test_parity_catches_a_changed_weight(model, corrupted):
    expected = r"parity failed at batch 2 past 0 sequence 7: logits max \|diff\| = .* at index \("
    with pytest.raises(StageError, match=expected):
        check_lm_parity(model, corrupted)


def test_builder_failure_is_a_stage_error_and_leaves_nothing(hf_folder, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=300)).eval()

    with pytest.raises(StageError, match="model builder failed .*GPT2LMHeadModel"):
        export_causal_lm(gpt2, hf_folder, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_quality_of_a_model_against_itself_matches_torch(model, exported, windows):
    quality = lm_quality(exported, windows, reference=exported)
    with torch.no_grad():
        ids = torch.from_numpy(windows)
        loss = model(input_ids=ids, labels=ids).loss

    assert quality.tokens == 4 * 23
    assert quality.agreement == 1.0 and quality.kl_mean == 0.0
    assert quality.perplexity == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_quality_sees_a_changed_model(exported, corrupted, windows):
    alone = lm_quality(corrupted, windows)
    against = lm_quality(corrupted, windows, reference=exported)
    base = lm_quality(exported, windows)

    assert alone.agreement is None and alone.kl_mean is None
    assert against.perplexity == alone.perplexity != base.perplexity
    assert 0.0 < against.agreement < 1.0
    assert against.kl_mean > 1e-3


def test_decode_speed_generates_exactly_the_requested_tokens(exported, corrupted):
    from compress.runtime.lm_speed import decode_speed, decode_speedup

    stats = decode_speed([exported.parent, corrupted.parent], [5, 17, 42, 9], generate=6,
                         batch=2, rounds=3, warmup=1)  # fmt: skip
    ratio = decode_speedup(stats[0], stats[1])

    assert [len(s.rounds) for s in stats] == [3, 3]
    for record in stats:
        assert record.generate == 6 and record.batch == 2 and record.prompt_tokens == 4
        assert record.prefill_ms > 0 and record.decode_tokens_per_s > 0
        rates = [r["decode_tokens_per_s"] for r in record.rounds]
        assert min(rates) <= record.decode_tokens_per_s <= max(rates)
        # rate = batch x (generate - 1) / decode time, per round
        assert all(r["decode_tokens_per_s"] == pytest.approx(2 * 5 * 1e3 / r["decode_ms"])
                   for r in record.rounds)  # fmt: skip
    assert ratio["rounds"] == 3 and ratio["min"] <= ratio["median"] <= ratio["max"]


def test_generation_with_genai_alone_matches_torch_greedy(model, hf_folder, exported):
    import onnxruntime_genai as og
    from transformers import AutoTokenizer

    from compress.runtime.lm_speed import generate_ids, generate_text

    prompt = "The king is dead and"
    ids = AutoTokenizer.from_pretrained(hf_folder)(prompt)["input_ids"]
    with torch.no_grad():
        torch_out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    expected = torch_out[0, len(ids) :].tolist()

    got = generate_ids(exported.parent, ids, 12)
    text = generate_text(exported.parent, prompt, 12)

    # random weights emit stray bytes, which genai's and transformers' decoders
    # render differently: the text is checked against genai's decoding of torch's ids
    genai_tokenizer = og.Tokenizer(og.Model(str(exported.parent)))
    assert got == expected and len(got) > 0
    assert text == genai_tokenizer.decode(np.asarray(expected, dtype=np.int32))


def test_side_by_side_quality_equals_one_model_at_a_time(exported, corrupted, windows):
    from compress.runtime.lm_quality import lm_quality_side_by_side

    ref, bad, same = lm_quality_side_by_side([corrupted, exported], windows, reference=exported)
    alone = lm_quality(corrupted, windows, reference=exported)

    assert bad == alone
    assert ref == same and ref.agreement == 1.0 and ref.kl_mean == 0.0


def test_what_importing_the_builder_does_to_logging_is_undone():
    from compress.runtime.lm_export import _root_logging_kept

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    with _root_logging_kept():
        # what onnxruntime's matmul_nbits_quantizer does at import
        root.addHandler(logging.StreamHandler())
        root.setLevel(logging.INFO)

    assert (list(root.handlers), root.level) == before
