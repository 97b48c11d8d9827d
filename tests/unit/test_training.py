"""The training loop: optimizers, LR schedules, early stopping, non-finite losses, KD loss."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

import compress.training.inference as inference
import compress.training.loop as loop
import compress.training.validation as validation
from compress.errors import StageError
from compress.recipe.schema import (
    AdagradConfig,
    AdamConfig,
    BatchNormConfig,
    ConstantSchedule,
    CosineSchedule,
    EarlyStoppingConfig,
    ExponentialSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    RMSPropConfig,
    SGDConfig,
    StepSchedule,
    TrainingConfig,
)
from compress.testing import TinyCNN, tiny_bundle
from compress.training import (
    EarlyStopping,
    build_optimizer,
    build_schedule,
    distillation_loss,
    fit,
)

pytestmark = pytest.mark.unit


def _model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(num_classes=3)


# --------------------------------------------------------------------------- optimizers


OPTIMIZERS = [
    (
        SGDConfig(name="sgd", lr=0.1, weight_decay=0.01),
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.0, nesterov=False, dampening=0.0, weight_decay=0.01),
    ),
    (
        SGDConfig(name="momentum", lr=0.1, dampening=0.1),
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, nesterov=False, dampening=0.1, weight_decay=0.0),
    ),
    (
        SGDConfig(name="nesterov", lr=0.05, momentum=0.8),
        torch.optim.SGD,
        dict(lr=0.05, momentum=0.8, nesterov=True, dampening=0.0, weight_decay=0.0),
    ),
    (
        AdamConfig(name="adam", lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
        torch.optim.Adam,
        dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    ),
    (
        AdamConfig(name="adamw", lr=0.01, betas=(0.85, 0.95), weight_decay=0.1),
        torch.optim.AdamW,
        dict(lr=0.01, betas=(0.85, 0.95), eps=1e-8, weight_decay=0.1),
    ),
    (
        RMSPropConfig(
            name="rmsprop",
            lr=0.01,
            alpha=0.9,
            eps=1e-7,
            momentum=0.5,
            centered=True,
            weight_decay=0.001,
        ),
        torch.optim.RMSprop,
        dict(lr=0.01, alpha=0.9, eps=1e-7, momentum=0.5, centered=True, weight_decay=0.001),
    ),
    (
        AdagradConfig(name="adagrad", lr=0.1, lr_decay=0.01, eps=1e-9, weight_decay=0.001),
        torch.optim.Adagrad,
        dict(lr=0.1, lr_decay=0.01, eps=1e-9, weight_decay=0.001),
    ),
]


@pytest.mark.parametrize(
    ("config", "torch_class", "hyper"), OPTIMIZERS, ids=[c.name for c, _, _ in OPTIMIZERS]
)
def test_optimizer_is_the_torch_class_with_the_recipe_hyperparameters(config, torch_class, hyper):
    optimizer = build_optimizer(_model().parameters(), config)

    assert type(optimizer) is torch_class
    group = optimizer.param_groups[0]
    assert {key: group[key] for key in hyper} == hyper


@pytest.mark.parametrize(
    ("config", "torch_class", "hyper"), OPTIMIZERS, ids=[c.name for c, _, _ in OPTIMIZERS]
)
def test_optimizer_steps_exactly_like_the_torch_class(config, torch_class, hyper):
    ours, reference = _model(), _model()
    initial = copy.deepcopy(ours.state_dict())
    optimizers = [
        build_optimizer(ours.parameters(), config),
        torch_class(reference.parameters(), **hyper),
    ]
    x, y = ours.example_inputs(batch_size=8)[0], torch.arange(8) % 3

    for _ in range(3):  # several steps, so momentum and running averages matter
        for model, optimizer in zip((ours, reference), optimizers):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

    for (name, ours_p), ref_p in zip(ours.named_parameters(), reference.parameters()):
        assert torch.equal(ours_p, ref_p), name
        assert not torch.equal(ours_p, initial[name]), f"{name} did not move"


def test_sgd_names_set_momentum_defaults():
    assert (SGDConfig(name="sgd").momentum, SGDConfig(name="sgd").nesterov) == (0.0, False)
    assert (SGDConfig(name="momentum").momentum, SGDConfig(name="momentum").nesterov) == (
        0.9,
        False,
    )
    assert (SGDConfig(name="nesterov").momentum, SGDConfig(name="nesterov").nesterov) == (
        0.9,
        True,
    )


def test_nesterov_without_momentum_is_rejected():
    with pytest.raises(ValueError, match="nesterov needs momentum > 0"):
        SGDConfig(name="sgd", nesterov=True)


# --------------------------------------------------------------------------- schedules


def _lrs(config, epochs: int, steps_per_epoch: int = 1, lr: float = 0.1) -> list[float]:
    """The LR each batch ran with, driving the schedule the way `fit` does."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    schedule = build_schedule(optimizer, config, epochs, steps_per_epoch)
    seen = []
    for _ in range(epochs):
        for _ in range(steps_per_epoch):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.step_batch()
        schedule.step_epoch()
    return seen


def _torch_lrs(make, epochs: int, steps: int, lr: float = 0.1) -> list[float]:
    """The same for a torch scheduler stepped `steps` times in total."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    scheduler = make(optimizer)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


EPOCH_SCHEDULES = [
    (
        StepSchedule(name="step", step_size=2, gamma=0.5),
        lambda o: lr_scheduler.StepLR(o, 2, 0.5),
        [0.1, 0.1, 0.05, 0.05, 0.025, 0.025],
    ),
    (
        MultiStepSchedule(name="multistep", milestones=[2, 5], gamma=0.1),
        lambda o: lr_scheduler.MultiStepLR(o, [2, 5], 0.1),
        [0.1, 0.1, 0.01, 0.01, 0.01, 0.001],
    ),
    (
        ExponentialSchedule(name="exponential", gamma=0.5),
        lambda o: lr_scheduler.ExponentialLR(o, 0.5),
        [0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125],
    ),
    (
        CosineSchedule(name="cosine", eta_min=0.01),
        lambda o: lr_scheduler.CosineAnnealingLR(o, 6, 0.01),
        [0.01 + 0.09 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)],
    ),
    (ConstantSchedule(), lambda o: lr_scheduler.LambdaLR(o, lambda e: 1.0), [0.1] * 6),
]


@pytest.mark.parametrize(
    ("config", "make", "by_hand"), EPOCH_SCHEDULES, ids=[c.name for c, _, _ in EPOCH_SCHEDULES]
)
def test_epoch_schedule_matches_torch_and_hand_values(config, make, by_hand):
    ours = _lrs(config, epochs=6, steps_per_epoch=3)

    per_epoch = ours[::3]
    assert all(ours[i] == ours[i - i % 3] for i in range(len(ours)))  # constant within an epoch
    assert per_epoch == pytest.approx(_torch_lrs(make, 6, 6), rel=1e-12)
    assert per_epoch == pytest.approx(by_hand, rel=1e-9)


def test_onecycle_steps_per_batch_like_torch():
    config = OneCycleSchedule(name="onecycle", max_lr=0.2, pct_start=0.25)

    ours = _lrs(config, epochs=3, steps_per_epoch=4)

    reference = _torch_lrs(
        lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=12, pct_start=0.25), 3, 12
    )
    assert ours == pytest.approx(reference, rel=1e-12)
    assert ours[0] == pytest.approx(0.2 / 25)  # torch's default div_factor
    assert max(ours) == pytest.approx(0.2)
    assert len(set(ours[:4])) == 4  # changes within the first epoch


def test_onecycle_peaks_at_the_optimizer_lr_by_default():
    ours = _lrs(OneCycleSchedule(name="onecycle"), epochs=2, steps_per_epoch=4, lr=0.05)

    assert max(ours) == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("config", "by_hand"),
    [
        (
            CosineSchedule(name="cosine", warmup_epochs=2),
            [0.01, 0.055] + [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)],
        ),
        (
            StepSchedule(name="step", step_size=2, gamma=0.5, warmup_epochs=2),
            [0.01, 0.055, 0.1, 0.1, 0.05, 0.05],
        ),
        (ConstantSchedule(warmup_epochs=3), [0.01, 0.04, 0.07, 0.1, 0.1, 0.1]),
    ],
    ids=["cosine", "step", "constant"],
)
def test_warmup_ramps_linearly_from_a_tenth_then_runs_the_schedule(config, by_hand):
    ours = _lrs(config, epochs=6)

    assert ours == pytest.approx(by_hand, rel=1e-9)


def test_fit_records_the_lr_each_epoch_ran_with():
    config = TrainingConfig(
        epochs=4,
        batch_size=16,
        optimizer=SGDConfig(lr=0.1),
        schedule=StepSchedule(name="step", step_size=1, gamma=0.5),
    )

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert [h["lr"] for h in result.history] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


# --------------------------------------------------------------------------- early stopping


def _scripted_evaluate(monkeypatch, accuracies, losses=None):
    """Make `fit` see these validation metrics, one per epoch, whatever the model does."""
    values = iter(zip(accuracies, losses or [1.0] * len(accuracies)))

    def evaluate(model, split):
        accuracy, loss = next(values)
        return {"accuracy": accuracy, "loss": loss}

    monkeypatch.setattr(validation, "evaluate", evaluate)


def _fit_with_snapshots(config):
    snapshots = {}
    model = _model()
    # the closing BatchNorm recalibration would change the restored statistics: these
    # tests are about which epoch's weights come back
    config = config.model_copy(update={"batch_norm": BatchNormConfig(recalibrate=False)})

    def on_epoch_end(epoch, metrics):
        snapshots[epoch] = copy.deepcopy(model.state_dict())

    result = fit(model, tiny_bundle(), config, seed=0, on_epoch_end=on_epoch_end)
    return model, result, snapshots


def _same_weights(state_a, state_b) -> bool:
    return all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.5, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3])
    config = TrainingConfig(epochs=8, batch_size=16, early_stopping=EarlyStoppingConfig(patience=1))

    model, result, snapshots = _fit_with_snapshots(config)

    last = max(snapshots)
    assert result.best_epoch == 2
    assert result.best["val_accuracy"] == 0.8
    assert last < 8 and len(result.history) == last
    assert result.stop_reason.startswith(f"stopped early at epoch {last}: no val_accuracy")
    assert _same_weights(model.state_dict(), snapshots[2])
    assert not _same_weights(model.state_dict(), snapshots[last])


def test_patience_counts_epochs_without_improvement_like_lightning(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.5, 0.8, 0.7, 0.7, 0.7, 0.7])
    config = TrainingConfig(epochs=6, batch_size=16, early_stopping=EarlyStoppingConfig(patience=2))

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert len(result.history) == 4  # epochs 3 and 4 did not improve: patience 2 is spent


def test_without_early_stopping_all_epochs_run_and_the_best_is_kept(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.3, 0.9, 0.4])
    config = TrainingConfig(epochs=3, batch_size=16)

    model, result, snapshots = _fit_with_snapshots(config)

    assert len(result.history) == 3
    assert result.stop_reason == "completed all epochs"
    assert result.best_epoch == 2
    assert _same_weights(model.state_dict(), snapshots[2])


def test_equal_accuracy_with_lower_loss_is_an_improvement(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.5, 0.8, 0.8, 0.8], [1.0, 0.9, 0.7, 0.8])
    config = TrainingConfig(epochs=4, batch_size=16)

    model, result, snapshots = _fit_with_snapshots(config)

    assert result.best_epoch == 3
    assert _same_weights(model.state_dict(), snapshots[3])


def test_val_loss_monitor_keeps_the_lowest_loss(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.9, 0.5, 0.6], [0.8, 0.3, 0.5])
    config = TrainingConfig(
        epochs=3,
        batch_size=16,
        early_stopping=EarlyStoppingConfig(monitor="val_loss", patience=5),
    )

    model, result, snapshots = _fit_with_snapshots(config)

    assert result.best_epoch == 2
    assert result.best["val_loss"] == 0.3
    assert _same_weights(model.state_dict(), snapshots[2])


def test_divergence_threshold_stops_at_once(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.6, 0.2, 0.9, 0.9], [1.0, 1.0, 1.0, 1.0])
    config = TrainingConfig(
        epochs=4,
        batch_size=16,
        early_stopping=EarlyStoppingConfig(patience=10, divergence_threshold=0.3),
    )

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert len(result.history) == 2
    assert result.stop_reason == (
        "stopped early at epoch 2: val_accuracy = 0.2 crossed divergence threshold 0.3"
    )
    assert result.best_epoch == 1


def test_min_delta_ignores_small_improvements():
    stopper = EarlyStopping(EarlyStoppingConfig(min_delta=0.05))

    decisions = [stopper.improved(v) for v in (0.5, 0.54, 0.56, 0.6)]

    assert decisions == [True, False, True, False]
    assert stopper.best == 0.56
    assert stopper.bad_epochs == 1


def test_min_mode_for_loss():
    stopper = EarlyStopping(EarlyStoppingConfig(monitor="val_loss"))

    decisions = [stopper.improved(v) for v in (1.0, 1.1, 0.9)]

    assert stopper.mode == "min"
    assert decisions == [True, False, True]


def test_non_finite_monitor_value_stops():
    assert EarlyStopping(None).stop_reason(math.nan) == "val_accuracy is nan"
    assert EarlyStopping(None).stop_reason(0.5) is None


# --------------------------------------------------------------------------- fit


def test_non_finite_loss_raises_stage_error_naming_the_epoch():
    data = tiny_bundle()
    data.train.x[5, 0, 0, 0] = math.nan

    with pytest.raises(StageError) as info:
        fit(_model(), data, TrainingConfig(epochs=2, batch_size=16), seed=0)

    assert str(info.value).startswith("epoch 1: training loss became nan (non-finite)")
    assert "lower the learning rate or add grad_clip" in str(info.value)


def test_exploding_learning_rate_raises_stage_error():
    config = TrainingConfig(epochs=3, batch_size=8, optimizer=SGDConfig(lr=1e30))

    with pytest.raises(StageError) as info:
        fit(_model(), tiny_bundle(), config, seed=0)

    assert str(info.value).startswith("epoch 1: training loss became")


def test_fit_is_deterministic_for_a_seed():
    config = TrainingConfig(epochs=2, batch_size=16, optimizer=AdamConfig(name="adam", lr=0.01))
    first, second, other = _model(), _model(), _model()

    history_a = fit(first, tiny_bundle(), config, seed=3).history
    history_b = fit(second, tiny_bundle(), config, seed=3).history
    fit(other, tiny_bundle(), config, seed=4)

    assert history_a == history_b
    assert _same_weights(first.state_dict(), second.state_dict())
    assert not _same_weights(first.state_dict(), other.state_dict())


def test_channels_last_trains_in_nhwc_and_hands_back_the_default_layout():
    data = tiny_bundle()
    base = dict(epochs=2, batch_size=16, optimizer=AdamConfig(name="adam", lr=0.01))
    layouts_seen = {}

    def record(model):
        def on_epoch_end(epoch, _metrics):
            conv_weights = [p for p in model.parameters() if p.ndim == 4]
            layouts_seen[id(model)] = all(
                w.is_contiguous(memory_format=torch.channels_last) for w in conv_weights
            )

        return on_epoch_end

    nhwc, nchw = _model(), _model()
    history_nhwc = fit(nhwc, data, TrainingConfig(**base), seed=0, on_epoch_end=record(nhwc))
    history_nchw = fit(
        nchw, data, TrainingConfig(**base, channels_last=False), seed=0,
        on_epoch_end=record(nchw),
    ).history  # fmt: skip

    assert layouts_seen == {id(nhwc): True, id(nchw): False}
    assert all(p.is_contiguous() for p in nhwc.parameters())  # exporters expect NCHW
    for a, b in zip(history_nhwc.history, history_nchw):  # same maths, other summation order
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)


def test_fit_learns_and_never_reads_the_test_split():
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"fit read data.test.{name}")

        def __len__(self):
            raise AssertionError("fit read len(data.test)")

    data = tiny_bundle()
    data.test = Untouchable()
    config = TrainingConfig(epochs=5, batch_size=8, optimizer=AdamConfig(name="adam", lr=0.01))

    result = fit(_model(), data, config, seed=0)

    assert result.best["val_accuracy"] >= 0.9  # separable patterns: far above chance (1/3)


# --------------------------------------------------------------------------- distillation loss


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_distillation_loss_matches_the_formula_by_hand():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    teacher = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 3
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    temperature, alpha = 3.0, 0.7

    loss = distillation_loss(student, teacher, labels, temperature, alpha)

    s, t, y = student.numpy(), teacher.numpy(), labels.numpy()
    p_teacher = _softmax(t / temperature)
    p_student = _softmax(s / temperature)
    kl = np.sum(p_teacher * (np.log(p_teacher) - np.log(p_student))) / len(s)
    ce = -np.mean(np.log(_softmax(s)[np.arange(len(s)), y]))
    expected = alpha * temperature**2 * kl + (1 - alpha) * ce
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_distillation_loss_with_alpha_zero_is_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    student, teacher = (
        torch.randn(4, 3, generator=generator),
        torch.randn(4, 3, generator=generator),
    )
    labels = torch.tensor([0, 2, 1, 2])

    loss = distillation_loss(student, teacher, labels, temperature=4.0, alpha=0.0)

    assert torch.equal(loss, F.cross_entropy(student, labels))


def test_distillation_loss_is_zero_when_student_copies_teacher_and_alpha_is_one():
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))

    loss = distillation_loss(logits, logits.clone(), torch.tensor([0, 1, 2, 0]), 2.0, 1.0)

    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_fit_with_teacher_trains_on_the_distillation_loss(monkeypatch):
    calls = []
    original = loop.distillation_loss

    def spy(student, teacher, labels, temperature, alpha):
        calls.append((temperature, alpha, teacher.detach().clone()))
        return original(student, teacher, labels, temperature, alpha)

    monkeypatch.setattr(loop, "distillation_loss", spy)
    from compress.recipe.stages import DistillConfig

    teacher = _model(seed=1).eval()
    data = tiny_bundle()
    config = TrainingConfig(epochs=1, batch_size=48)

    fit(_model(), data, config, seed=0, teacher=teacher, distill=DistillConfig(temperature=2.0))

    assert len(calls) == 1
    temperature, alpha, seen = calls[0]
    assert (temperature, alpha) == (2.0, 0.9)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = teacher(data.train.x[order])
    assert torch.allclose(seen, expected, atol=1e-6)


def test_teacher_logits_are_computed_once_per_teacher_weights_and_inputs(monkeypatch):
    from compress.recipe.stages import DistillConfig

    memo = inference.TeacherLogits()
    monkeypatch.setattr(loop, "teacher_logits_memo", memo)
    predictions = []
    original = inference.predict_logits

    def counting(model, x, batch_size=512):
        predictions.append(len(inference.as_inputs(x)[0]))
        return original(model, x, batch_size)

    monkeypatch.setattr(inference, "predict_logits", counting)
    teacher, data = _model(seed=1).eval(), tiny_bundle()
    # without the closing recalibration, which validates twice more
    config = TrainingConfig(epochs=1, batch_size=16, batch_norm={"recalibrate": False})
    distill = DistillConfig()
    n_train, n_val = len(data.train.x), len(data.val.x)

    fit(_model(), data, config, seed=0, teacher=teacher, distill=distill)
    fit(_model(), data, config, seed=1, teacher=copy.deepcopy(teacher), distill=distill)
    assert predictions.count(n_train) == 1  # the second fit (same weights) reused them
    assert predictions.count(n_val) == 2  # validation is never cached

    with torch.no_grad():
        next(teacher.parameters()).add_(0.5)  # other weights: other logits
    fit(_model(), data, config, seed=0, teacher=teacher, distill=distill)
    assert predictions.count(n_train) == 2
    with torch.no_grad():
        expected = teacher(data.train.x)
    assert torch.allclose(memo.get(teacher, data.train.x), expected, atol=1e-5)


# --------------------------------------------------------------------------- epoch checkpoints


class _Crash(Exception):
    """Stands in for a kill after some epoch."""


@pytest.mark.parametrize(
    "optimizer, schedule",
    [
        (AdamConfig(name="adam", lr=0.01), OneCycleSchedule(name="onecycle")),
        (SGDConfig(name="nesterov", lr=0.05), CosineSchedule(name="cosine", warmup_epochs=1)),
        (RMSPropConfig(name="rmsprop", lr=0.005), StepSchedule(name="step", step_size=2)),
    ],
    ids=["adam+onecycle", "nesterov+warmup-cosine", "rmsprop+step"],
)
def test_a_fit_resumed_from_its_epoch_checkpoint_equals_an_uninterrupted_one(
    tmp_path, optimizer, schedule
):
    from compress.training.checkpoint import EpochCheckpoint

    data = tiny_bundle()
    config = TrainingConfig(
        epochs=5, batch_size=16, optimizer=optimizer, schedule=schedule, augment="crop-flip"
    )
    torch.manual_seed(0)
    start = TinyCNN()
    uninterrupted = copy.deepcopy(start)
    expected = fit(uninterrupted, data, config, seed=1)

    def crash_after_3(epoch, _metrics):
        if epoch == 3:
            raise _Crash

    checkpoint = EpochCheckpoint(tmp_path / "fit-1")
    with pytest.raises(_Crash):
        fit(copy.deepcopy(start), data, config, seed=1, checkpoint=checkpoint,
            on_epoch_end=crash_after_3)  # fmt: skip
    resumed_model = copy.deepcopy(start)  # a new process starts from the same weights
    resumed = fit(
        resumed_model, data, config, seed=1, checkpoint=EpochCheckpoint(tmp_path / "fit-1")
    )

    assert resumed.resumed_from_epoch == 2  # epoch 3's checkpoint is written after the callback
    assert resumed.history == expected.history
    assert resumed.best_epoch == expected.best_epoch
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[name], tensor), name


def test_an_epoch_checkpoint_of_other_weights_or_a_torn_write_is_ignored(tmp_path):
    from compress.training.checkpoint import EpochCheckpoint

    data = tiny_bundle()
    config = TrainingConfig(epochs=2, batch_size=16)
    torch.manual_seed(0)
    model = TinyCNN()
    fit(copy.deepcopy(model), data, config, seed=1, checkpoint=EpochCheckpoint(tmp_path / "a"))

    other = TinyCNN()  # different starting weights: a different fit call
    result = fit(other, data, config, seed=1, checkpoint=EpochCheckpoint(tmp_path / "a"))
    assert result.resumed_from_epoch is None

    torn = tmp_path / "a" / "state.safetensors"  # the JSON no longer matches its tensors
    torn.write_bytes(torn.read_bytes()[:-8] + b"\0" * 8)
    result = fit(
        copy.deepcopy(model), data, config, seed=1, checkpoint=EpochCheckpoint(tmp_path / "a")
    )
    assert result.resumed_from_epoch is None


# --------------------------------------------------------------------------- divergence guard


def test_a_diverging_loss_fails_the_fit_naming_the_epoch_the_loss_and_the_setting():
    config = TrainingConfig(epochs=3, batch_size=16, optimizer=AdamConfig(name="adam", lr=1e6))
    epochs_seen = []

    with pytest.raises(StageError) as info:
        fit(
            _model(), tiny_bundle(), config, seed=0, on_epoch_end=lambda e, m: epochs_seen.append(e)
        )

    message = str(info.value)
    assert message.startswith("epoch 1: training loss ")
    assert "training diverged; lower the learning rate or add grad_clip" in message
    assert "(divergence_factor = 10; 0 turns this check off)" in message
    assert epochs_seen == [1]  # the diverged epoch is shown, and nothing after it runs


def test_divergence_factor_zero_lets_a_finite_diverging_loss_train_on():
    config = TrainingConfig(
        epochs=2,
        batch_size=16,
        optimizer=AdamConfig(name="adam", lr=1e6),
        divergence_factor=0,
        chance_patience_epochs=0,
    )

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert len(result.history) == 2
    assert result.history[0]["train_loss"] > 1e3


def test_the_starting_loss_is_at_least_a_uniform_guess_so_fine_tunes_are_not_stopped():
    guard = loop.DivergenceGuard(TrainingConfig(), num_classes=10)
    guard.start(0.01)  # a fine-tune of a trained model starts near 0

    ordinary_noise = guard.check(1, train_loss=0.5, val_accuracy=0.9)
    diverged = guard.check(2, train_loss=23.1, val_accuracy=0.9)

    assert ordinary_noise is None
    assert diverged.startswith(
        "epoch 2: training loss 23.1 is over 10x ln(10) = 2.303, a uniform guess's loss "
        "(it started at 0.01): training diverged"
    )


def test_a_loss_above_a_start_higher_than_ln_c_is_measured_from_the_start():
    guard = loop.DivergenceGuard(TrainingConfig(divergence_factor=4), num_classes=10)
    guard.start(10.5)  # distillation at T=4 starts far above ln(10) (measured on digits)

    assert guard.check(1, train_loss=41.0, val_accuracy=0.5) is None
    assert "over 4x its starting value 10.5" in guard.check(2, train_loss=42.5, val_accuracy=0.5)


def test_accuracy_at_chance_for_the_patience_fails_the_fit(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.34, 0.30, 0.35, 0.33, 0.9])  # 3 classes: chance 1/3
    config = TrainingConfig(epochs=5, batch_size=16, chance_patience_epochs=4)

    with pytest.raises(StageError) as info:
        fit(_model(), tiny_bundle(), config, seed=0)

    assert str(info.value) == (
        "epoch 4: validation accuracy 33.00% has been at chance level (1/3 = 33.33%, "
        "+2 points) for 4 epochs in a row: the model is not learning; check the labels and "
        "the learning rate (chance_patience_epochs = 4; 0 turns this check off)"
    )


def test_an_epoch_above_chance_resets_the_count(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.33, 0.33, 0.6, 0.33, 0.33])
    config = TrainingConfig(epochs=5, batch_size=16, chance_patience_epochs=3)

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert len(result.history) == 5 and result.best_epoch == 3


def test_short_runs_at_chance_do_not_trip_the_default(monkeypatch):
    _scripted_evaluate(monkeypatch, [0.33, 0.33, 0.33, 0.33])
    config = TrainingConfig(epochs=4, batch_size=16)

    result = fit(_model(), tiny_bundle(), config, seed=0)

    assert TrainingConfig().chance_patience_epochs == 5
    assert len(result.history) == 4


def test_one_class_data_turns_both_rules_off():
    guard = loop.DivergenceGuard(TrainingConfig(chance_patience_epochs=1), num_classes=1)
    guard.start(0.0)

    assert guard.check(1, train_loss=0.0, val_accuracy=1.0) is None


def test_a_resumed_guard_counts_the_epochs_at_chance_it_had_seen():
    guard = loop.DivergenceGuard(TrainingConfig(chance_patience_epochs=3), num_classes=4)
    history = [
        {"train_loss": 1.5, "val_accuracy": 0.6},
        {"train_loss": 1.4, "val_accuracy": 0.25},
        {"train_loss": 1.3, "val_accuracy": 0.26},
    ]

    guard.resume(history)

    assert guard.start_loss == 1.5 and guard.chance_epochs == 2
    assert "for 3 epochs in a row" in guard.check(4, train_loss=1.2, val_accuracy=0.2)


@pytest.mark.parametrize("factor", [0.5, 1.0, -1.0])
def test_a_divergence_factor_that_is_not_a_multiple_is_a_recipe_error(factor):
    with pytest.raises(ValueError) as info:
        TrainingConfig(divergence_factor=factor)

    assert "divergence_factor" in str(info.value)
