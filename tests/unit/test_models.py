"""Architectures, pickle-free checkpoints (including hand-pruned models) and MAC counts."""

from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch
from torch import nn

from compress.artifacts import sha256_file
from compress.errors import ArtifactError, StageError
from compress.models import ModelSpec, build_model, find_classifier, load_model, save_model
from compress.models.stats import count_macs, count_nonzero_params, count_params
from compress.recipe.schema import CallableModelConfig, CNNConfig, MLPConfig, ResNetConfig
from compress.testing import TinyCNN, TinyResNet

pytestmark = pytest.mark.unit


def _randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so eval outputs depend on them."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


def _input(batch: int = 5, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize(
    "config",
    [
        CNNConfig(widths=[8, 16]),
        CNNConfig(widths=[4, 8, 8], convs_per_block=2, batch_norm=False, hidden=12, dropout=0.1),
        CNNConfig(widths=[4, 8], pool="flatten", hidden=12),
        CNNConfig(widths=[4, 8, 8], convs_per_block=[1, 2, 2]),
        ResNetConfig(widths=[4, 8]),
        ResNetConfig(widths=[4, 8, 8], blocks_per_stage=2, stem_stride=2),
        MLPConfig(hidden=[16, 8]),
    ],
    ids=["cnn", "cnn-deep", "cnn-flatten", "cnn-per-block", "resnet", "resnet-strided", "mlp"],
)
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 16, 16)], ids=["1x8x8", "3x16x16"])
def test_builtin_architecture_forward_shape(config, input_shape):
    model = build_model(config, input_shape, 7).eval()

    logits = model(_input(3, input_shape))

    assert logits.shape == (3, 7)
    assert find_classifier(model, 7) is model.classifier
    assert model.classifier.out_features == 7


def test_mlp_accepts_flat_features():
    model = build_model(MLPConfig(hidden=[8]), (64,), 4)

    assert model(torch.zeros(2, 64)).shape == (2, 4)


def test_cnn_convs_per_block_list_sets_each_block():
    model = build_model(CNNConfig(widths=[4, 8, 8], convs_per_block=[1, 2, 3]), (1, 8, 8), 3)

    convs = [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert convs == [4, 8, 8, 8, 8, 8]
    with pytest.raises(ValueError, match="lists 2 counts for 3 widths"):
        CNNConfig(widths=[4, 8, 8], convs_per_block=[1, 2])
    with pytest.raises(ValueError):
        CNNConfig(widths=[4], convs_per_block=0)


def test_cnn_stops_pooling_at_2x2():
    model = build_model(CNNConfig(widths=[4, 4, 4, 4]), (1, 8, 8), 3)

    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]

    assert len(pools) == 2  # 8 -> 4 -> 2, then no further pooling


def test_user_architecture_gets_num_classes():
    config = CallableModelConfig(
        architecture="compress.testing:TinyCNN", kwargs={"channels": [2, 3]}
    )

    model = build_model(config, (1, 8, 8), 4)

    assert isinstance(model, TinyCNN)
    assert model(_input(2)).shape == (2, 4)
    assert model.features[0].out_channels == 2


def test_user_architecture_returning_non_module_is_named():
    config = CallableModelConfig(architecture="compress.testing:tiny_recipe_dict")

    with pytest.raises(StageError) as info:
        build_model(config, (1, 8, 8), 4)

    assert str(info.value) == (
        "model.architecture compress.testing:tiny_recipe_dict returned dict, "
        "expected a torch.nn.Module"
    )


def test_user_architecture_that_raises_is_named():
    config = CallableModelConfig(architecture="compress.testing:TinyCNN", kwargs={"depth": 3})

    with pytest.raises(StageError) as info:
        build_model(config, (1, 8, 8), 4)

    assert str(info.value).startswith(
        "model.architecture compress.testing:TinyCNN raised TypeError"
    )


def test_find_classifier_falls_back_to_last_linear_with_class_outputs():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 10))

    assert find_classifier(model, 10) is model[3]
    assert find_classifier(model, 5) is None


# --------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "config",
    [CNNConfig(widths=[8, 16]), ResNetConfig(widths=[4, 8]), MLPConfig(hidden=[8])],
    ids=["cnn", "resnet", "mlp"],
)
def test_save_load_round_trip_gives_identical_outputs(tmp_path, config):
    spec = ModelSpec(config, (1, 8, 8), 10)
    model = _randomise_(build_model(config, spec.input_shape, 10))
    x = _input()

    save_model(model, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")

    assert torch.equal(loaded(x), model(x))
    assert loaded_spec == spec
    assert not loaded.training


def test_user_architecture_round_trips(tmp_path):
    config = CallableModelConfig(architecture="compress.testing:TinyResNet", kwargs={"channels": 3})
    spec = ModelSpec(config, (1, 8, 8), 5)
    model = _randomise_(build_model(config, spec.input_shape, 5))
    x = _input()

    save_model(model, spec, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")

    assert isinstance(loaded, TinyResNet)
    assert torch.equal(loaded(x), model(x))


def _keep_outputs_(conv: nn.Conv2d, bn: nn.BatchNorm2d, keep: list[int]) -> None:
    """Remove conv output channels (and their BatchNorm entries) by hand, as pruning does."""
    with torch.no_grad():
        conv.weight = nn.Parameter(conv.weight[keep].clone())
        bn.weight = nn.Parameter(bn.weight[keep].clone())
        bn.bias = nn.Parameter(bn.bias[keep].clone())
    bn.running_mean = bn.running_mean[keep].clone()
    bn.running_var = bn.running_var[keep].clone()
    conv.out_channels = bn.num_features = len(keep)


def _keep_inputs_(layer: nn.Module, keep: list[int]) -> None:
    with torch.no_grad():
        layer.weight = nn.Parameter(layer.weight[:, keep].clone())
    if isinstance(layer, nn.Conv2d):
        layer.in_channels = len(keep)
    else:
        layer.in_features = len(keep)


def _pruned_cnn() -> tuple[nn.Module, ModelSpec]:
    spec = ModelSpec(CNNConfig(widths=[8, 16]), (1, 8, 8), 10)
    model = _randomise_(build_model(spec.config, spec.input_shape, 10))
    f = model.features  # conv0 bn1 relu2 pool3 conv4 bn5 relu6 pool7
    first, second = [0, 2, 3, 5, 7], list(range(0, 16, 2))
    _keep_outputs_(f[0], f[1], first)
    _keep_inputs_(f[4], first)
    _keep_outputs_(f[4], f[5], second)
    _keep_inputs_(model.classifier, second)
    return model, spec


def _pruned_resnet() -> tuple[nn.Module, ModelSpec]:
    spec = ModelSpec(ResNetConfig(widths=[4, 8]), (1, 8, 8), 10)
    model = _randomise_(build_model(spec.config, spec.input_shape, 10))
    block = model.layers[1]
    keep = [1, 2, 4, 6, 7]
    _keep_outputs_(block.conv1, block.bn1, keep)
    _keep_inputs_(block.conv2, keep)
    return model, spec


@pytest.mark.parametrize("make", [_pruned_cnn, _pruned_resnet], ids=["cnn", "resnet"])
def test_hand_pruned_model_round_trips_without_pickle(tmp_path, monkeypatch, make):
    model, spec = make()
    x = _input()
    expected = model(x)
    save_model(model, spec, tmp_path / "m")

    def refuse(*args, **kwargs):
        raise AssertionError("load_model used pickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded, _ = load_model(tmp_path / "m")

    assert torch.equal(loaded(x), expected)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert (
        count_params(loaded)
        == count_params(model)
        < count_params(build_model(spec.config, spec.input_shape, 10))
    )


def test_checkpoint_files_are_json_and_safetensors(tmp_path):
    model, spec = _pruned_cnn()

    save_model(model, spec, tmp_path / "m")

    meta = json.loads((tmp_path / "m" / "model.json").read_text(encoding="utf-8"))
    assert meta["format"] == "compress-model/1"
    assert meta["architecture"]["widths"] == [8, 16]
    assert meta["input_shape"] == [1, 8, 8] and meta["num_classes"] == 10
    assert meta["structure"]["features.0"]["out_channels"] == 5
    assert meta["structure"]["features.1"]["num_features"] == 5
    assert meta["structure"]["features.4"] == {"in_channels": 5, "out_channels": 8, "groups": 1}
    assert meta["structure"]["classifier"] == {"in_features": 8, "out_features": 10}
    weights = tmp_path / "m" / "model.safetensors"
    assert meta["weights_sha256"] == sha256_file(weights)
    data = weights.read_bytes()
    assert data[:2] != b"PK" and data[:1] != b"\x80"  # neither torch.save zip nor pickle
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    assert header["__metadata__"] == {"format": "compress-model/1"}
    assert header["features.0.weight"]["shape"] == [5, 1, 3, 3]
    assert header["features.4.weight"]["shape"] == [8, 5, 3, 3]
    assert header["features.0.weight"]["dtype"] == "F32"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "model.json",
        "model.safetensors",
    ]


@pytest.fixture
def saved(tmp_path):
    model, spec = _pruned_cnn()
    save_model(model, spec, tmp_path / "m")
    return tmp_path / "m"


def test_corrupted_weights_fail_their_hash(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value) == f"{weights}: content does not match its recorded hash"


def test_corrupted_weights_with_matching_hash_are_unreadable(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    meta = json.loads((saved / "model.json").read_text())
    meta["weights_sha256"] = sha256_file(weights)
    (saved / "model.json").write_text(json.dumps(meta))

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value).startswith(f"{weights}: unreadable")


def test_truncated_weights_fail(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value) == f"{weights}: content does not match its recorded hash"


def test_missing_spec_file(saved):
    (saved / "model.json").unlink()

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value) == f"{saved / 'model.json'}: missing"


def test_spec_that_does_not_fit_the_weights(saved):
    meta = json.loads((saved / "model.json").read_text())
    meta["architecture"]["widths"] = [8, 16, 32]
    (saved / "model.json").write_text(json.dumps(meta))

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value).startswith(
        f"{saved / 'model.safetensors'}: does not fit the stored structure"
    )


def test_spec_of_another_format(saved):
    (saved / "model.json").write_text(json.dumps({"format": "torch-pickle"}))

    with pytest.raises(ArtifactError) as info:
        load_model(saved)

    assert str(info.value) == f"{saved / 'model.json'}: not a compress-model/1 file"


# --------------------------------------------------------------------------- stats


@pytest.mark.parametrize(
    ("layer", "input_shape", "expected"),
    [
        (nn.Linear(20, 5), (20,), 20 * 5),
        (nn.Conv2d(3, 8, 3, padding=1), (3, 10, 10), (8 * 10 * 10) * (3 * 3 * 3)),
        (nn.Conv2d(1, 4, 3, stride=2, padding=1), (1, 8, 8), (4 * 4 * 4) * (1 * 3 * 3)),
        (nn.Conv2d(4, 8, 3, groups=2), (4, 6, 6), (8 * 4 * 4) * (3 * 3 * 4 // 2)),
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), (8, 5, 5), (8 * 5 * 5) * (3 * 3)),
    ],
    ids=["linear", "conv", "strided-conv", "grouped-conv", "depthwise-conv"],
)
def test_count_macs_matches_hand_computation(layer, input_shape, expected):
    assert count_macs(layer, input_shape) == expected


def test_count_macs_of_a_cnn_sums_its_layers():
    model = build_model(CNNConfig(widths=[8, 16]), (1, 8, 8), 10)

    macs = count_macs(model, (1, 8, 8))

    conv1 = (8 * 8 * 8) * (1 * 9)  # 8 channels at 8x8, 1x3x3 kernel
    conv2 = (16 * 4 * 4) * (8 * 9)  # after a 2x2 pool
    classifier = 16 * 10
    assert macs == conv1 + conv2 + classifier == 23_200


def test_count_macs_leaves_training_mode_alone():
    model = TinyCNN().train()

    count_macs(model, model.input_shape)

    assert model.training


def test_count_params_and_nonzero_params():
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[0].zero_()

    assert count_params(layer) == 4 * 3 + 3
    assert count_nonzero_params(layer) == 4 * 3 + 3 - 4 - int((layer.bias == 0).sum())


def test_count_params_of_builtin_cnn():
    model = build_model(CNNConfig(widths=[8, 16]), (1, 8, 8), 10)

    # conv 1*8*9 + BN 2*8, conv 8*16*9 + BN 2*16, classifier 16*10 + 10
    assert count_params(model) == 72 + 16 + 1152 + 32 + 170 == 1_442
