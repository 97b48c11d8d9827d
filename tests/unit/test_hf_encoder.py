"""The hf-encoder family on a tiny random BERT folder built in the test: pretrained
weights, kept layers, rebuild without the folder, masking, MACs, export + parity at
two sequence lengths, the warmup schedule and feature distillation."""

from __future__ import annotations

import shutil

import pytest
import torch

pytest.importorskip("transformers")

from compress.models import load_model, new_model, save_model  # noqa: E402
from compress.models.families.hf_encoder import HFEncoderConfig  # noqa: E402
from compress.models.family import load_pretrained_, resolve_model_config  # noqa: E402
from compress.models.hf_encoder import HFEncoderClassifier, init_from_teacher_  # noqa: E402
from compress.models.signature import InputSignature  # noqa: E402
from compress.models.stats import count_macs  # noqa: E402
from compress.recipe.schema import TrainingConfig  # noqa: E402
from compress.testing.text import tiny_bert_folder  # noqa: E402
from compress.training.features import FeatureDistiller  # noqa: E402
from compress.training.inference import predict_logits  # noqa: E402
from compress.training.optim import build_schedule  # noqa: E402

SIGNATURE = InputSignature.text(64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny", num_hidden_layers=3)


def _model(folder, **config):
    resolved = resolve_model_config(HFEncoderConfig(path=str(folder), **config))
    torch.manual_seed(0)
    model, spec = new_model(resolved, (16,), 2, SIGNATURE)
    load_pretrained_(model, resolved)
    return model.eval(), spec


def _batch(batch: int = 4, length: int = 10, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 64, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.int64)
    mask[0, length // 2 :] = 0
    return ids * mask, mask


def test_pretrained_weights_load_and_layers_are_renumbered(folder):
    from transformers import BertModel

    full = BertModel.from_pretrained(str(folder)).state_dict()
    model, spec = _model(folder, layers=[0, 2])
    state = model.encoder.state_dict()
    assert spec.config.encoder["num_hidden_layers"] == 2
    assert len(model.encoder.encoder.layer) == 2
    key = "encoder.layer.{}.attention.self.query.weight"
    assert torch.equal(state[key.format(1)], full[key.format(2)])
    assert torch.equal(state[key.format(0)], full[key.format(0)])
    assert torch.equal(
        state["embeddings.word_embeddings.weight"], full["embeddings.word_embeddings.weight"]
    )
    assert not any(k.startswith("pooler") for k in state)


def test_padding_does_not_change_the_logits(folder):
    model, _ = _model(folder)
    ids, mask = _batch(3, 8)
    padded_ids = torch.cat([ids, torch.zeros(3, 5, dtype=torch.int64)], 1)
    padded_mask = torch.cat([mask, torch.zeros(3, 5, dtype=torch.int64)], 1)
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), model(padded_ids, padded_mask), atol=1e-5)
    lengths = padded_mask.sum(1)
    sorted_trimmed = predict_logits(model, (padded_ids, padded_mask), 2, lengths=lengths)
    plain = predict_logits(model, (padded_ids, padded_mask))
    assert torch.allclose(sorted_trimmed, plain, atol=1e-5)


def test_saved_model_rebuilds_without_the_original_folder(folder, tmp_path):
    copy = tmp_path / "moved"
    shutil.copytree(folder, copy)
    model, spec = _model(copy, layers=[1, 2])
    save_model(model, spec, tmp_path / "stage")
    shutil.rmtree(copy)  # config.json and weights gone: model.json must be enough
    loaded, loaded_spec = load_model(tmp_path / "stage")
    ids, mask = _batch()
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask), model(ids, mask))
    assert loaded_spec.signature == SIGNATURE
    assert len(loaded.encoder.encoder.layer) == 2


def test_missing_folder_and_bad_layers_are_recipe_errors(folder, tmp_path):
    from compress.errors import RecipeError

    with pytest.raises(RecipeError, match="has no config.json"):
        resolve_model_config(HFEncoderConfig(path=str(tmp_path)))
    with pytest.raises(RecipeError, match=r"\[5\] out of range 0..2"):
        resolve_model_config(HFEncoderConfig(path=str(folder), layers=[0, 5]))
    with pytest.raises(RecipeError, match="is not installed"):
        resolve_model_config(HFEncoderConfig(package="no_such_package_here"))
    config = resolve_model_config(HFEncoderConfig(path=str(folder)))
    model, _ = new_model(config, (16,), 2, SIGNATURE)
    with pytest.raises(RecipeError, match="has 30522 tokens but the model's embedding table 64"):
        load_pretrained_(model, config, InputSignature.text(30522))


def test_student_starts_from_the_teachers_layers(folder):
    teacher, spec = _model(folder)
    student_config = resolve_model_config(HFEncoderConfig(layers=[0, 2]), spec.config)
    student, _ = new_model(student_config, (16,), 2, SIGNATURE)
    init_from_teacher_(student, teacher, [0, 2])
    t, s = teacher.encoder.encoder.layer, student.encoder.encoder.layer
    assert torch.equal(s[1].output.dense.weight, t[2].output.dense.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert not torch.equal(s[1].output.dense.weight, t[1].output.dense.weight)


def test_macs_count_attention_and_grow_with_the_sequence(folder):
    model, _ = _model(folder)
    short = count_macs(model, SIGNATURE)  # the signature's default length, 12
    linears = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    # per token each Linear once (classifier once per sample), plus attention scores
    hidden, heads_total, layers, tokens = 32, 32, 3, 12
    attention = layers * 2 * tokens * tokens * heads_total
    classifier = 32 * 2
    assert short == (linears - classifier) * tokens + classifier + attention
    assert hidden == model.encoder.config.hidden_size


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_export_keeps_batch_and_sequence_dynamic_with_parity(folder, tmp_path, attention):
    pytest.importorskip("onnxruntime")
    from compress.runtime.onnx_export import check_parity, export_onnx

    model, spec = _model(folder, attention=attention)
    path = export_onnx(model, spec.signature, tmp_path / "model.onnx")
    report = check_parity(model, path, spec.signature, [1, 3, 32], atol=1e-4, rtol=1e-4)
    lengths = {key.split("_")[3] for key in report}
    assert len(report) == 3 and len(lengths) >= 2  # at least two sequence lengths
    assert max(report.values()) < 1e-4
    declared = InputSignature.from_onnx(path)
    assert declared.names == ["input_ids", "attention_mask"]
    assert [i.dtype for i in declared.inputs] == ["int64", "int64"]
    assert all(isinstance(d, str) for i in declared.inputs for d in i.shape)


def test_warmup_schedule_ramps_up_then_decays_to_zero_per_batch():
    config = TrainingConfig(
        epochs=2,
        optimizer={"name": "adamw", "lr": 1.0},
        schedule={"name": "warmup", "warmup_fraction": 0.25},
    )
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1.0)
    schedule = build_schedule(optimizer, config.schedule, config.epochs, steps_per_epoch=4)
    used = []
    for _ in range(8):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_batch()
    schedule.step_epoch()  # per-batch schedules ignore the epoch step
    assert used[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert used[2:] == pytest.approx([1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)


def test_feature_distillation_is_zero_for_a_copy_and_trains_otherwise(folder):
    teacher, _ = _model(folder)
    student = HFEncoderClassifier(teacher_config(teacher), (16,), 2)
    student.load_state_dict(teacher.state_dict())
    distiller = FeatureDistiller(student, teacher, [[1, 1], [3, 3]], weight=2.0)
    ids, mask = _batch()
    distiller.teacher_forward((ids, mask))
    student.eval()(ids, mask)
    assert float(distiller.loss().detach()) == pytest.approx(0.0, abs=1e-10)
    with torch.no_grad():  # random, not constant: LayerNorm would cancel a constant shift
        weight = student.encoder.encoder.layer[0].output.dense.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    student(ids, mask)
    loss = distiller.loss()
    loss.backward()
    assert float(loss.detach()) > 1e-3
    assert student.encoder.encoder.layer[0].output.dense.weight.grad.abs().sum() > 0
    distiller.close()
    with pytest.raises(Exception, match="hidden states 0..3"):
        FeatureDistiller(student, teacher, [[4, 1]], 1.0)


def teacher_config(model):
    from compress.models import spec_of

    return spec_of(model).config
