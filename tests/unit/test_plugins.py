"""A stage and a quantization method added from outside the package, through the public
registration alone (`register_stage`, `register_quantize_method`): their recipe keys
validate with their own config classes, the loader's cross-stage rules apply what they
declare, and a recipe runs them."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
from pydantic import Field

from compress.errors import RecipeError
from compress.recipe import validate_recipe
from compress.recipe.stage_common import StageConfigBase
from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, STAGE_CONFIGS, QuantizeStageConfig
from compress.runner import Runner
from compress.stages import STAGES, Stage, StageResult, register_stage
from compress.stages.quantize_methods import (
    QUANTIZE_METHODS,
    QuantizeMethod,
    register_quantize_method,
)
from compress.testing import tiny_recipe_dict

pytestmark = pytest.mark.unit

TRAIN = {"type": "train", "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}}


class LogitScaleConfig(StageConfigBase):
    """Multiply the classifier's output by a positive factor (predictions unchanged)."""

    followers = ("export",)
    followers_reason = " (a toy stage that wants to be near the end)"

    type: Literal["toy-scale"]
    factor: float = Field(2.0, gt=0, description="The factor.")


class LogitScaleStage(Stage):
    config_class = LogitScaleConfig

    def _run(self, ctx) -> StageResult:
        with torch.no_grad():
            ctx.model.classifier.weight.mul_(self.config.factor)
            ctx.model.classifier.bias.mul_(self.config.factor)
        return StageResult(ctx.model, ctx.spec, details={"factor": self.config.factor})


class RoundConfig(QuantizeStageConfig):
    """mode = "toy-round": float weights rounded to `decimals` (no integer types)."""

    mode: Literal["toy-round"] = Field("toy-round", description="toy-round: this method.")
    method: Literal["uniform"] = "uniform"
    format: Literal["qdq"] = "qdq"
    decimals: int = Field(1, ge=0, description="Decimals kept.")


class RoundMethod(QuantizeMethod):
    config_class = RoundConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(fp32_path))
        for tensor in model.graph.initializer:
            array = numpy_helper.to_array(tensor)
            if array.dtype == np.float32:
                rounded = np.round(array, self.config.decimals).astype(np.float32)
                tensor.CopyFrom(numpy_helper.from_array(rounded, tensor.name))
        onnx.save(model, str(out_path))
        return {"mode": "toy-round", "decimals": self.config.decimals}


@pytest.fixture
def plugins():
    """Register the toy stage and method; the registries are restored afterwards."""
    with ExitStack() as stack:
        for registry in (STAGES, STAGE_CONFIGS, QUANTIZE_METHODS, QUANTIZE_METHOD_CONFIGS):
            stack.enter_context(registry.scoped())
        register_stage("toy-scale")(LogitScaleStage)
        register_quantize_method("toy-round")(RoundMethod)
        yield


def _error(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate_recipe(raw, "t.toml")
    return str(info.value)


def _run(tmp_path: Path, stages: list[dict]) -> dict:
    recipe = validate_recipe(tiny_recipe_dict(stages=stages), "t.toml")
    outcome = Runner(recipe, tmp_path / "run", use_cache=False).run()
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert outcome.exit_code == 0, report
    return report


def test_a_toy_stage_validates_its_own_keys(plugins):
    recipe = validate_recipe(tiny_recipe_dict(stages=[TRAIN, {"type": "toy-scale", "factor": 3}]))

    assert isinstance(recipe.stages[1], LogitScaleConfig)
    assert recipe.stages[1].factor == 3.0
    bad = tiny_recipe_dict(stages=[TRAIN, {"type": "toy-scale", "factr": 3}])
    assert _error(bad) == "t.toml: stages[1].factr: unknown key, got 3"
    assert "toy-scale" in _error(tiny_recipe_dict(stages=[TRAIN, {"type": "toy-scal"}]))


def test_the_loader_applies_what_a_toy_stage_declares(plugins):
    stages = [TRAIN, {"type": "toy-scale"}, {"type": "train", "name": "again"}]

    message = _error(tiny_recipe_dict(stages=stages))

    assert message == (
        "t.toml: stages: only export may follow toy-scale (a toy stage that wants to be "
        "near the end) (stage order: train -> toy-scale -> train)"
    )
    first = _error(tiny_recipe_dict(stages=[{"type": "toy-scale"}]))
    assert "the first stage is 'toy-scale' but the model is untrained" in first


def test_a_toy_stage_is_unknown_without_its_registration():
    assert "toy-scale" not in STAGE_CONFIGS
    message = _error(tiny_recipe_dict(stages=[TRAIN, {"type": "toy-scale"}]))
    assert message.startswith("t.toml: stages[1].type: must be one of train, distill, prune")


def test_a_recipe_runs_a_toy_stage(plugins, tmp_path):
    report = _run(tmp_path, [TRAIN, {"type": "toy-scale", "factor": 4}, {"type": "export"}])

    train, scale = report["stages"][0], report["stages"][1]
    assert scale["type"] == "toy-scale"
    assert scale["details"] == {"factor": 4.0}
    # logits x4: the same predictions, so the same accuracy
    assert scale["metrics"]["accuracy"] == train["metrics"]["accuracy"]


def test_a_toy_method_validates_its_own_keys_and_names_itself(plugins):
    quantize = {"type": "quantize", "mode": "toy-round", "decimals": 2}
    recipe = validate_recipe(tiny_recipe_dict(stages=[TRAIN, quantize, {"type": "export"}]))

    assert isinstance(recipe.stages[1], RoundConfig)
    assert recipe.stages[1].label() == 'quantize, mode = "toy-round"'
    bits = tiny_recipe_dict(stages=[TRAIN, {**quantize, "bits": 3}, {"type": "export"}])
    assert _error(bits) == (
        "t.toml: stages[1] (quantize, mode = \"toy-round\"): unknown key 'bits' "
        '(a key of method = "kmeans", method = "pow2")'
    )
    negative = tiny_recipe_dict(stages=[TRAIN, {**quantize, "decimals": -1}])
    assert _error(negative) == (
        't.toml: stages[1] (quantize, mode = "toy-round"): decimals: must be >= 0, got -1'
    )
    unknown = tiny_recipe_dict(stages=[TRAIN, {"type": "quantize", "mode": "toy-rond"}])
    assert "'toy-round'" in _error(unknown)


def test_a_recipe_runs_a_toy_method(plugins, tmp_path):
    import onnx
    from onnx import numpy_helper

    quantize = {"type": "quantize", "mode": "toy-round", "decimals": 3}
    report = _run(tmp_path, [TRAIN, quantize, {"type": "export"}])

    details = report["stages"][1]["details"]["quantization"]
    assert (details["mode"], details["decimals"]) == ("toy-round", 3)
    shipped = onnx.load(str(tmp_path / "run" / "final" / "model.onnx"))
    weights = [numpy_helper.to_array(t) for t in shipped.graph.initializer]
    floats = [w for w in weights if w.dtype == np.float32 and w.size > 1]
    assert floats and all(np.allclose(w, np.round(w, 3), atol=1e-6) for w in floats)
