"""Decoder LM pruning and distillation on the tiny Llama: GQA-aware KV-group pruning, FFN
width pruning, students of chosen layers, and the token-level KD loss."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.errors import RecipeError
from compress.models.decoder_student import (
    layer_importance,
    layers_to_keep,
    student_from_layers,
    window_perplexity,
)
from compress.pruning.decoder import prune_decoder_
from compress.training.token_kd import (
    cache_teacher_logits,
    distill_tokens_,
    token_kd_loss,
    topk_kd_loss,
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny Llama with 3 KV groups of 2 query heads each (SmolLM2 has 3 of 3); hidden
    96 so that 6 and 4 heads both divide it (transformers' LlamaConfig insists)."""
    from compress.testing.tiny_llama import tiny_llama_folder

    return tiny_llama_folder(
        tmp_path_factory.mktemp("llama"), hidden_size=96, num_attention_heads=6,
        num_key_value_heads=3,
    )  # fmt: skip


def load(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder).eval()


@pytest.fixture
def model(folder):
    return load(folder)


@pytest.fixture(scope="module")
def windows(folder):
    torch.manual_seed(0)
    return torch.randint(0, load(folder).config.vocab_size, (4, 24))


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def reload(model, path):
    model.save_pretrained(path)
    return load(path)


# ---- prune_decoder_ ------------------------------------------------------------------------


def test_pruned_shapes_and_config(model):
    summary = prune_decoder_(model, kv_groups_ratio=1 / 3, ffn_ratio=0.25)
    config = model.config
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
    assert (config.head_dim, config.intermediate_size) == (16, 96)
    for layer in model.model.layers:
        a, m = layer.self_attn, layer.mlp
        assert tuple(a.q_proj.weight.shape) == (64, 96)
        assert tuple(a.k_proj.weight.shape) == tuple(a.v_proj.weight.shape) == (32, 96)
        assert tuple(a.o_proj.weight.shape) == (96, 64)
        assert tuple(m.gate_proj.weight.shape) == tuple(m.up_proj.weight.shape) == (96, 96)
        assert tuple(m.down_proj.weight.shape) == (96, 96)
        assert a.num_key_value_groups == 2  # query heads per KV head unchanged
    assert summary["kv_heads"] == [3, 2] and summary["intermediate_size"] == [128, 96]
    assert summary["params"][1] < summary["params"][0]
    assert all(len(layer["kv_groups"]) == 2 for layer in summary["layers"])


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_pruned_model_reloads_with_identical_logits(model, windows, tmp_path, importance):
    prune_decoder_(model, kv_groups_ratio=0.34, ffn_ratio=0.5, importance=importance,
                   windows=windows)  # fmt: skip
    reloaded = reload(model, tmp_path / "pruned")
    assert reloaded.config.num_key_value_heads == 2
    assert reloaded.config.intermediate_size == 64
    assert torch.equal(logits(model, windows), logits(reloaded, windows))


def test_kv_group_pruning_keeps_the_gqa_head_mapping(folder, model, windows):
    """Removing a group = silencing its query heads' o_proj inputs in the unpruned model
    (the KV head then feeds nothing). A q head wired to the wrong KV head would differ."""
    reference = copy.deepcopy(model)
    summary = prune_decoder_(model, kv_groups_ratio=1 / 3, importance="activation",
                             windows=windows)  # fmt: skip
    with torch.no_grad():
        for layer, kept in zip(reference.model.layers, summary["layers"], strict=True):
            (removed,) = set(range(3)) - set(kept["kv_groups"])
            # group g's query heads are 2g, 2g+1: o_proj columns 32g .. 32g+31
            layer.self_attn.o_proj.weight[:, 32 * removed : 32 * (removed + 1)] = 0
    pruned, expected = logits(model, windows), logits(reference, windows)
    assert torch.allclose(pruned, expected, atol=1e-5)
    assert not torch.allclose(pruned, logits(load(folder), windows), atol=1e-3)


def test_ffn_pruning_equals_zeroing_the_removed_channels(model, windows):
    reference = copy.deepcopy(model)
    summary = prune_decoder_(model, ffn_ratio=0.25)
    with torch.no_grad():
        for layer, kept in zip(reference.model.layers, summary["layers"], strict=True):
            layer.mlp.down_proj.weight[:, kept["ffn_removed"]] = 0
    assert torch.allclose(logits(model, windows), logits(reference, windows), atol=1e-5)


def _plant(model, channel: int, gate: float, up: float) -> None:
    """Scale FFN `channel`'s gate / up rows in every layer."""
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight[channel] *= gate
            layer.mlp.up_proj.weight[channel] *= up


def test_magnitude_removes_small_weights_activation_removes_silent_channels(folder, windows):
    # channel 5: large weights that never fire (up row zero: act(gate) * 0 = 0);
    # channel 9: small weights that do fire
    models = {}
    for importance in ("magnitude", "activation"):
        model = load(folder)
        _plant(model, 5, gate=20.0, up=0.0)
        _plant(model, 9, gate=0.05, up=0.05)
        summary = prune_decoder_(model, ffn_ratio=1 / 128, importance=importance,
                                 windows=windows)  # fmt: skip
        models[importance] = [layer["ffn_removed"] for layer in summary["layers"]]
    assert models["magnitude"] == [[9], [9]]
    assert models["activation"] == [[5], [5]]


def test_ffn_width_rounds_to_a_multiple(model):
    prune_decoder_(model, ffn_ratio=0.3, ffn_multiple_of=32)
    assert model.config.intermediate_size == 96  # 128 - 38 = 90 -> 96


def test_ratios_that_leave_nothing_are_refused(model):
    with pytest.raises(RecipeError, match="removes all 3 KV groups"):
        prune_decoder_(model, kv_groups_ratio=0.9)
    with pytest.raises(RecipeError, match=r"must be in \[0, 1\)"):
        prune_decoder_(model, ffn_ratio=1.0)
    with pytest.raises(RecipeError, match="needs calibration windows"):
        prune_decoder_(model, ffn_ratio=0.5, importance="activation")
    with pytest.raises(RecipeError, match="one of magnitude, activation"):
        prune_decoder_(model, ffn_ratio=0.5, importance="random")


def test_head_counts_the_config_cannot_hold_are_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=96, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=6, num_key_value_heads=6, head_dim=16,
                         vocab_size=10)  # fmt: skip
    model = LlamaForCausalLM(config)
    with pytest.raises(RecipeError, match=r"5 query heads, which do not divide hidden_size 96"):
        prune_decoder_(model, kv_groups_ratio=1 / 6)
    assert model.config.num_key_value_heads == 6  # refused before anything changed
    prune_decoder_(model, kv_groups_ratio=2 / 6)
    assert model.config.num_attention_heads == 4


def test_non_llama_and_non_uniform_models_are_refused(model):
    with pytest.raises(RecipeError, match="not a Llama-style decoder"):
        prune_decoder_(torch.nn.Linear(3, 3), ffn_ratio=0.5)
    from compress.pruning.decoder import _prune_mlp_

    _prune_mlp_(model.model.layers[1].mlp, list(range(64)))  # one layer narrower
    with pytest.raises(RecipeError, match="cannot be described by one config"):
        prune_decoder_(model, ffn_ratio=0.5)


# ---- layer importance and students ---------------------------------------------------------


def _silence(layer) -> None:
    """Make a decoder layer the identity (its attention and MLP write nothing)."""
    with torch.no_grad():
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()


@pytest.mark.parametrize("method", ["perplexity", "cosine"])
def test_layer_importance_finds_an_identity_layer(folder, windows, method):
    model = load(folder)
    _silence(model.model.layers[0])
    scores = layer_importance(model, windows, method=method)
    assert len(scores) == 2
    assert abs(scores[0]) < 1e-5 and scores[1] > 1e-3
    assert layers_to_keep(scores, 1) == [1]


def test_perplexity_importance_is_the_skipped_models_perplexity(model, windows):
    scores = layer_importance(model, windows)
    base = window_perplexity(model, windows)
    skipped = window_perplexity(student_from_layers(model, [1]), windows)
    assert scores[0] == pytest.approx(skipped / base - 1.0, rel=1e-5)


def test_student_of_layers_reloads_with_identical_logits(model, windows, tmp_path):
    student = student_from_layers(model, [1])
    assert student.config.num_hidden_layers == 1 and model.config.num_hidden_layers == 2
    assert torch.equal(student.model.layers[0].mlp.up_proj.weight,
                       model.model.layers[1].mlp.up_proj.weight)  # fmt: skip
    assert student.lm_head.weight.data_ptr() == student.model.embed_tokens.weight.data_ptr()
    reloaded = reload(student, tmp_path / "student")
    assert torch.equal(logits(student, windows), logits(reloaded, windows))
    whole = student_from_layers(model, [0, 1])
    assert torch.equal(logits(whole, windows), logits(model, windows))


def test_student_of_a_pruned_teacher(model, windows, tmp_path):
    prune_decoder_(model, kv_groups_ratio=1 / 3, ffn_ratio=0.25)
    student = student_from_layers(model, [0])
    assert student.config.intermediate_size == 96
    assert torch.equal(logits(student, windows), logits(reload(student, tmp_path / "s"), windows))


def test_bad_student_layers_are_refused(model):
    for layers in ([], [0, 0], [2]):
        with pytest.raises(RecipeError, match="distinct indices"):
            student_from_layers(model, layers)


# ---- token KD -------------------------------------------------------------------------------


def test_token_kd_loss_zero_for_identical_positive_otherwise_and_differentiable():
    torch.manual_seed(0)
    teacher = torch.randn(2, 5, 11)
    assert token_kd_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    student = torch.randn(2, 5, 11, requires_grad=True)
    loss = token_kd_loss(student, teacher, temperature=2.0)
    assert loss.item() > 0.01
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    # a mask keeps only the positions it names
    mask = torch.zeros(2, 5)
    mask[0, 1] = 1
    only = token_kd_loss(student, teacher, mask=mask)
    assert only.item() == pytest.approx(token_kd_loss(student[0, 1], teacher[0, 1]).item())


def test_topk_loss_is_exact_with_the_whole_vocabulary_and_a_lower_bound_otherwise():
    torch.manual_seed(1)
    teacher, student = torch.randn(2, 4, 50) * 3, torch.randn(2, 4, 50)
    full = token_kd_loss(student, teacher, temperature=1.5)
    logprobs = torch.log_softmax(teacher / 1.5, dim=-1)
    for k, exact in ((50, True), (8, False)):
        values, indices = logprobs.topk(k, dim=-1)
        approx = topk_kd_loss(student, values, indices, temperature=1.5)
        if exact:
            assert approx.item() == pytest.approx(full.item(), rel=1e-4)
        else:
            assert 0 < approx.item() <= full.item()


def test_teacher_cache_full_topk_or_none(model, windows):
    tokens = windows.numel()
    vocab = model.config.vocab_size
    full = cache_teacher_logits(model, windows, memory_cap_mb=tokens * vocab * 4 / 2**20)
    assert full.kind == "full" and full.nbytes == tokens * vocab * 4
    sparse = cache_teacher_logits(model, windows, memory_cap_mb=tokens * 8 * 8 / 2**20, top_k=8)
    assert sparse.kind == "top-k" and tuple(sparse.top_indices.shape) == (4, 24, 8)
    assert cache_teacher_logits(model, windows, memory_cap_mb=0.001) is None
    student = logits(student_from_layers(model, [0]), windows[:2])
    direct = token_kd_loss(student, logits(model, windows[:2]))
    assert full.loss(student, slice(0, 2)).item() == pytest.approx(direct.item(), rel=1e-5)
    assert 0 < sparse.loss(student, slice(0, 2)).item() <= direct.item()


def test_short_distillation_lowers_the_kd_loss(model, windows):
    cache = cache_teacher_logits(model, windows)
    student = student_from_layers(model, [1])
    before = cache.loss(logits(student, windows), slice(None)).item()
    result = distill_tokens_(student, cache, windows, steps=30, batch_size=2, lr=3e-3)
    after = cache.loss(logits(student, windows), slice(None)).item()
    assert after < 0.8 * before
    assert result["tokens"] == 30 * 2 * 24 and result["tokens_per_s"] > 0


def test_norms_only_distillation_moves_the_norms_and_nothing_else(model, windows):
    """train="norms": every Linear weight and the embedding stay bit-identical (so a GGUF
    model's blocks still apply), the RMSNorm scales move, the KD loss falls, and every
    parameter is trainable again afterwards."""
    cache = cache_teacher_logits(model, windows)
    student = student_from_layers(model, [1])
    before = {name: p.detach().clone() for name, p in student.named_parameters()}
    loss_before = cache.loss(logits(student, windows), slice(None)).item()
    result = distill_tokens_(student, cache, windows, steps=30, batch_size=2, lr=3e-2,
                             train="norms")  # fmt: skip
    moved = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    norms = {n for n in before if "norm" in n}
    assert moved == norms and len(norms) == 3  # input / post-attention of 1 layer + final
    assert result["trained_parameters"] == sum(before[n].numel() for n in norms)
    assert cache.loss(logits(student, windows), slice(None)).item() < loss_before
    assert all(p.requires_grad for p in student.parameters())


def test_train_names_what_it_accepts(model, windows):
    cache = cache_teacher_logits(model, windows)
    with pytest.raises(ValueError, match="'all', 'norms'"):
        distill_tokens_(model, cache, windows, steps=1, train="heads")


def test_windows_may_be_a_text_splits_ids_and_mask(folder, windows):
    """The text-corpus split's `x` is an (input_ids, attention_mask) pair of int64 arrays."""
    kept = []
    for given in (windows, (windows.numpy(), torch.ones_like(windows).numpy())):
        summary = prune_decoder_(load(folder), ffn_ratio=0.25, importance="activation",
                                 windows=given)  # fmt: skip
        kept.append(summary["layers"])
    assert kept[0] == kept[1]
    with pytest.raises(RecipeError, match=r"must be \[n, T\] token ids"):
        prune_decoder_(load(folder), ffn_ratio=0.25, importance="activation",
                       windows=windows[0])  # fmt: skip
