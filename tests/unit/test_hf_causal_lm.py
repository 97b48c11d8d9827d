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


def test_source_layers_follow_each_layer_back_to_the_file(tmp_path):
    """A student of layers [0, 2] of a 3-layer student of layers [0, 2, 3] of a 4-layer
    file holds the file's layers [0, 3]: model.json says so, for the quantize stage."""
    from compress.models.decoder_student import student_from_layers
    from compress.stages.prune_decoder import respec

    folder = tiny_llama_folder(tmp_path / "llama", num_hidden_layers=4)
    model, spec = _model(folder, layers=[0, 2, 3])
    assert spec.config.source_layers is None and spec.config.layers == [0, 2, 3]
    student = type(model).around(student_from_layers(model.lm, [0, 2]))
    spec = respec(student, spec, [0, 2])
    assert spec.config.source_layers == [0, 3] and spec.config.layers is None
    save_model(student, spec, tmp_path / "stage")
    _, loaded = load_model(tmp_path / "stage")
    assert loaded.config.source_layers == [0, 3]
    # and once more from a spec that already records them
    again = respec(type(model).around(student_from_layers(student.lm, [1])), loaded, [1])
    assert again.config.source_layers == [3]


def test_a_folder_without_config_is_a_recipe_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecipeError, match="no config.json"):
        _model(tmp_path / "empty")


def test_path_and_gguf_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        TypeAdapter(ModelConfig).validate_python(
            {"architecture": "hf-causal-lm", "path": "a", "gguf": "b.gguf"}
        )


def test_a_gguf_file_is_converted_once_into_the_cache(tmp_path, monkeypatch):
    import compress.models.gguf_folder as gguf_folder
    from compress.models.causal_lm import model_folder

    calls = []

    def convert(path, folder):  # stands in for transformers' GGUF reader
        calls.append(path)
        return tiny_llama_folder(folder)

    monkeypatch.setattr(gguf_folder, "gguf_to_folder", convert)
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF fake")
    config = TypeAdapter(ModelConfig).validate_python(
        {"architecture": "hf-causal-lm", "gguf": str(gguf)}
    )
    first, second = model_folder(config), model_folder(config)
    assert first == second and first.parent == tmp_path / "cache" / "gguf"
    assert len(calls) == 1 and (first / "config.json").is_file()
    assert config.pretrained_source() == str(gguf)
    model, spec = _model_from(config)
    assert spec.config.decoder["num_hidden_layers"] == 2


def _model_from(config):
    config = resolve_model_config(config)
    return new_model(config, (16,), 0, None)


def test_a_missing_gguf_package_file_is_a_recipe_error():
    from compress.models.causal_lm import model_folder

    config = TypeAdapter(ModelConfig).validate_python(
        {"architecture": "hf-causal-lm", "package": "compress", "gguf": "none.gguf"}
    )
    with pytest.raises(RecipeError, match="model.gguf: package 'compress' holds no file"):
        model_folder(config)


def _recipe(model: dict, stage: dict) -> dict:
    return {
        "name": "r",
        "data": {"source": "text-corpus", "files": ["t/*.txt"]}
        if model["architecture"] == "hf-causal-lm"
        else {"source": "sklearn-digits"},
        "model": model,
        "stages": [stage],
    }


def test_each_task_refuses_the_other_tasks_pruning_stage_at_load():
    """A decoder's generic `prune` (torch-pruning would cut layers unevenly and split query
    heads from their KV group) and a classifier's `prune-decoder` are exit-2 errors naming
    the stage and what to use instead."""
    from compress.recipe.loader import validate_recipe

    lm = {"architecture": "hf-causal-lm", "path": "llama"}
    with pytest.raises(RecipeError, match=r"stages\[0\] \(type 'prune'\).*use type = 'prune-dec"):
        validate_recipe(_recipe(lm, {"type": "prune", "finetune": {"epochs": 0}}))
    cnn = {"architecture": "cnn", "weights": "w.safetensors"}
    with pytest.raises(RecipeError, match=r"\(type 'prune-decoder'\).*use type = 'prune'"):
        validate_recipe(_recipe(cnn, {"type": "prune-decoder", "keep_layers": 1}))
    assert validate_recipe(_recipe(lm, {"type": "prune-decoder", "keep_layers": 1}))
