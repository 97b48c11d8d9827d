"""ONNX-file models without a run: counting, fidelity, what unlabeled data refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.errors import RecipeError
from compress.models import build_model
from compress.models.onnx_file import count_onnx_macs, count_onnx_params
from compress.models.signature import InputSignature
from compress.models.stats import count_macs
from compress.recipe.loader import validate_recipe
from compress.recipe.schema import CNNConfig, MLPConfig, MobileNetConfig
from compress.runtime.fidelity import fidelity
from compress.runtime.onnx_export import export_onnx
from compress.testing import tiny_recipe_dict


@pytest.mark.parametrize(
    ("config", "shape"),
    [
        (CNNConfig(widths=[8, 16]), (1, 8, 8)),
        (MLPConfig(hidden=[32, 16]), (20,)),
        (MobileNetConfig(stem_width=8, widths=[16, 24]), (3, 16, 16)),  # grouped convs
    ],
    ids=["cnn", "mlp", "mobilenet"],
)
def test_macs_counted_on_the_onnx_graph_match_the_torch_count(tmp_path, config, shape):
    torch.manual_seed(0)
    model = build_model(config, shape, 10).eval()
    signature = InputSignature.image(shape)
    export_onnx(model, signature, tmp_path / "m.onnx")

    assert count_onnx_macs(tmp_path / "m.onnx", signature) == count_macs(model, signature)
    # BatchNorm folds into the convolutions on export: never more values than torch's
    params = count_onnx_params(tmp_path / "m.onnx")
    assert 0 < params <= sum(p.numel() for p in model.parameters())


def test_fidelity_is_agreement_and_kl_of_the_reference():
    reference = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    same = fidelity(reference, reference.copy())
    assert same == {"agreement": 1.0, "kl_mean": 0.0}
    moved = fidelity(reference, reference[[1, 1, 2]])
    assert moved["agreement"] == pytest.approx(2 / 3)
    assert moved["kl_mean"] > 0.0
    with pytest.raises(ValueError, match="against reference"):
        fidelity(reference, reference[:2])


def test_unlabeled_data_refuses_training_stages_and_accuracy_budgets_by_key_path():
    unlabeled = {"source": "image-folder", "path": "calibration", "labeled": False,
                 "num_classes": 4}  # fmt: skip
    with pytest.raises(RecipeError) as caught:
        validate_recipe(
            tiny_recipe_dict(
                data=unlabeled,
                budgets={"accuracy_drop_max": 0.01, "agreement_min": 0.99},
                stages=[{"type": "train", "epochs": 1}, {"type": "quantize"}, {"type": "export"}],
            )
        )
    message = str(caught.value)
    assert "stages[0].type (train): 'train' trains on labels" in message
    assert "budgets.accuracy_drop_max reads accuracy" in message
    assert "agreement_min" in message  # what to use instead
    assert "stages[1]" not in message  # quantize and export need no labels


def test_agreement_min_is_a_budget_key():
    recipe = validate_recipe(tiny_recipe_dict(budgets={"agreement_min": 0.98}))
    assert recipe.budgets.limits() == {"agreement_min": 0.98}
