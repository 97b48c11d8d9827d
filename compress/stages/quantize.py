"""`quantize`: make the deployable model smaller (and, where the CPU allows, faster).

The stage hands the work to the quantization method its table names (static, with a
fallback, dynamic, int4, qat, the kmeans / pow2 codebooks, or the auto and placement
searches: compress/stages/quantize_methods/), each registered by name with its own
config class. A new method is one module (docs/adding-a-quantization-method.md).
"""

from __future__ import annotations

from compress.recipe.stages import QuantizeStageConfig, method_name
from compress.stages.base import RunContext, Stage, StageResult
from compress.stages.quantize_methods import QUANTIZE_METHODS
from compress.stages.registry import register_stage


@register_stage("quantize")
class QuantizeStage(Stage):
    """Write the quantized ONNX model the config's method makes.

    The float torch model passes through unchanged (the export stage checks the
    quantized model's predictions against it); the deployable artifact is the
    quantized ONNX file, and the details record what actually runs in int8.
    What the stage needs (a torch model, labels) is its method's config's
    declaration (`QuantizeStageConfig`), which the loader reads.
    """

    config_class = QuantizeStageConfig

    def _run(self, ctx: RunContext) -> StageResult:
        method = QUANTIZE_METHODS.get(method_name(self.config.model_dump()))
        return method(self.config, ctx).run()
