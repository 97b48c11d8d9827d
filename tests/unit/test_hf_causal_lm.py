"""The hf-causal-lm family: config completed from the folder, weights loaded, a pruned
model's spec records its new sizes so save_model / load_model give identical logits."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

import torch  # noqa: E402
from pydantic import TypeAdapter  # noqa: E402

from compress.errors import RecipeError  # noqa: E402
from compress.models import load_model, new_model, save_model  # noqa: E402
from compress.models.family import load_pretrained_, resolve_model_config  # noqa: E402
from compress.recipe.schema import ModelConfig  # noqa: E402
from compress.testing.tiny_llama import tiny_llama_folder  # noqa: E402

pytestmark = pytest.mark.unit


def _model(folder, **keys):
    config = TypeAdapter(ModelConfig).validate_python(
        {"architecture": "hf-causal-lm", "path": str(folder), **keys}
    )
    config = resolve_model_config(config)
    model, spec = new_model(config, (16,), 0, None)
    load_pretrained_(model, config, spec.signature)
    return model.eval(), spec


def test_the_family_loads_the_folder_and_gives_its_logits(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = tiny_llama_folder(tmp_path / "llama")
    model, spec = _model(folder)
    assert spec.signature.names == ["input_ids", "attention_mask"]
    assert spec.config.decoder["num_key_value_heads"] == 2
    reference = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        assert torch.allclose(model(ids, torch.ones_like(ids)), want, atol=1e-5)


def test_a_student_of_chosen_layers_keeps_those_layers(tmp_path):
    folder = tiny_llama_folder(tmp_path / "llama", num_hidden_layers=3)
    full, _ = _model(folder)
    student, spec = _model(folder, layers=[0, 2])
    assert spec.config.decoder["num_hidden_layers"] == 2
    kept = student.lm.model.layers[1].mlp.up_proj.weight
    assert torch.equal(kept, full.lm.model.layers[2].mlp.up_proj.weight)


def test_a_pruned_model_reloads_with_identical_logits(tmp_path):
    from compress.pruning.decoder import prune_decoder_
    from compress.stages.prune_decoder import respec

    model, spec = _model(tiny_llama_folder(tmp_path / "llama"))
    prune_decoder_(model.lm, kv_groups_ratio=0.5, ffn_ratio=0.25)
    spec = respec(model, spec)
    save_model(model, spec, tmp_path / "stage")
    again, loaded = load_model(tmp_path / "stage")
    assert loaded.config.decoder["num_key_value_heads"] == 1
    assert loaded.config.decoder["intermediate_size"] == 96
    ids = torch.randint(0, 300, (2, 13), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model(ids, mask), again(ids, mask))


def test_a_folder_without_config_is_a_recipe_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="no config.json"):
        _model(tmp_path / "empty")


def test_path_and_gguf_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        TypeAdapter(ModelConfig).validate_python(
            {"architecture": "hf-causal-lm", "path": "a", "gguf": "b.gguf"}
        )
