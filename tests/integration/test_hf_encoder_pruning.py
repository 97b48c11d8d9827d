"""An hf-encoder (tiny random BERT folder, tokenizer built here) pruned by heads and FFN:
reload with identical logits, ONNX parity at two sequence lengths, and a recipe run."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from compress.models.checkpoint import load_model, new_model, save_model  # noqa: E402
from compress.models.families.hf_encoder import HFEncoderConfig  # noqa: E402
from compress.models.family import load_pretrained_, resolve_model_config  # noqa: E402
from compress.models.signature import InputSignature  # noqa: E402
from compress.pruning.structured import StructuredPruner  # noqa: E402
from compress.runtime.onnx_export import check_parity, export_onnx  # noqa: E402
from compress.testing import run_cli, tiny_recipe_dict, write_recipe  # noqa: E402
from compress.testing.text import TINY_BERT, tiny_bert_folder, write_reviews  # noqa: E402

pytestmark = pytest.mark.integration

HEADS, FFN, HIDDEN = TINY_BERT["num_attention_heads"], TINY_BERT["intermediate_size"], 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("bert") / "model")


def _batch(length: int, batch: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, TINY_BERT["vocab_size"], (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return ids, mask


def test_pruned_hf_encoder_reloads_identically_and_exports_with_parity(folder, tmp_path):
    config = resolve_model_config(HFEncoderConfig(path=str(folder)))
    signature = InputSignature.text(TINY_BERT["vocab_size"])
    model, spec = new_model(config, (16,), 2, inputs=signature)
    load_pretrained_(model, config)
    model.eval()
    params = sum(p.numel() for p in model.parameters())

    pruner = StructuredPruner(
        model, _batch(12), 0.5, 1, "linear", "l1", [model.classifier],
        round_to=8, head_ratio=0.5, ffn_ratio=0.5,
    )  # fmt: skip
    pruner.step()

    for layer in model.encoder.encoder.layer:
        assert layer.attention.self.num_attention_heads == HEADS // 2
        assert layer.attention.self.query.out_features == HIDDEN // 2
        assert layer.intermediate.dense.out_features == FFN // 2
        assert layer.output.dense.out_features == HIDDEN
    assert sum(p.numel() for p in model.parameters()) < params
    save_model(model, spec, tmp_path / "pruned")
    reloaded, _ = load_model(tmp_path / "pruned")
    with torch.no_grad():
        for length in (12, 40):
            assert torch.equal(reloaded(*_batch(length)), model(*_batch(length)))
    meta = json.loads((tmp_path / "pruned" / "model.json").read_text(encoding="utf-8"))
    recorded = meta["structure"]["encoder.encoder.layer.0.attention.self"]
    assert recorded["num_attention_heads"] == HEADS // 2

    path = export_onnx(reloaded, signature, tmp_path / "pruned.onnx")
    report = check_parity(reloaded, path, signature, [1, 3], atol=1e-4, rtol=1e-4)
    assert len(report) == 2  # two shapes, each at its own sequence length
    assert len({key.split("_sequence_")[-1] for key in report}) == 2


def test_text_recipe_prunes_heads_and_ffn_and_its_stage_folder_reloads(folder, tmp_path):
    reviews = write_reviews(tmp_path / "reviews.csv")
    recipe = tiny_recipe_dict(
        data={
            "source": "csv",
            "path": str(reviews),
            "label_column": "category",
            "label_map": {"fresh": 1, "rotten": 0},
            "group_column": "movie_name",
            "tokenizer": str(folder / "tokenizer.json"),
            "max_length": 16,
        },
        stages=[
            {"type": "train", "epochs": 1, "batch_size": 32},
            {
                "type": "prune",
                "name": "prune",
                "head_ratio": 0.5,
                "ffn_ratio": 0.5,
                "finetune": {"epochs": 1, "batch_size": 32},
            },
        ],
    )
    recipe["model"] = {"architecture": "hf-encoder", "path": str(folder)}
    path = write_recipe(tmp_path / "text.toml", recipe)

    run = run_cli("run", path, "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run")

    assert run.returncode == 0, run.output
    train, prune = run.report["stages"]
    assert prune["metrics"]["macs"] < train["metrics"]["macs"]
    for stage in (train, prune):  # the report's count is the ONNX graph's, attention included
        assert stage["metrics"]["macs"] == pytest.approx(stage["metrics"]["macs_onnx"], rel=0.01)
        assert stage["warnings"] == []
    assert prune["details"]["attention_families"] == ["bert"]
    model, _ = load_model(tmp_path / "run" / "prune")
    for layer in model.encoder.encoder.layer:
        assert layer.attention.self.num_attention_heads == HEADS // 2
        assert layer.intermediate.dense.out_features == FFN // 2


def test_pruned_torch_encoder_exports_with_parity(tmp_path):
    from tests.unit.test_attention_pruning import TinyTorchEncoder

    torch.manual_seed(0)
    model = TinyTorchEncoder(3, batch_first=False).eval()
    StructuredPruner(
        model, torch.randn(2, 5, 6), 0.5, 1, "linear", "l1", [model.classifier],
        round_to=8, head_ratio=0.5, ffn_ratio=0.5,
    ).step()  # fmt: skip
    assert model.encoder.layers[0].self_attn.num_heads == HEADS // 2

    path = export_onnx(model, (5, 6), tmp_path / "encoder.onnx")
    report = check_parity(model, path, (5, 6), [1, 3], atol=1e-4, rtol=1e-4)

    assert max(report.values()) < 1e-4
