"""A user's weights: torchvision layouts, any safetensors, .pt read without pickle."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from compress.errors import RecipeError
from compress.models import build_model, load_weights_
from compress.recipe.schema import CNNConfig, ResNetConfig

pytestmark = pytest.mark.unit

# torchvision's documented parameter counts (ResNet*_Weights.IMAGENET1K_V1 "num_params")
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032}


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_resnet_depth_has_torchvisions_layout(depth):
    model = build_model(ResNetConfig(depth=depth), (3, 224, 224), 1000)
    state = model.state_dict()

    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[depth]
    assert len(state) == {18: 122, 34: 218, 50: 320}[depth]
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert "layer4.1.bn2.running_var" in state and "layer1.0.bn1.num_batches_tracked" in state
    if depth == 50:
        assert state["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
        assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
        assert state["fc.weight"].shape == (1000, 2048)
    else:
        assert state["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
        assert "layer1.0.downsample.0.weight" not in state  # same width, stride 1
        assert state["fc.weight"].shape == (1000, 512)
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_depth_refuses_the_compact_layouts_settings():
    with pytest.raises(ValueError, match="drop \\['widths'\\]"):
        ResNetConfig(depth=18, widths=[8, 16])


def _resnet18():
    torch.manual_seed(0)
    return build_model(ResNetConfig(depth=18), (3, 32, 32), 10)


def test_a_plain_torch_state_dict_and_a_safetensors_file_load_as_they_are(tmp_path):
    source = _resnet18()
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "r.safetensors"
    )

    for name in ("resnet18.pth", "r.safetensors"):
        target = build_model(ResNetConfig(depth=18), (3, 32, 32), 10)
        load_weights_(target, tmp_path / name)
        for key, tensor in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], tensor), (name, key)


def test_a_wrapper_prefix_is_stripped_and_a_missing_one_is_hinted(tmp_path):
    source = build_model(CNNConfig(widths=[4]), (1, 8, 8), 3)
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": wrapped}, tmp_path / "ddp.pt")  # a Lightning-style wrapper
    target = build_model(CNNConfig(widths=[4]), (1, 8, 8), 3)

    with pytest.raises(RecipeError, match="weights_prefix = 'module.'"):
        load_weights_(target, tmp_path / "ddp.pt")
    load_weights_(target, tmp_path / "ddp.pt", prefix="module.")

    assert torch.equal(
        target.state_dict()["classifier.weight"], source.state_dict()["classifier.weight"]
    )


def test_wrong_keys_are_listed_by_kind(tmp_path):
    state = build_model(CNNConfig(widths=[4]), (1, 8, 8), 3).state_dict()
    state["extra.weight"] = torch.zeros(2)
    state["classifier.weight"] = torch.zeros(5, 4)
    del state["classifier.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")

    with pytest.raises(RecipeError) as info:
        load_weights_(build_model(CNNConfig(widths=[4]), (1, 8, 8), 3), tmp_path / "w.safetensors")

    message = str(info.value)
    assert message.startswith("model.weights: the weights do not fit the model")
    assert "1 missing: classifier.bias" in message
    assert "1 unexpected: extra.weight" in message
    assert "1 mis-shaped: classifier.weight (5, 4) (model: (3, 4))" in message
    assert info.value.exit_code == 2


def test_a_pickled_module_is_refused_and_says_why(tmp_path):
    torch.save(build_model(CNNConfig(widths=[4]), (1, 8, 8), 3), tmp_path / "whole.pt")

    with pytest.raises(RecipeError, match="refused: it holds more than tensors") as info:
        load_weights_(build_model(CNNConfig(widths=[4]), (1, 8, 8), 3), tmp_path / "whole.pt")

    assert "pickle runs arbitrary code" in str(info.value)
    assert "state_dict()" in str(info.value)


def test_a_missing_or_foreign_file_is_a_recipe_error(tmp_path):
    model = build_model(CNNConfig(widths=[4]), (1, 8, 8), 3)
    (tmp_path / "fake.safetensors").write_bytes(b"not safetensors at all")

    with pytest.raises(RecipeError, match="weights file not found"):
        load_weights_(model, tmp_path / "nope.safetensors")
    with pytest.raises(RecipeError, match="not a readable safetensors file"):
        load_weights_(model, tmp_path / "fake.safetensors")
