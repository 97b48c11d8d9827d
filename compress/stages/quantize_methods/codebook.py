"""Per-layer codebook weights (kmeans, pow2): the file stores codebook + packed indices."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from compress.quantization.codebook import encode_onnx, weighted_layers
from compress.quantization.layers import resolve_per_layer
from compress.recipe.quantize_methods import KMeansConfig, Pow2Config
from compress.stages.quantize_methods.base import QuantizeMethod, register_quantize_method

REBUILD_OPS = {"Gather", "BitShift", "BitwiseAnd"}  # what the codebook subgraph runs


class CodebookMethod(QuantizeMethod):
    """Encode each Conv/Linear weight with `bits` (or its per-layer bits, or skip it)."""

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config, model = self.config, self.ctx.model
        if model is None:  # an ONNX file: its weighted nodes' weight names
            weighted = weighted_layers(fp32_path)
        else:
            weighted = [
                name
                for name, module in model.named_modules()
                if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear))
            ]
        per_layer = resolve_per_layer(weighted, config.layers, config.bits, "layers")
        encoded = encode_onnx(fp32_path, out_path, config.method, config.bits, per_layer)
        return {"method": config.method, "bits": config.bits, **encoded}

    def details(self, settings: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
        # folded_by_runtime: True when ORT's optimizer turned the codebook subgraphs
        # back into constant weights at load time (inference pays nothing for them)
        return {**settings, "folded_by_runtime": not (REBUILD_OPS & set(ops["ops"])), **ops}


@register_quantize_method("kmeans")
class KMeansMethod(CodebookMethod):
    """k-means weight sharing with 2^bits centroids per layer (Deep Compression)."""

    config_class = KMeansConfig


@register_quantize_method("pow2")
class Pow2Method(CodebookMethod):
    """Weights snapped to 0 or +-2^k."""

    config_class = Pow2Config
