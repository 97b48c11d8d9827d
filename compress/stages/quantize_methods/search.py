"""The measuring searches: `auto` (whole-model formats against fp32) and `placement`
(static int8 only where it is faster). Both score candidates on validation samples
within `auto_val_accuracy_drop_max` and time them on the recipe's runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compress.quantization.auto import search
from compress.quantization.placement import PlacementOptions, SearchInputs, search_placement
from compress.recipe.quantize_methods import AutoConfig, PlacementConfig
from compress.stages.quantize_methods.base import QuantizeMethod, register_quantize_method


class SearchMethod(QuantizeMethod):
    def search_inputs(self) -> tuple:
        """What the measuring searches take, in their order: calibration samples,
        validation inputs and labels, runtime, signature, the accuracy limit."""
        val_x = self.val_samples()
        return (
            self.calibration_x(),
            val_x,
            self.val_labels(val_x),
            self.ctx.recipe.runtime,
            self.ctx.spec.signature,
            self.config.auto_val_accuracy_drop_max,
        )


@register_quantize_method("auto")
class AutoMethod(SearchMethod):
    """u8s8 QDQ, s8s8 QDQ and dynamic int8 measured against fp32; the fastest ships."""

    config_class = AutoConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config = self.config
        return search(
            fp32_path,
            out_path,
            *self.search_inputs(),
            per_channel=config.per_channel,
            calibration=config.calibration,
            reduce_range=self.reduce_range(),
            op_types=config.op_types,
        )


@register_quantize_method("placement")
class PlacementMethod(SearchMethod):
    """Static int8 with the stage's settings, layers that are slower in int8 returned
    to fp32 (compress/quantization/placement.py)."""

    config_class = PlacementConfig

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        config = self.config
        options = PlacementOptions(
            max_candidates=config.placement_max_candidates,
            repeats=config.placement_repeats,
            rounds=config.placement_rounds,
            min_gain=config.placement_min_gain,
        )
        inputs = SearchInputs(*self.search_inputs())
        return search_placement(fp32_path, out_path, inputs, self.static_settings(), options)
