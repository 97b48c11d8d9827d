"""Training device and precision: resolved once, CUDA refused cleanly without a GPU."""

from __future__ import annotations

import re

import pytest
import torch

from compress.errors import RecipeError
from compress.models import build_model
from compress.recipe.schema import CNNConfig, TrainingConfig, TrainingPlacementConfig
from compress.testing import tiny_bundle
from compress.training import SingleProcess, evaluate, fit
from compress.training.device import resolve_placement

pytestmark = pytest.mark.unit

NO_GPU = not torch.cuda.is_available()


def test_auto_is_the_cpu_in_fp32_without_a_gpu():
    if not NO_GPU:
        pytest.skip("this machine has a GPU")

    placement = resolve_placement(TrainingPlacementConfig())

    assert placement.identity() == {"device": "cpu", "precision": "fp32"}


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_a_recipe_error_naming_the_device(device):
    if not NO_GPU:
        pytest.skip("this machine has a GPU")

    with pytest.raises(RecipeError, match=f"training.device: '{device}' asks for a CUDA GPU"):
        resolve_placement(TrainingPlacementConfig(device=device))


def test_an_unknown_device_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda, cuda:N"):
        TrainingPlacementConfig(device="tpu")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu_and_keeps_fp32_weights(precision):
    data = tiny_bundle(num_classes=3)
    config = TrainingConfig(epochs=3, batch_size=16, optimizer={"name": "adam", "lr": 0.01})
    placement = resolve_placement(TrainingPlacementConfig(device="cpu", precision=precision))
    results = {}
    for name, strategy in (("fp32", SingleProcess()), (precision, SingleProcess(placement))):
        torch.manual_seed(0)
        model = build_model(CNNConfig(widths=[8]), data.input_shape, data.num_classes)
        fit(model, data, config, seed=0, strategy=strategy)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        results[name] = evaluate(model, data.val)["accuracy"]

    assert results[precision] >= results["fp32"] - 0.1, results  # tiny data: coarse


def test_bf16_autocast_really_computes_in_bf16():
    placement = resolve_placement(TrainingPlacementConfig(device="cpu", precision="bf16"))
    layer = torch.nn.Linear(4, 2)

    with placement.autocast():
        out = layer(torch.randn(3, 4))

    assert out.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(NO_GPU, reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_on_the_gpu_hands_back_fp32_cpu_weights(precision):
    data = tiny_bundle(num_classes=3)
    placement = resolve_placement(TrainingPlacementConfig(device="cuda", precision=precision))
    torch.manual_seed(0)
    model = build_model(CNNConfig(widths=[8]), data.input_shape, data.num_classes)
    teacher = build_model(CNNConfig(widths=[8]), data.input_shape, data.num_classes).eval()
    from compress.recipe.stages import DistillConfig

    config = TrainingConfig(epochs=2, batch_size=16)
    strategy = SingleProcess(placement)
    result = fit(
        model, data, config, seed=0, strategy=strategy, teacher=teacher, distill=DistillConfig()
    )

    assert placement.device.type == "cuda"
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    assert all(p.device.type == "cpu" for p in teacher.parameters())
    assert result.best["val_accuracy"] >= 0.0 and len(result.history) == 2


@pytest.mark.parametrize(
    "config, says",
    [({"backend": "nccl"}, "'nccl' (one process per GPU) is not built"),
     ({"strategy": "fsdp"}, "'fsdp' needs CUDA GPUs and nccl")],
)  # fmt: skip
def test_multi_gpu_paths_are_refused_cleanly_as_recipe_errors(config, says):
    from compress.distributed.session import resolve
    from compress.recipe.schema import DistributedConfig

    with pytest.raises(RecipeError, match=re.escape(says)):
        resolve(DistributedConfig(**config), where="r.toml")
