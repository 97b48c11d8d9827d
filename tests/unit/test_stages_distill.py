"""The distill stage: a new student architecture trained against the frozen current model."""

from __future__ import annotations

import copy

import pytest
import torch

from compress.models import build_model
from compress.models.stats import count_params
from compress.recipe.schema import CNNConfig, MobileNetConfig, TrainingConfig
from compress.recipe.stages import DistillStageConfig
from compress.stages.base import seed_everything
from compress.stages.distill import DistillStage
from compress.testing import tiny_run_context
from compress.training import evaluate, fit

pytestmark = pytest.mark.unit

OPTIMIZER = {"name": "adam", "lr": 0.01}


@pytest.fixture(scope="module")
def teacher(digits_bundle, tmp_path_factory):
    """A CNN [8, 16] trained 2 epochs on digits."""
    ctx = tiny_run_context(tmp_path_factory.mktemp("teacher"), digits_bundle)
    fit(
        ctx.model,
        digits_bundle,
        TrainingConfig(epochs=2, batch_size=32, optimizer=OPTIMIZER),
        seed=0,
    )
    return ctx.model.eval()


def _config(**fields) -> DistillStageConfig:
    fields.setdefault("student", {"architecture": "cnn", "widths": [4, 8]})
    return DistillStageConfig.model_validate(
        {"type": "distill", "epochs": 1, "batch_size": 32, "optimizer": OPTIMIZER, **fields}
    )


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal_states(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_student_has_the_new_architecture_and_its_spec(tmp_path, digits_bundle, teacher):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=copy.deepcopy(teacher))
    config = _config(student={"architecture": "mobilenet", "stem_width": 4, "widths": [8]})

    result = DistillStage(config, "distill").run(ctx)

    student, spec = result.model, result.spec
    assert type(student).__name__ == "MobileNet" and type(ctx.model).__name__ == "CNN"
    assert spec.config == MobileNetConfig(stem_width=4, widths=[8])
    assert (spec.input_shape, spec.num_classes) == ((1, 8, 8), 10)
    assert student is not ctx.model
    assert student(digits_bundle.val.x[:3]).shape == (3, 10)
    assert not student.training
    distillation = result.details["distillation"]
    assert distillation["student_params"] == count_params(student) < count_params(teacher)
    assert distillation["teacher_params"] == count_params(teacher) == 1_442
    assert (distillation["temperature"], distillation["alpha"]) == (4.0, 0.9)  # defaults
    assert distillation["teacher_val_accuracy"] == evaluate(teacher, digits_bundle.val)["accuracy"]
    assert result.details["training"]["epochs_run"] == 1


def test_teacher_weights_and_mode_are_unchanged(tmp_path, digits_bundle, teacher):
    model = copy.deepcopy(teacher)
    before = _state(model)
    ctx = tiny_run_context(tmp_path, digits_bundle, model=model)

    result = DistillStage(_config(alpha=0.9, temperature=2.0), "distill").run(ctx)

    assert _equal_states(_state(model), before)  # BatchNorm statistics included
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert result.model is not model


def test_alpha_zero_trains_exactly_like_cross_entropy(tmp_path, digits_bundle, teacher):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=copy.deepcopy(teacher))
    config = _config(alpha=0.0, temperature=7.0)
    # the same student and training without a teacher: seeded as Stage.run seeds
    seed_everything(ctx.seed)
    plain = build_model(CNNConfig(widths=[4, 8]), (1, 8, 8), 10)
    plain_result = fit(plain, digits_bundle, config, seed=ctx.seed)

    result = DistillStage(config, "distill").run(ctx)

    history = result.details["training"]["history"]
    assert history == plain_result.history  # train_loss is the cross-entropy
    assert _equal_states(_state(result.model), _state(plain))


def test_alpha_above_zero_learns_from_the_teacher(tmp_path, digits_bundle, teacher):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=copy.deepcopy(teacher))
    config = _config(alpha=0.9, temperature=4.0)
    seed_everything(ctx.seed)
    plain = build_model(CNNConfig(widths=[4, 8]), (1, 8, 8), 10)
    plain_result = fit(plain, digits_bundle, config, seed=ctx.seed)

    result = DistillStage(config, "distill").run(ctx)

    distilled_loss = result.details["training"]["history"][0]["train_loss"]
    assert distilled_loss != pytest.approx(plain_result.history[0]["train_loss"], rel=1e-3)
    assert not _equal_states(_state(result.model), _state(plain))
