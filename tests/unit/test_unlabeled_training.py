"""The training loop on data without labels: it distils with alpha = 1, validates by
agreement with the teacher, and refuses whatever would read a label."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from compress.data.bundle import Split
from compress.errors import StageError
from compress.recipe.schema import TrainingConfig
from compress.recipe.stages import DistillConfig
from compress.testing import TinyCNN, tiny_bundle
from compress.training import fit
from compress.training.losses import distillation_loss, kd_loss
from compress.training.stopping import EarlyStopping

pytestmark = pytest.mark.unit


def _unlabeled(bundle):
    def strip(split: Split) -> Split:
        return Split(split.x, torch.full_like(split.y, -1), labeled=False)

    splits = {name: strip(getattr(bundle, name)) for name in ("train", "val", "test")}
    return dataclasses.replace(bundle, **splits, labeled=False)


def _teacher(data):
    torch.manual_seed(1)
    teacher = TinyCNN(data.num_classes)
    fit(teacher, data, TrainingConfig(epochs=4, batch_size=16), seed=0)
    return teacher.eval()


def test_distillation_loss_reads_no_labels_at_alpha_one():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    unlabeled = torch.full((4,), -1)

    assert torch.equal(distillation_loss(s, t, unlabeled, 4.0, 1.0), kd_loss(s, t, 4.0))
    with pytest.raises(IndexError):  # alpha < 1 would read them
        distillation_loss(s, t, unlabeled, 4.0, 0.9)


def test_a_student_learns_from_the_teacher_alone_judged_by_agreement():
    labeled = tiny_bundle(per_class=(32, 16, 16))
    teacher = _teacher(labeled)
    data = _unlabeled(labeled)
    torch.manual_seed(0)
    student = TinyCNN(data.num_classes)

    config = TrainingConfig(epochs=8, batch_size=16, optimizer={"name": "adam", "lr": 0.01})
    result = fit(student, data, config, seed=0, teacher=teacher, distill=DistillConfig(alpha=1.0))

    history = result.history
    assert all(m["val_accuracy"] is None and m["val_loss"] is None for m in history)
    best = max(m["val_agreement"] for m in history)
    assert result.best["val_agreement"] == best > 0.6  # 3 classes: chance is 1/3
    assert history[-1]["val_kd_loss"] < history[0]["val_kd_loss"]
    agree = (student(data.val.x).argmax(1) == teacher(data.val.x).argmax(1)).float().mean()
    if result.batch_norm is None or not result.batch_norm["kept"]:  # the best epoch's weights
        assert float(agree) == pytest.approx(best)
    assert result.summary()["best_val_agreement"] == best


@pytest.mark.parametrize(
    ("distill", "teacher", "stopping", "match"),
    [
        (DistillConfig(alpha=0.9), True, None, "alpha = 1"),
        (None, False, None, "alpha = 1"),
        (DistillConfig(alpha=1.0), True, {"monitor": "val_accuracy"}, "monitor val_agreement"),
    ],
    ids=["alpha", "no-teacher", "monitor"],
)
def test_what_reads_labels_is_a_stage_error(distill, teacher, stopping, match):
    data = _unlabeled(tiny_bundle())
    model = TinyCNN(data.num_classes)
    config = TrainingConfig(epochs=1, batch_size=16, early_stopping=stopping)

    with pytest.raises(StageError, match=match):
        fit(model, data, config, seed=0, teacher=model if teacher else None, distill=distill)


def test_without_labels_the_best_epoch_is_the_best_agreement_ties_by_kd_loss():
    stopper = EarlyStopping(None, labeled=False)

    assert (stopper.monitor, stopper.mode, stopper.tie_breaker) == (
        "val_agreement", "max", "val_kd_loss"
    )  # fmt: skip
    assert stopper.improved(0.8, 0.5)
    assert stopper.improved(0.8, 0.4)  # the same agreement, closer to the teacher
    assert not stopper.improved(0.8, 0.45)
    assert not stopper.improved(0.7, 0.1)
