"""Model families: each config finds its family, families name their pruning adapters,
and validating `[model]` goes through the registry without loading torch."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Literal

import pytest
import torch
from torch import nn

from compress.errors import RecipeError
from compress.models import FAMILIES, ModelFamily, family_of, new_model, register_family
from compress.models.checkpoint import describe_model, spec_from_meta
from compress.models.families.user import UserModelFamily
from compress.models.signature import InputSignature
from compress.pruning.attention import ATTENTION_FAMILIES, adapters_for
from compress.recipe.schema import (
    CallableModelConfig,
    CNNConfig,
    MLPConfig,
    MobileNetConfig,
    ModelConfigBase,
    OnnxModelConfig,
    ResNetConfig,
    TransformerConfig,
)
from compress.runtime.onnx_export import export_onnx

pytestmark = pytest.mark.unit

IMAGE_CONFIGS = {
    "cnn": CNNConfig(widths=[4]),
    "resnet": ResNetConfig(widths=[4]),
    "mlp": MLPConfig(hidden=[8]),
    "mobilenet": MobileNetConfig(stem_width=4, widths=[8]),
    "transformer": TransformerConfig(patch_size=4, embed_dim=8, num_heads=2, depth=1),
}


@pytest.mark.parametrize("name", sorted(IMAGE_CONFIGS))
def test_each_image_family_builds_its_config_for_the_data(name):
    config = IMAGE_CONFIGS[name]

    model, spec = new_model(config, (1, 8, 8), 3)

    assert family_of(config) is family_of(spec.config)
    assert type(family_of(config)) is FAMILIES.get(name)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert spec.inputs is None  # the data's inputs: one image tensor


def test_resnet_with_a_depth_builds_torchvisions_layout():
    model, _ = new_model(ResNetConfig(depth=18), (3, 32, 32), 10)

    assert type(model).__name__ == "TorchvisionResNet"
    assert sum(p.numel() for p in model.parameters()) == 11181642


def test_a_user_callable_is_its_own_family_and_every_adapter_looks_at_it():
    config = CallableModelConfig(architecture="compress.testing:TinyCNN")
    model, _ = new_model(config, (1, 8, 8), 4)

    assert isinstance(family_of(config), UserModelFamily)
    assert model.classifier.out_features == 4  # num_classes passed through
    assert adapters_for(model) == list(ATTENTION_FAMILIES)


@pytest.mark.parametrize(("name", "adapters"), [("cnn", []), ("transformer", ["fused-qkv"])])
def test_a_built_model_is_pruned_by_the_adapters_its_family_names(name, adapters):
    model, _ = new_model(IMAGE_CONFIGS[name], (1, 8, 8), 3)

    assert adapters_for(model) == adapters


def test_an_onnx_file_has_no_family():
    with pytest.raises(RecipeError) as info:
        family_of(OnnxModelConfig(onnx="model.onnx"))

    assert "no registered family builds a OnnxModelConfig; families: cnn, " in str(info.value)


_PROBE = """
import json, sys
from compress.recipe.loader import validate_recipe
recipe = {
    "name": "probe",
    "model": {"architecture": "hf-encoder", "path": "bert", "layers": [0, 1]},
    "stages": [{"type": "train"}, {"type": "export"}],
}
model = validate_recipe(recipe).model
print(json.dumps([type(model).__name__, "torch" in sys.modules, "transformers" in sys.modules]))
"""


def test_validating_a_model_table_loads_its_family_but_not_torch():
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120, check=False
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["HFEncoderConfig", False, False]


class TwoOutputConfig(ModelConfigBase):
    """A family whose model returns a second output after its logits."""

    architecture: Literal["two-output"] = "two-output"


class TwoOutput(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classifier(x), x * 2


@register_family("two-output")
class TwoOutputFamily(ModelFamily):
    config_class = TwoOutputConfig

    def build(self, config, input_shape, num_classes):
        return TwoOutput(num_classes)

    def signature(self, config, data):
        inputs = (data or InputSignature.image((4,))).inputs
        return InputSignature(inputs, extra_outputs=("doubled",))


def test_a_family_decides_its_signature_and_the_export_names_its_extra_outputs(tmp_path):
    import onnx

    model, spec = new_model(TwoOutputConfig(), (4,), 3)

    path = export_onnx(model, spec.signature, tmp_path / "two.onnx")

    assert spec.signature.extra_outputs == ("doubled",)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logits", "doubled"]
    meta = describe_model(model, spec)
    assert meta["inputs"]["extra_outputs"] == ["doubled"]
    assert spec_from_meta(meta, "model.json").signature == spec.signature


def test_a_signature_without_extra_outputs_writes_what_it_wrote_before():
    assert InputSignature.image((1, 8, 8)).to_dict() == {
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        "output": "logits",
    }
