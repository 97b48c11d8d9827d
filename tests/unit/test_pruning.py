"""Pruning algorithms: schedules, structured pruning per architecture, criteria, layer ratios."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch
from torch import nn

from compress.errors import RecipeError
from compress.models import ModelSpec, build_model, load_model, save_model
from compress.models.stats import count_macs, count_params
from compress.pruning.schedule import agp_schedule, linear_schedule, pruning_schedule
from compress.pruning.structured import StructuredPruner, resolve_layer_ratios, resolve_modules
from compress.recipe.schema import CNNConfig, MobileNetConfig, ResNetConfig, TransformerConfig
from compress.runtime.onnx_export import check_parity, export_onnx
from compress.testing import tiny_bundle

pytestmark = pytest.mark.unit

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def _input(batch: int) -> torch.Tensor:
    return torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(1))


def _randomise_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics, so pruned channels and round trips show in outputs."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
    return model.eval()


def _cnn(widths=(8, 16), seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(CNNConfig(widths=list(widths)), INPUT_SHAPE, NUM_CLASSES)


def _pruner(model: nn.Module, ratio: float = 0.5, steps: int = 1, **kwargs) -> StructuredPruner:
    kwargs.setdefault("importance", "l1")
    kwargs.setdefault("ignored", [model.classifier])
    return StructuredPruner(
        model,
        torch.randn(1, *INPUT_SHAPE),
        ratio,
        steps,
        kwargs.pop("schedule", "linear"),
        **kwargs,
    )


# --------------------------------------------------------------------------- schedules


def test_linear_schedule_has_equal_increments():
    assert linear_schedule(0.6, 3) == pytest.approx([0.2, 0.4, 0.6])
    assert linear_schedule(0.5, 4) == pytest.approx([0.125, 0.25, 0.375, 0.5])


def test_agp_schedule_is_the_cubic_by_hand():
    # r_t = r_f * (1 - (1 - t/n)^3)
    assert agp_schedule(0.5, 2) == pytest.approx([0.5 * (1 - 0.5**3), 0.5])
    assert agp_schedule(0.8, 4) == pytest.approx(
        [0.8 * (1 - 0.75**3), 0.8 * (1 - 0.5**3), 0.8 * (1 - 0.25**3), 0.8]
    )


@pytest.mark.parametrize("kind", ["linear", "agp"])
@pytest.mark.parametrize(("final", "steps"), [(0.3, 3), (0.7, 7), (0.9, 10), (0.1, 49)])
def test_schedule_ends_exactly_at_the_final_ratio(kind, final, steps):
    ratios = pruning_schedule(final, steps, kind)

    assert len(ratios) == steps
    assert ratios[-1] == final  # exact, no float drift
    assert all(a < b for a, b in zip(ratios, ratios[1:]))  # strictly increasing
    assert 0 < ratios[0]


def test_agp_prunes_more_early_than_linear():
    agp, linear = pruning_schedule(0.6, 5, "agp"), pruning_schedule(0.6, 5, "linear")

    increments = [b - a for a, b in zip([0.0, *agp], agp)]

    assert agp[0] > linear[0]
    assert all(a >= b for a, b in zip(agp, linear))  # never behind linear
    assert all(a > b for a, b in zip(increments, increments[1:]))  # shrinking steps
    assert increments[0] > 0.6 / 5  # the first step is larger than linear's


@pytest.mark.parametrize("kind", ["linear", "agp"])
def test_one_step_is_the_final_ratio(kind):
    assert pruning_schedule(0.42, 1, kind) == [0.42]


def test_zero_steps_is_rejected():
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        pruning_schedule(0.5, 0)


# --------------------------------------------------------------------------- architectures

ARCHITECTURES = {
    "cnn": CNNConfig(widths=[8, 16]),
    "resnet": ResNetConfig(widths=[8, 16]),
    "mobilenet": MobileNetConfig(stem_width=8, widths=[16, 16]),
    "transformer": TransformerConfig(patch_size=4, embed_dim=32, num_heads=4, depth=1),
}
# Largest share of params and MACs left after ratio 0.5 in two steps. Channel pruning
# shrinks both sides of a conv, so ~(1 - 0.5)^2 = 0.25 plus the unpruned input conv and
# classifier; depthwise convs shrink linearly. The transformer only loses MLP width.
MAX_LEFT = {"cnn": 0.4, "resnet": 0.4, "mobilenet": 0.5, "transformer": 0.9}
# torch-pruning warns that it will prune the last dim of the learned positions (right here)
QUIET_POSITIONS = pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(n, marks=[QUIET_POSITIONS] if n == "transformer" else [])
        for n in ARCHITECTURES
    ],
)
def pruned(request):
    """(name, dense model, model pruned at 0.5 in two l1 steps, spec)."""
    name = request.param
    config = ARCHITECTURES[name]
    torch.manual_seed(0)
    dense = _randomise_bn_(build_model(config, INPUT_SHAPE, NUM_CLASSES))
    model = copy.deepcopy(dense)
    pruner = _pruner(model, 0.5, 2)
    ratios = [pruner.step(), pruner.step()]
    assert ratios == [0.25, 0.5]
    return name, dense, model.eval(), ModelSpec(config, INPUT_SHAPE, NUM_CLASSES)


def test_structured_pruning_shrinks_params_and_macs(pruned):
    name, dense, model, _ = pruned

    params, macs = count_params(model), count_macs(model, INPUT_SHAPE)

    assert params < MAX_LEFT[name] * count_params(dense)
    assert macs < MAX_LEFT[name] * count_macs(dense, INPUT_SHAPE)


def test_structured_pruning_keeps_the_classes_and_runs_at_any_batch(pruned):
    _, _, model, _ = pruned

    with torch.no_grad():
        outputs = [model(_input(batch)) for batch in (1, 5)]

    assert model.classifier.out_features == NUM_CLASSES
    assert [tuple(o.shape) for o in outputs] == [(1, NUM_CLASSES), (5, NUM_CLASSES)]
    assert all(torch.isfinite(o).all() for o in outputs)


def test_pruned_model_exports_with_parity_at_two_batch_sizes(pruned, tmp_path):
    name, _, model, _ = pruned

    path = export_onnx(model, INPUT_SHAPE, tmp_path / f"{name}.onnx")
    report = check_parity(model, path, INPUT_SHAPE, [1, 7], atol=1e-4, rtol=1e-3)

    assert sorted(report) == ["batch_1_max_abs_diff", "batch_7_max_abs_diff"]
    assert max(report.values()) < 1e-4


def test_pruned_model_round_trips_without_pickle(pruned, tmp_path, monkeypatch):
    _, dense, model, spec = pruned
    x = _input(5)
    with torch.no_grad():
        expected = model(x)
    save_model(model, spec, tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("load_model used pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded, loaded_spec = load_model(tmp_path / "m")

    with torch.no_grad():
        assert torch.equal(loaded(x), expected)
    assert loaded_spec == spec
    assert count_params(loaded) == count_params(model) < count_params(dense)
    meta = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert meta["structure"]["classifier"]["in_features"] == model.classifier.in_features
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]


def test_resnet_residual_add_keeps_both_sides_equal():
    torch.manual_seed(0)
    model = build_model(ResNetConfig(widths=[8, 16]), INPUT_SHAPE, NUM_CLASSES)
    pruner = _pruner(model, 0.5)

    pruner.step()

    identity, projected = model.layers[0], model.layers[1]
    assert model.stem[0].out_channels == identity.conv2.out_channels == 4  # identity add
    assert projected.conv2.out_channels == projected.shortcut[0].out_channels == 8
    assert projected.conv1.out_channels == 8  # inside the block: pruned on its own


def test_mobilenet_depthwise_convs_stay_depthwise():
    torch.manual_seed(0)
    model = build_model(MobileNetConfig(stem_width=8, widths=[16, 16]), INPUT_SHAPE, NUM_CLASSES)
    pruner = _pruner(model, 0.5)

    pruner.step()

    shapes = [
        (b.depthwise.in_channels, b.depthwise.out_channels, b.depthwise.groups)
        for b in model.blocks
    ]
    assert shapes == [(4, 4, 4), (8, 8, 8)]  # the stem's and block 0's pointwise outputs
    assert [b.pointwise.out_channels for b in model.blocks] == [8, 8]


@QUIET_POSITIONS
def test_transformer_mlp_width_shrinks():
    torch.manual_seed(0)
    model = build_model(ARCHITECTURES["transformer"], INPUT_SHAPE, NUM_CLASSES)
    pruner = _pruner(model, 0.5)

    pruner.step()

    block = model.blocks[0]
    assert (block.fc1.out_features, block.fc2.in_features) == (32, 32)  # hidden 64 -> 32


@QUIET_POSITIONS
def test_transformer_attention_loses_whole_heads():
    torch.manual_seed(0)
    model = build_model(ARCHITECTURES["transformer"], INPUT_SHAPE, NUM_CLASSES)
    attention = model.blocks[0].attn
    head_dim = attention.head_dim
    pruner = _pruner(model, 0.5)

    pruner.step()

    assert attention.num_heads == 2  # 4 heads at ratio 0.5
    assert attention.head_dim == head_dim == 8  # heads removed whole, not thinned
    assert attention.qkv.out_features == 3 * attention.num_heads * head_dim
    assert attention.proj.in_features == attention.num_heads * head_dim
    assert model(torch.zeros(2, *INPUT_SHAPE)).shape == (2, NUM_CLASSES)


# --------------------------------------------------------------------------- importance

IMPORTANCES = ["l1", "l2", "taylor", "bn-scale", "lamp", "fpgm", "random"]


@pytest.mark.parametrize("importance", IMPORTANCES)
def test_each_importance_criterion_prunes_a_cnn(importance):
    data = tiny_bundle(num_classes=NUM_CLASSES, per_class=(4, 1, 1))
    model = _cnn()
    original = model.features[0].weight.detach().clone()  # 1 input channel: never cut
    batches = [(data.train.x, data.train.y)] if importance == "taylor" else None
    pruner = _pruner(model, 0.5, importance=importance, gradient_batches=batches)

    ratio = pruner.step()

    assert ratio == 0.5
    assert [model.features[0].out_channels, model.features[4].out_channels] == [4, 8]
    assert model.classifier.in_features == 8
    # conv 1*4*9 + BN 2*4, conv 4*8*9 + BN 2*8, classifier 8*10 + 10
    assert count_params(model) == 36 + 8 + 288 + 16 + 90 == 438
    assert model(_input(3)).shape == (3, NUM_CLASSES)
    kept = model.features[0].weight.detach()
    matches = [[i for i, o in enumerate(original) if torch.equal(k, o)] for k in kept]
    assert all(len(m) == 1 for m in matches)  # survivors are original filters, unchanged
    assert len({m[0] for m in matches}) == 4
    assert all(p.grad is None for p in model.parameters())  # taylor's gradients cleared


def test_l1_keeps_the_largest_filters_of_an_isolated_layer():
    model = _cnn()
    with torch.no_grad():  # filter i of the first conv has L1 norm growing with i
        for i in range(8):
            model.features[0].weight[i].fill_(0.01 * (i + 1))
        model.features[4].weight.fill_(0.02)
    # BN scales and the next conv's inputs are all equal: only the filters rank channels
    pruner = _pruner(model, 0.5, importance="l1", ignored=[model.classifier, model.features[4]])

    pruner.step()

    assert model.features[0].weight[:, 0, 0, 0].tolist() == pytest.approx([0.05, 0.06, 0.07, 0.08])
    assert model.features[4].out_channels == 16  # ignored


def test_bn_scale_keeps_the_channels_with_the_largest_batchnorm_gamma():
    model = _cnn()
    gammas = [0.3, -0.9, 0.1, 0.8, -0.2, 0.7, 0.05, 0.6]  # ranked by |gamma|
    with torch.no_grad():
        model.features[1].weight.copy_(torch.tensor(gammas))
    pruner = _pruner(model, 0.5, importance="bn-scale")

    pruner.step()

    assert model.features[1].weight.tolist() == pytest.approx([-0.9, 0.8, 0.7, 0.6])


def test_taylor_without_gradient_batches_is_rejected():
    model = _cnn()

    with pytest.raises(ValueError, match="taylor importance needs gradient_batches"):
        _pruner(model, 0.5, importance="taylor")


# --------------------------------------------------------------------------- layer ratios


def _names(model: nn.Module, modules) -> list[str]:
    return sorted(name for name, module in model.named_modules() if module in list(modules))


def _by_name(model: nn.Module, ratios: dict) -> dict[str, float]:
    return {name: ratios[m] for name, m in model.named_modules() if m in ratios}


def test_exact_name_beats_pattern_beats_default():
    model = _cnn()

    ratios, skipped = resolve_layer_ratios(model, {"re:features\\.[04]": 0.75, "features.0": 0.25})

    assert _by_name(model, ratios) == {"features.0": 0.25, "features.4": 0.75}
    assert skipped == []  # everything else takes the stage's ratio (absent here)


def test_first_matching_pattern_wins():
    model = _cnn()

    ratios, _ = resolve_layer_ratios(
        model, {"re:features\\.4": 0.25, "re:features\\.[0-9]": 0.75, "re:features\\.0": 0.1}
    )

    assert _by_name(model, ratios)["features.4"] == 0.25
    assert _by_name(model, ratios)["features.0"] == 0.75
    assert "classifier" not in _by_name(model, ratios)


def test_skip_goes_to_skipped_not_ratios():
    model = _cnn()

    ratios, skipped = resolve_layer_ratios(
        model, {"features.0": "skip", "re:features\\.[04]": 0.75, "re:head.*": "skip"}
    )

    assert _names(model, skipped) == ["features.0", "head", "head.0"]
    assert _by_name(model, ratios) == {"features.4": 0.75}


_CNN_MODULES = (
    "features, features.0, features.1, features.2, features.3, features.4, features.5, "
    "features.6, features.7, pool, head, head.0, classifier"
)


def test_unknown_exact_name_is_an_error():
    with pytest.raises(RecipeError) as info:
        resolve_layer_ratios(_cnn(), {"features.9": 0.5})

    assert str(info.value) == (
        "layer_ratios entry 'features.9' matches no module (no module has that exact name); "
        f"allowed: {_CNN_MODULES}"
    )


def test_unmatched_pattern_is_an_error():
    with pytest.raises(RecipeError) as info:
        resolve_layer_ratios(_cnn(), {"re:blocks\\..*": 0.5})

    assert str(info.value) == (
        "layer_ratios entry 're:blocks\\..*' matches no module (the pattern fully matches "
        f"none of them); allowed: {_CNN_MODULES}"
    )


def test_ignored_layer_entries_resolve_or_fail():
    model = _cnn()

    assert _names(model, resolve_modules(model, ["classifier", "re:features\\.[04]"])) == [
        "classifier",
        "features.0",
        "features.4",
    ]
    with pytest.raises(RecipeError, match="ignored_layers entry 'nope' matches no module"):
        resolve_modules(model, ["nope"])


def test_layer_ratios_and_ignored_layers_shape_the_pruned_model():
    model = _cnn(widths=(8, 16, 16))
    ratios, skipped = resolve_layer_ratios(model, {"features.0": 0.25, "re:features\\.4": 0.75})
    ignored = [model.classifier, model.features[8], *skipped]
    pruner = _pruner(model, 0.5, ignored=ignored, layer_ratios=ratios)

    pruner.step()

    widths = [model.features[i].out_channels for i in (0, 4, 8)]
    assert widths == [6, 4, 16]  # exact 0.25, pattern 0.75, ignored keeps its outputs
    assert model(_input(2)).shape == (2, NUM_CLASSES)
