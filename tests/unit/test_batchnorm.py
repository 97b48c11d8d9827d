"""BatchNorm recalibration: what it re-estimates, what it leaves alone, when it keeps
the new statistics, and that ranks averaging their shares get one process's result."""

from __future__ import annotations

import math
import threading

import pytest
import torch
from torch import nn

from compress.data.bundle import Split
from compress.recipe.schema import BatchNormConfig, TrainingConfig
from compress.testing import tiny_bundle
from compress.testing.images import as_lazy
from compress.testing.tf_style import TF_MOMENTUM, tf_style_cnn
from compress.training import fit
from compress.training.batchnorm import (
    batch_norm_layers,
    recalibrate_batch_norm_,
    recalibrate_checked_,
    sample_plan,
    sign_test_p,
)
from compress.training.strategy import Strategy

pytestmark = pytest.mark.unit


class CustomNorm(nn.BatchNorm2d):
    """A subclass, as ported models define them."""


def _split(x: torch.Tensor) -> Split:
    return Split(x, torch.zeros(len(x), dtype=torch.int64))


def _stale(model: nn.Module) -> None:
    for layer in batch_norm_layers(model):
        layer.running_mean.fill_(5.0)
        layer.running_var.fill_(9.0)


@pytest.mark.parametrize(
    ("norm", "shape"),
    [
        (nn.BatchNorm1d(3), (3,)),
        (nn.BatchNorm2d(3), (3, 4, 4)),
        (nn.BatchNorm3d(3), (3, 2, 2, 2)),
        (CustomNorm(3), (3, 4, 4)),
    ],
    ids=["1d", "2d", "3d", "subclass"],
)
def test_statistics_become_the_mean_of_the_batch_statistics(norm, shape):
    torch.manual_seed(0)
    x = 2.0 + 3.0 * torch.randn(12, *shape)
    norm.momentum = TF_MOMENTUM
    _stale(norm)

    seen, layers = recalibrate_batch_norm_(norm, _split(x), samples=12, batch_size=4, seed=1)

    dims = [0, *range(2, x.ndim)]
    batches = [x[index] for index in sample_plan(_split(x), 12, 4, seed=1)]
    expected_mean = torch.stack([b.mean(dims) for b in batches]).mean(0)
    expected_var = torch.stack([b.var(dims, unbiased=True) for b in batches]).mean(0)
    assert (seen, layers) == (12, 1)
    torch.testing.assert_close(norm.running_mean, expected_mean)
    torch.testing.assert_close(norm.running_var, expected_var)
    assert norm.momentum == TF_MOMENTUM  # restored after the cumulative average
    assert int(norm.num_batches_tracked) == 3


def test_dropout_stays_in_eval_mode_and_the_model_mode_is_restored():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Dropout(0.99))
    calls = []
    model[2].register_forward_hook(lambda m, i, o: calls.append(m.training))
    model.train()

    recalibrate_batch_norm_(model, _split(torch.randn(16, 4)), samples=16, batch_size=8)

    assert calls == [False, False]
    assert model.training and model[1].training and model[2].training


def test_a_frozen_batch_norm_keeps_its_statistics():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    frozen = model[1]
    frozen.eval()
    frozen.train = lambda mode=True: frozen  # what QAT does to BatchNorm
    _stale(model)

    assert recalibrate_batch_norm_(model, _split(torch.randn(16, 4)), 16, 8) == (0, 0)
    assert torch.all(frozen.running_mean == 5.0)


def test_the_draw_is_bounded_and_reads_a_lazy_split_row_by_row():
    data = as_lazy(tiny_bundle(per_class=(40, 8, 8)))
    model = tf_style_cnn(3, (1, 8, 8), widths=(4, 8))

    seen, layers = recalibrate_batch_norm_(model, data.train, samples=50, batch_size=16)

    assert seen == 50 and layers == 3
    assert data.train.reader.reads == [16, 16, 16, 2]


def _trained(recalibrate: bool):
    data = tiny_bundle(per_class=(32, 16, 16))
    torch.manual_seed(0)
    model = tf_style_cnn(3, (1, 8, 8), widths=(8, 16))
    config = TrainingConfig(
        epochs=3,
        batch_size=16,
        optimizer={"name": "adam", "lr": 0.01},
        batch_norm=BatchNormConfig(recalibrate=recalibrate),
    )
    return model, data, fit(model, data, config, seed=0)


def test_fit_ends_with_a_recalibration_it_reports():
    model, data, result = _trained(recalibrate=True)

    record = result.batch_norm
    assert record["where"] == "after training" and record["samples"] == len(data.train)
    assert record["layers"] == 3 and record["metric"] == "val_accuracy"
    # momentum 0.01 over 3 epochs of 6 batches: the stored statistics are still 83%
    # their initial values, and eval mode misclassifies a third of an easy task
    assert record["before"] < 0.8 and record["after"] == 1.0 and record["kept"]
    assert record["mean_shift_sd"] > 0.05
    assert _trained(recalibrate=False)[2].batch_norm is None


def test_statistics_that_lower_validation_accuracy_are_not_kept():
    model, data, _ = _trained(recalibrate=False)
    before = [m.running_mean.clone() for m in batch_norm_layers(model)]
    # re-estimated on inputs unlike the validation data, the statistics can only hurt
    shifted = type(data)(**{**data.__dict__, "train": _split(data.train.x * 10 + 5)})

    record = recalibrate_checked_(model, shifted, BatchNormConfig(), where="test", batch_size=16)

    assert not record["kept"] and record["after"] < record["before"]
    for old, layer in zip(before, batch_norm_layers(model)):
        assert torch.equal(layer.running_mean, old)


def _threshold_model() -> nn.Module:
    """Class 1 exactly when x is above the BatchNorm's running mean."""
    model = nn.Sequential(nn.BatchNorm1d(1), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.0], [1.0]]))
        model[1].bias.zero_()
    return model


def _threshold_data(moved_rows: int, labeled: bool = True):
    """Training rows with mean 1 (the stored mean is 0); validation rows both means
    classify alike (x = -1 class 0, x = 3 class 1) plus `moved_rows` rows of class 0 at
    x = 0.5, which only the re-estimated mean (1) gets right."""
    train = torch.tensor([0.5, 1.5] * 8).unsqueeze(1)
    x = torch.tensor([-1.0] * 40 + [3.0] * 40 + [0.5] * moved_rows).unsqueeze(1)
    y = torch.tensor([0] * 40 + [1] * 40 + [0] * moved_rows)
    data = tiny_bundle(num_classes=2, input_shape=(1,))
    train_split = Split(train, torch.zeros(16, dtype=torch.int64))
    if not labeled:
        y = torch.full_like(y, -1)
    val = Split(x, y, labeled=labeled)
    return type(data)(**{**data.__dict__, "train": train_split, "val": val})


def test_sign_test_p_values():
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(1, 0) == 0.5
    assert sign_test_p(5, 0) == pytest.approx(1 / 32)
    assert sign_test_p(4, 0) == pytest.approx(1 / 16)
    assert sign_test_p(9, 2) == pytest.approx(sum(math.comb(11, k) for k in range(9, 12)) / 2**11)
    assert sign_test_p(2, 9) > 0.9


@pytest.mark.parametrize(("moved_rows", "kept"), [(1, False), (4, False), (5, True), (30, True)])
def test_statistics_are_kept_only_when_a_sign_test_says_they_help(moved_rows, kept):
    model = _threshold_model()
    data = _threshold_data(moved_rows)

    record = recalibrate_checked_(model, data, BatchNormConfig(), where="test", batch_size=16)

    n = 80 + moved_rows
    assert record["before"] == pytest.approx(80 / n) and record["after"] == 1.0
    assert (record["improved"], record["worsened"]) == (moved_rows, 0)
    assert record["p_value"] == pytest.approx(0.5**moved_rows)
    assert record["kept"] is kept
    assert float(model[0].running_mean) == (1.0 if kept else 0.0)


def test_significance_one_keeps_any_strict_gain_and_agreement_judges_without_labels():
    loose = BatchNormConfig(significance=1.0)
    record = recalibrate_checked_(
        _threshold_model(), _threshold_data(1), loose, where="test", batch_size=16
    )
    assert record["kept"] and record["p_value"] == 0.5

    # without labels: agreement with a reference that predicts class 0 at x = 0.5
    reference = torch.tensor([0] * 40 + [1] * 40 + [0] * 3)
    model = _threshold_model()
    data = _threshold_data(3, labeled=False)
    record = recalibrate_checked_(
        model, data, BatchNormConfig(), where="test", batch_size=16, reference=reference
    )
    assert record["metric"] == "val_agreement" and record["after"] == 1.0
    assert (record["improved"], record["worsened"], record["kept"]) == (3, 0, False)
    assert float(model[0].running_mean) == 0.0


def test_the_report_says_a_discarded_recalibration_was_discarded_with_both_figures():
    from compress.report.markdown import _recalibration
    from compress.report.records import Recalibration

    record = recalibrate_checked_(
        _threshold_model(), _threshold_data(1), BatchNormConfig(), where="step 1: after pruning",
        batch_size=16,
    )  # fmt: skip

    text = _recalibration(Recalibration.model_validate(record))
    assert text == (
        "BatchNorm step 1: after pruning: 1 layers re-estimated over 16 samples "
        f"(means moved {record['mean_shift_sd']:.2f} sd), val_accuracy 98.77% -> 100.00% "
        "(+1/-0 rows, p = 0.5); discarded (old statistics restored)"
    )


class _ThreadRanks(Strategy):
    """Two ranks as threads: reduce_sum adds the other thread's tensor."""

    world_size = 2

    def __init__(self, rank: int, board: dict, barrier: threading.Barrier):
        self._rank, self.board, self.barrier = rank, board, barrier

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def is_driver(self) -> bool:
        return self._rank == 0

    def reduce_sum(self, tensor):
        self.board[self._rank] = tensor.clone()
        self.barrier.wait()
        total = self.board[0] + self.board[1]
        self.barrier.wait()
        return total


def test_ranks_averaging_their_shares_get_the_single_process_statistics():
    torch.manual_seed(0)
    split = _split(1.0 + torch.randn(70, 3, 4, 4))
    single = tf_style_cnn(2, (3, 4, 4), widths=(4, 8))
    ranks = [tf_style_cnn(2, (3, 4, 4), widths=(4, 8)) for _ in range(2)]
    for model in ranks:
        model.load_state_dict(single.state_dict())
    board, barrier = {}, threading.Barrier(2)
    results = [None, None]

    def run(rank):
        strategy = _ThreadRanks(rank, board, barrier)
        results[rank] = recalibrate_batch_norm_(ranks[rank], split, 64, 8, 0, strategy)

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    expected = recalibrate_batch_norm_(single, split, 64, 8, 0)

    assert results == [expected, expected] == [(64, 3)] * 2
    for model in ranks:
        for name, value in single.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], value, msg=name)


@pytest.mark.parametrize("recalibrate", [True, False])
def test_export_recalibrates_a_model_whose_statistics_are_stale(
    tmp_path, recalibrate, digits_bundle
):
    # a model that arrives with weights goes to export having had no recalibration here
    from compress.recipe.stages import ExportStageConfig
    from compress.stages.export import ExportStage
    from compress.testing import tiny_run_context
    from compress.training import evaluate

    ctx = tiny_run_context(tmp_path, digits_bundle)
    fit(ctx.model, ctx.data, TrainingConfig(epochs=2, batch_size=32), seed=0)
    trained = evaluate(ctx.model, ctx.data.val)["accuracy"]
    _stale(ctx.model)
    stale = evaluate(ctx.model, ctx.data.val)["accuracy"]
    config = ExportStageConfig(type="export", batch_norm={"recalibrate": recalibrate})

    result = ExportStage(config, "export").run(ctx)

    after = evaluate(result.model, ctx.data.val)["accuracy"]
    records = result.details["bn_recalibration"]
    if recalibrate:
        assert [r["where"] for r in records] == ["before export"] and records[0]["kept"]
        assert records[0]["before"] == stale and records[0]["after"] == after
        assert after >= trained - 0.02 > stale  # back to the trained model's accuracy
    else:
        assert records == [] and after == stale
