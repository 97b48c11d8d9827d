"""Head and FFN pruning of BERT-like encoders and nn.TransformerEncoder, and their reload.

Tiny models built here (a random 2-layer, 32-wide, 4-head BertConfig; a 2-layer
nn.TransformerEncoder), nothing downloaded. Correctness is checked against the
dense model with the removed heads / FFN units masked out: removing a head is the
same function as zeroing its columns of the output projection.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from compress.models.checkpoint import load_model, new_model, save_model, structure_of
from compress.models.mha import HeadAttention, convert_self_attention_
from compress.models.signature import InputSignature
from compress.models.stats import count_macs
from compress.pruning.attention import attention_plan
from compress.pruning.structured import StructuredPruner
from compress.recipe.schema import CallableModelConfig
from compress.recipe.stages import PruneStageConfig

pytest.importorskip("transformers")

VOCAB, HIDDEN, HEADS, FFN = 100, 32, 4, 64
MODULE = "tests.unit.test_attention_pruning"


class TinyBert(nn.Module):
    """A BertModel (eager attention) + a classifier over mean-pooled tokens."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            num_hidden_layers=2,
            num_attention_heads=HEADS,
            intermediate_size=FFN,
            max_position_embeddings=64,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        config._attn_implementation = "eager"
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.classifier = nn.Linear(HIDDEN, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return self.classifier((hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0))


class TinyTorchEncoder(nn.Module):
    """Linear embedding, 2 nn.TransformerEncoderLayer (4 heads), mean pool, classifier."""

    def __init__(self, num_classes: int = 3, batch_first: bool = True):
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(6, HIDDEN)
        layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, batch_first=batch_first)
        with warnings.catch_warnings():  # enable_nested_tensor is moot for batch_first=False
            warnings.simplefilter("ignore", UserWarning)
            self.encoder = nn.TransformerEncoder(layer, 2)
        self.classifier = nn.Linear(HIDDEN, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.encoder(h if self.batch_first else h.transpose(0, 1))
        return self.classifier((h if self.batch_first else h.transpose(0, 1)).mean(1))


def tiny_bert(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return TinyBert(num_classes)


def tiny_torch_encoder(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return TinyTorchEncoder(num_classes)


def text_batch(batch: int = 3, length: int = 9, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, length - 3 :] = 0  # one padded row
    return ids, mask


def prune(model, example, head_ratio=0.5, ffn_ratio=0.5, steps=1, ratio=0.5):
    pruner = StructuredPruner(
        model, example, ratio, steps, "linear", "l1", [model.classifier],
        round_to=8, head_ratio=head_ratio, ffn_ratio=ffn_ratio,
    )  # fmt: skip
    for _ in range(steps):
        pruner.step()
    return pruner


def kept_rows(before: torch.Tensor, after: torch.Tensor) -> list[int]:
    """Which rows of `before` survive in `after` (pruning keeps their order)."""
    rows = []
    for row in after:
        matches = [i for i, old in enumerate(before) if torch.equal(old, row)]
        assert len(matches) == 1
        rows.append(matches[0])
    return rows


def test_bert_loses_whole_heads_and_half_its_ffn_but_not_its_residual_width():
    model = tiny_bert(3).eval()
    params_before = sum(p.numel() for p in model.parameters())
    macs_before = count_macs(model, InputSignature.text(VOCAB))

    pruner = prune(model, text_batch())

    assert pruner.families == ["bert"]
    for layer in model.encoder.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 2
        assert attention.attention_head_size == HIDDEN // HEADS  # heads keep their dim
        assert attention.all_head_size == 16 == attention.query.out_features
        assert attention.key.out_features == attention.value.out_features == 16
        assert attention.scaling == pytest.approx((HIDDEN // HEADS) ** -0.5)
        assert layer.intermediate.dense.out_features == FFN // 2
        assert layer.output.dense.out_features == HIDDEN  # the residual stays
        assert layer.attention.output.dense.out_features == HIDDEN
        assert layer.output.LayerNorm.normalized_shape == (HIDDEN,)
    assert model.encoder.embeddings.word_embeddings.weight.shape == (VOCAB, HIDDEN)
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert count_macs(model, InputSignature.text(VOCAB)) < 0.75 * macs_before
    assert model(*text_batch()).shape == (3, 3)


def test_pruned_bert_is_the_dense_one_with_the_removed_heads_and_units_masked():
    model = tiny_bert(3).eval()
    dense = copy.deepcopy(model)
    prune(model, text_batch())

    head_size = HIDDEN // HEADS
    for layer, dense_layer in zip(model.encoder.encoder.layer, dense.encoder.encoder.layer):
        rows = kept_rows(dense_layer.attention.self.query.weight, layer.attention.self.query.weight)
        heads = sorted({r // head_size for r in rows})
        assert rows == [h * head_size + i for h in heads for i in range(head_size)]  # whole heads
        dropped = [c for c in range(HIDDEN) if c not in rows]
        units = kept_rows(dense_layer.intermediate.dense.weight, layer.intermediate.dense.weight)
        dropped_units = [u for u in range(FFN) if u not in units]
        with torch.no_grad():
            dense_layer.attention.output.dense.weight[:, dropped] = 0
            dense_layer.output.dense.weight[:, dropped_units] = 0

    ids, mask = text_batch()
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), dense(ids, mask), atol=1e-5)


def test_two_steps_reach_the_head_ratio_without_overshooting():
    # torch-pruning alone removes ceil(0.5 x 3 heads left) = 2 at step 2: 4 -> 3 -> 1
    model = tiny_bert(3).eval()
    pruner = StructuredPruner(
        model, text_batch(), 0.5, 2, "linear", "l1", [model.classifier],
        round_to=None, head_ratio=0.5, ffn_ratio=0.5,
    )  # fmt: skip
    counts = []
    for _ in range(2):
        pruner.step()
        counts.append(model.encoder.encoder.layer[0].attention.self.num_attention_heads)
    assert counts == [3, 2]
    assert model.encoder.encoder.layer[1].intermediate.dense.out_features == FFN // 2


def test_head_ratio_zero_keeps_every_head_and_ffn_ratio_zero_the_ffn():
    model = tiny_bert(3).eval()
    prune(model, text_batch(), head_ratio=0.0, ffn_ratio=0.5)
    layer = model.encoder.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == HEADS
    assert layer.attention.self.query.out_features == HIDDEN
    assert layer.intermediate.dense.out_features == FFN // 2

    model = tiny_bert(3).eval()
    prune(model, text_batch(), head_ratio=0.5, ffn_ratio=0.0)
    layer = model.encoder.encoder.layer[0]
    assert layer.attention.self.num_attention_heads == 2
    assert layer.intermediate.dense.out_features == FFN


@pytest.mark.parametrize("batch_first", [True, False])
def test_head_attention_computes_what_multihead_attention_does(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, batch_first=batch_first)
    layer.eval()
    converted = copy.deepcopy(layer)
    converted.self_attn = HeadAttention.from_multihead_attention(converted.self_attn)
    x = torch.randn(3, 7, HIDDEN) if batch_first else torch.randn(7, 3, HIDDEN)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, 5:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        assert torch.allclose(converted(x), layer(x), atol=1e-5)
        got = converted(x, src_key_padding_mask=padding)
        want = layer(x, src_key_padding_mask=padding)
        # the reference's fast path zeroes padded positions: compare the real tokens
        valid = ~padding if batch_first else ~padding.T
        assert torch.allclose(got[valid], want[valid], atol=1e-5)
        assert torch.allclose(converted(x, src_mask=causal), layer(x, src_mask=causal), atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
def test_torch_encoder_layers_lose_whole_heads_keeping_head_dim_and_residual(batch_first):
    torch.manual_seed(0)
    model = TinyTorchEncoder(3, batch_first).eval()
    x = torch.randn(3, 5, 6)
    dense = copy.deepcopy(model)
    convert_self_attention_(dense)

    pruner = prune(model, x)

    assert "torch-mha" in pruner.families
    head_dim = HIDDEN // HEADS
    for layer, dense_layer in zip(model.encoder.layers, dense.encoder.layers):
        attention = layer.self_attn
        assert isinstance(attention, HeadAttention)
        assert (attention.num_heads, attention.head_dim, attention.embed_dim) == (2, head_dim, 32)
        assert attention.qkv.out_features == 3 * 2 * head_dim
        assert attention.out_proj.in_features == 2 * head_dim
        assert attention.out_proj.out_features == HIDDEN  # the residual stays
        assert layer.linear1.out_features == FFN // 2 and layer.linear2.out_features == HIDDEN
        rows = kept_rows(dense_layer.self_attn.qkv.weight[:HIDDEN], attention.qkv.weight[:16])
        dropped = [c for c in range(HIDDEN) if c not in rows]
        assert len(dropped) == 2 * head_dim and len({c // head_dim for c in dropped}) == 2
        units = kept_rows(dense_layer.linear1.weight, layer.linear1.weight)
        with torch.no_grad():
            dense_layer.self_attn.out_proj.weight[:, dropped] = 0
            dense_layer.linear2.weight[:, [u for u in range(FFN) if u not in units]] = 0
    assert model.embed.out_features == HIDDEN
    with torch.no_grad():
        assert torch.allclose(model(x), dense(x), atol=1e-5)


def test_multihead_attention_that_cannot_be_converted_is_skipped_with_a_warning():
    class CrossAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(6, HIDDEN)
            self.attn = nn.MultiheadAttention(HIDDEN, HEADS, batch_first=True)
            self.classifier = nn.Linear(HIDDEN, 3)

        def forward(self, x):
            h = self.embed(x)
            return self.classifier(self.attn(h, h, h)[0].mean(1))

    model = CrossAttention().eval()
    with pytest.warns(UserWarning, match="attn"):
        prune(model, torch.randn(2, 5, 6))
    assert isinstance(model.attn, nn.MultiheadAttention) and model.attn.embed_dim == HIDDEN
    assert model(torch.randn(2, 5, 6)).shape == (2, 3)


def test_attention_plan_names_the_residual_of_bert():
    model = tiny_bert(3)
    plan = attention_plan(model)
    layer = model.encoder.encoder.layer[0]
    assert plan.heads[layer.attention.self.query] == HEADS
    assert layer.intermediate.dense in plan.ffn
    assert layer.output.dense in plan.residual and layer.attention.output.dense in plan.residual
    assert model.encoder.embeddings in plan.residual


def test_structure_records_what_the_bert_forward_reads():
    model = tiny_bert(3).eval()
    prune(model, text_batch())
    recorded = structure_of(model)["encoder.encoder.layer.0.attention.self"]
    assert recorded["num_attention_heads"] == 2
    assert recorded["all_head_size"] == 16
    assert recorded["attention_head_size"] == 8
    assert recorded["scaling"] == pytest.approx(8**-0.5)


@pytest.mark.parametrize(
    ("builder", "shape", "signature", "example"),
    [
        ("tiny_bert", (16,), InputSignature.text(VOCAB), text_batch()),
        ("tiny_torch_encoder", (5, 6), None, (torch.randn(3, 5, 6),)),
    ],
)
def test_a_pruned_model_reloads_with_identical_logits(tmp_path, builder, shape, signature, example):
    config = CallableModelConfig(architecture=f"{MODULE}:{builder}")
    model, spec = new_model(config, shape, 3, inputs=signature)
    model.eval()
    prune(model, example[0] if len(example) == 1 else example)
    with torch.no_grad():
        expected = model(*example)

    save_model(model, spec, tmp_path)
    reloaded, _ = load_model(tmp_path)

    with torch.no_grad():
        assert torch.equal(reloaded(*example), expected)
    assert structure_of(reloaded) == structure_of(model)


def test_head_and_ffn_ratios_are_validated():
    config = PruneStageConfig.model_validate({"type": "prune", "head_ratio": 0.5, "ffn_ratio": 0})
    assert (config.head_ratio, config.ffn_ratio) == (0.5, 0)
    assert PruneStageConfig.model_validate({"type": "prune"}).head_ratio is None
    for bad in ({"head_ratio": 1.0}, {"ffn_ratio": -0.1}):
        with pytest.raises(ValueError, match="ratio"):
            PruneStageConfig.model_validate({"type": "prune", **bad})
    with pytest.raises(ValueError, match="structured"):
        PruneStageConfig.model_validate(
            {"type": "prune", "method": "unstructured", "head_ratio": 0.5}
        )


def test_an_ignored_attention_module_keeps_its_heads_and_the_others_lose_theirs():
    model = tiny_bert(3).eval()
    first = model.encoder.encoder.layer[0].attention.self
    pruner = StructuredPruner(
        model, text_batch(), 0.5, 2, "linear", "l1", [model.classifier, first],
        round_to=None, head_ratio=0.5,
    )  # fmt: skip
    pruner.step()
    pruner.step()
    assert (first.num_attention_heads, first.query.out_features) == (HEADS, HIDDEN)
    second = model.encoder.encoder.layer[1].attention.self
    assert (second.num_attention_heads, second.query.out_features) == (2, 16)
