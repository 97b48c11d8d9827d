"""The prune stage: step table, targets and accuracy budgets, fine-tunes, unstructured sparsity."""

from __future__ import annotations

import copy
import zlib

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import compress.stages.prune as prune_module
from compress.models.stats import count_macs, count_params
from compress.pruning.unstructured import overall_sparsity
from compress.recipe.stages import PruneStageConfig
from compress.runtime.onnx_export import export_onnx
from compress.stages.prune import PruneStage
from compress.testing import tiny_run_context
from compress.training import evaluate

pytestmark = pytest.mark.unit

INPUT_SHAPE = (1, 8, 8)
DENSE_PARAMS = 1_442  # CNN [8, 16] on 1x8x8, 10 classes
DENSE_MACS = 23_200


def _context(tmp_path, data, trained, **recipe):
    """A run context whose current model and teacher are copies of `trained`."""
    return tiny_run_context(
        tmp_path,
        data,
        model=copy.deepcopy(trained),
        teacher=copy.deepcopy(trained),
        recipe=recipe or None,
    )


def _run(ctx, **config):
    # round_to off unless a test sets it: these 8/16-channel models would not prune at
    # all in multiples of 8 (the stage's default), and the exact counts below are the
    # schedule's, not the rounding's
    config = PruneStageConfig.model_validate({"type": "prune", "round_to": None, **config})
    return PruneStage(config, "prune").run(ctx)


NO_FINETUNE = {"epochs": 0}


# --------------------------------------------------------------------------- structured


def test_structured_steps_are_recorded_and_the_model_shrinks(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)

    result = _run(ctx, ratio=0.5, steps=2, finetune=NO_FINETUNE)

    steps = result.details["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert [s["ratio"] for s in steps] == [0.0, 0.25, 0.5]
    assert [s["params"] for s in steps] == [DENSE_PARAMS, 868, 438]
    assert [s["macs"] for s in steps] == [DENSE_MACS, 13_944, 6_992]
    assert steps[0]["val_accuracy"] == evaluate(trained, digits_bundle.val)["accuracy"]
    assert all(s["finetune"] is None for s in steps)
    assert "target" not in result.details and "kept_step" not in result.details
    assert result.model is ctx.model  # pruned in place without a target
    assert count_params(result.model) == 438
    assert result.model.classifier.out_features == 10
    assert result.details["method"] == "structured" and result.details["importance"] == "l1"


def test_target_stops_at_the_first_step_that_meets_it(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)

    result = _run(ctx, ratio=0.75, steps=3, target={"macs_ratio": 0.35}, finetune=NO_FINETUNE)

    details, steps = result.details, result.details["steps"]
    assert [s["step"] for s in steps] == [0, 1, 2]  # step 3 (ratio 0.75) never ran
    assert [s["ratio"] for s in steps] == [0.0, 0.25, 0.5]
    for record in steps:
        assert {"ratio", "macs", "params", "val_accuracy", "macs_ratio"} <= set(record)
        assert record["macs_ratio"] == pytest.approx(record["macs"] / DENSE_MACS)
        assert 0.0 <= record["val_accuracy"] <= 1.0
    assert [s["target_met"] for s in steps] == [False, False, True]
    assert steps[1]["macs_ratio"] > 0.35 >= steps[2]["macs_ratio"]
    assert details["stopped"] == "step 2: target macs_ratio = 0.35 reached"
    assert (details["target"], details["target_met"], details["kept_step"]) == (
        {"macs_ratio": 0.35},
        True,
        2,
    )
    assert count_params(result.model) == steps[2]["params"] == 438
    assert count_macs(result.model, INPUT_SHAPE) == steps[2]["macs"]
    assert not result.model.training


def test_unreachable_target_keeps_the_last_step(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)

    result = _run(ctx, ratio=0.5, steps=2, target={"macs_ratio": 0.05}, finetune=NO_FINETUNE)

    details = result.details
    assert details["stopped"] == "target macs_ratio = 0.05 not reached within ratio 0.5"
    assert (details["target_met"], details["kept_step"]) == (False, 2)
    assert count_params(result.model) == details["steps"][2]["params"] == 438


def test_impossible_accuracy_budget_keeps_step_0(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)
    x = digits_bundle.val.x[:5]

    result = _run(
        ctx,
        ratio=0.5,
        steps=2,
        target={"macs_ratio": 0.35},
        finetune=NO_FINETUNE,
        budgets={"accuracy_min": 0.999},
    )

    details, steps = result.details, result.details["steps"]
    assert details["kept_step"] == 0
    assert details["target_met"] is False
    assert [s["step"] for s in steps] == [0, 1]  # stopped at the first step below the floor
    assert steps[1]["accuracy_ok"] is False and steps[1]["val_accuracy"] < 0.999
    assert details["stopped"] == (
        f"step 1: val accuracy {steps[1]['val_accuracy']:.4f} is below 0.9990 "
        "(accuracy_min 0.999); kept step 0"
    )
    assert count_params(result.model) == steps[0]["params"] == DENSE_PARAMS
    with torch.no_grad():
        assert torch.equal(result.model(x), trained(x))  # the unpruned model itself


def test_accuracy_budget_keeps_the_last_step_that_met_it(tmp_path, digits_bundle, trained):
    reference = _run(
        _context(tmp_path / "reference", digits_bundle, trained),
        ratio=0.75,
        steps=3,
        target={"macs_ratio": 0.01},  # unreachable: every step runs
        finetune=NO_FINETUNE,
    ).details["steps"]
    accuracies = [s["val_accuracy"] for s in reference]
    assert accuracies[1] > accuracies[2]  # precondition: pruning costs accuracy here
    floor = round((accuracies[1] + accuracies[2]) / 2, 4)
    ctx = _context(tmp_path / "gated", digits_bundle, trained)

    result = _run(
        ctx,
        ratio=0.75,
        steps=3,
        target={"macs_ratio": 0.01},
        finetune=NO_FINETUNE,
        budgets={"accuracy_min": floor},
    )

    details, steps = result.details, result.details["steps"]
    assert details["kept_step"] == 1
    assert [s.get("accuracy_ok") for s in steps] == [None, True, False]
    assert count_params(result.model) == steps[1]["params"] == reference[1]["params"] == 868
    assert evaluate(result.model, digits_bundle.val)["accuracy"] == steps[1]["val_accuracy"]


def test_accuracy_drop_budget_is_measured_against_the_teacher(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)
    teacher_val = evaluate(trained, digits_bundle.val)["accuracy"]

    result = _run(
        ctx,
        ratio=0.5,
        steps=2,
        target={"macs_ratio": 0.35},
        finetune=NO_FINETUNE,
        budgets={"accuracy_drop_max": 0.0},
    )

    assert result.details["kept_step"] == 0
    assert (
        f"teacher val accuracy {teacher_val:.4f} - accuracy_drop_max 0.0"
        in (result.details["stopped"])
    )


def test_target_without_a_teacher_measures_against_the_input_model(
    tmp_path, digits_bundle, trained
):
    ctx = tiny_run_context(tmp_path, digits_bundle, model=copy.deepcopy(trained))

    result = _run(ctx, ratio=0.5, steps=2, target={"macs_ratio": 0.35}, finetune=NO_FINETUNE)

    assert result.details["steps"][0]["macs_ratio"] == 1.0
    assert result.details["kept_step"] == 2


def test_finetune_distils_from_the_unpruned_model(tmp_path, digits_bundle, trained, monkeypatch):
    ctx = _context(tmp_path, digits_bundle, trained)
    calls = []
    original_fit = prune_module.fit

    def spy(model, data, config, **kwargs):
        teacher = kwargs["teacher"]
        calls.append(
            {
                "model_params": count_params(model),
                "teacher_params": count_params(teacher),
                "teacher_is_model": teacher is model,
                "distill": kwargs["distill"],
                "seed": kwargs["seed"],
            }
        )
        return original_fit(model, data, config, **kwargs)

    monkeypatch.setattr(prune_module, "fit", spy)
    finetune = {
        "epochs": 1,
        "batch_size": 64,
        "distill": True,
        "temperature": 3.0,
        "alpha": 0.5,
        "optimizer": {"name": "adam", "lr": 0.001},
    }

    result = _run(ctx, ratio=0.5, steps=2, finetune=finetune)

    assert [c["model_params"] for c in calls] == [868, 438]
    assert [c["teacher_params"] for c in calls] == [DENSE_PARAMS, DENSE_PARAMS]
    assert not any(c["teacher_is_model"] for c in calls)
    assert [(c["distill"].temperature, c["distill"].alpha) for c in calls] == [(3.0, 0.5)] * 2
    assert [c["seed"] for c in calls] == [1, 2]  # run seed + step
    for record in result.details["steps"][1:]:
        assert record["finetune"]["epochs_run"] == 1
        assert "history" not in record["finetune"]
        assert record["val_accuracy"] == record["finetune"]["best_val_accuracy"]


def test_finetune_can_distil_from_the_run_teacher(tmp_path, digits_bundle, trained, monkeypatch):
    big = tiny_run_context(tmp_path, digits_bundle, recipe={"model": {"widths": [16, 32]}}).model
    ctx = tiny_run_context(tmp_path, digits_bundle, model=copy.deepcopy(trained), teacher=big)
    teachers = []
    original_fit = prune_module.fit

    def spy(model, data, config, **kwargs):
        teachers.append(kwargs["teacher"])
        return original_fit(model, data, config, **kwargs)

    monkeypatch.setattr(prune_module, "fit", spy)
    before = {k: v.clone() for k, v in big.state_dict().items()}

    _run(
        ctx, ratio=0.5, steps=1, finetune={"epochs": 1, "distill": True, "distill_from": "teacher"}
    )

    assert [count_params(t) for t in teachers] == [count_params(big)] != [DENSE_PARAMS]
    assert teachers[0] is not big  # a copy: the run's teacher is never trained
    assert all(torch.equal(v, big.state_dict()[k]) for k, v in before.items())


def test_finetune_without_distill_uses_plain_cross_entropy(
    tmp_path, digits_bundle, trained, monkeypatch
):
    ctx = _context(tmp_path, digits_bundle, trained)
    seen = []
    original_fit = prune_module.fit

    def spy(model, data, config, **kwargs):
        seen.append((kwargs["teacher"], kwargs["distill"]))
        return original_fit(model, data, config, **kwargs)

    monkeypatch.setattr(prune_module, "fit", spy)

    _run(ctx, ratio=0.5, steps=1, finetune={"epochs": 1})

    assert seen == [(None, None)]


def test_taylor_importance_runs_in_the_stage(tmp_path, digits_bundle, trained):
    ctx = _context(tmp_path, digits_bundle, trained)

    result = _run(ctx, ratio=0.5, steps=1, importance="taylor", finetune=NO_FINETUNE)

    assert result.details["importance"] == "taylor"
    assert count_params(result.model) == 438
    assert all(p.grad is None for p in result.model.parameters())


def test_ignored_and_skipped_layers_keep_their_outputs(tmp_path, digits_bundle):
    ctx = tiny_run_context(tmp_path, digits_bundle, recipe={"model": {"widths": [8, 16, 16]}})

    result = _run(
        ctx,
        ratio=0.5,
        ignored_layers=["features.0"],
        layer_ratios={"features.4": 0.75, "re:features\\.8": "skip"},
        finetune=NO_FINETUNE,
    )

    features = result.model.features
    assert [features[i].out_channels for i in (0, 4, 8)] == [8, 4, 16]
    assert result.details["skipped_layers"] == ["features.8"]


# --------------------------------------------------------------------------- unstructured


def _prunable_weights(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@pytest.mark.parametrize("global_pruning", [False, True], ids=["per-layer", "global"])
def test_unstructured_reaches_the_ratio_and_leaves_plain_weights(
    tmp_path, digits_bundle, global_pruning
):
    ctx = tiny_run_context(tmp_path, digits_bundle, recipe={"model": {"widths": [16, 32]}})
    dense = copy.deepcopy(ctx.model)
    finetune = {"epochs": 1, "batch_size": 64, "optimizer": {"name": "adam", "lr": 0.01}}

    result = _run(
        ctx,
        method="unstructured",
        ratio=0.6,
        steps=2,
        global_pruning=global_pruning,
        finetune=finetune,
    )

    model, details = result.model, result.details
    sparsity = overall_sparsity(model, [model.classifier])
    assert sparsity == pytest.approx(0.6, abs=0.01)  # fine-tuning kept the zeros
    assert details["sparsity"] == sparsity
    assert [s["sparsity"] for s in details["steps"][1:]] == pytest.approx([0.3, 0.6], abs=0.01)
    assert details["sparsity_by_layer"]["classifier"] == 0.0  # never pruned
    if not global_pruning:
        for name in ("features.0", "features.4"):
            assert details["sparsity_by_layer"][name] == pytest.approx(0.6, abs=0.01)
    assert all(s["finetune"]["epochs_run"] == 1 for s in details["steps"][1:])
    assert list(model.state_dict()) == list(dense.state_dict())  # no weight_orig / mask
    for module in _prunable_weights(model):
        assert type(module.weight) is nn.Parameter
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
        assert not module._forward_pre_hooks
    assert count_params(model) == count_params(dense)
    assert details["nonzero_params"] < 0.5 * count_params(dense)


def test_unstructured_model_is_smaller_only_when_compressed(tmp_path, digits_bundle):
    ctx = tiny_run_context(tmp_path, digits_bundle, recipe={"model": {"widths": [16, 32]}})
    dense = copy.deepcopy(ctx.model)
    result = _run(ctx, method="unstructured", ratio=0.6, finetune=NO_FINETUNE)

    raw = [
        export_onnx(m, INPUT_SHAPE, tmp_path / f"{name}.onnx").read_bytes()
        for name, m in (("dense", dense), ("sparse", result.model))
    ]

    dense_raw, sparse_raw = raw
    assert abs(len(sparse_raw) - len(dense_raw)) <= 0.01 * len(dense_raw)
    assert len(zlib.compress(sparse_raw, 9)) < 0.75 * len(zlib.compress(dense_raw, 9))


def test_unstructured_refuses_numeric_layer_ratios():
    # one sparsity for all layers; a per-layer number would be silently ignored
    with pytest.raises(ValidationError, match="'skip'"):
        PruneStageConfig(
            type="prune", method="unstructured", ratio=0.6, layer_ratios={"features.0": 0.2}
        )


def test_channel_counts_are_rounded_to_multiples_of_8_by_default(tmp_path, digits_bundle):
    # off-multiple counts (21, 43) ran 1.2-1.7x slower than the next multiple of 8 on
    # ONNX Runtime's CPU convolutions (scripts/bench_channel_rounding.py)
    ctx = tiny_run_context(tmp_path, digits_bundle, recipe={"model": {"widths": [24, 48]}})
    config = PruneStageConfig.model_validate(
        {"type": "prune", "ratio": 0.3, "steps": 2, "finetune": NO_FINETUNE}
    )

    result = PruneStage(config, "prune").run(ctx)

    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert config.round_to == 8
    assert [c.out_channels for c in convs] == [16, 32]  # 24 * 0.7 = 16.8, 48 * 0.7 = 33.6
