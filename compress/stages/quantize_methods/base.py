"""The quantization-method interface, its registry, and what several methods read
from the run: calibration samples, validation samples and labels, static settings.

A method is a small class registered by name, like a stage: `config_class` (its recipe
keys, a `QuantizeStageConfig` subclass) and `quantize(fp32_path, out_path) -> dict`,
which writes the quantized ONNX file and returns the settings the report records.
The quantize stage writes the float ONNX file first, counts what runs in int8 after,
and asks the method's config whether the recipe needs a torch model or labels for it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch

from compress.models.signature import Samples, sample_count
from compress.quantization.static import count_runtime_ops, preprocess_warnings
from compress.recipe.stages import QUANTIZE_METHOD_CONFIGS, QuantizeStageConfig
from compress.registry import Registry
from compress.runtime.evaluate import onnx_predictions, split_samples
from compress.runtime.machine import int8_saturates
from compress.runtime.onnx_export import export_onnx
from compress.stages.base import RunContext, StageResult

QUANTIZE_METHODS: Registry[type[QuantizeMethod]] = Registry("quantization method")

# Validation rows a search scores candidates on when the split is read lazily (image
# folders): its candidates are scored again and again, so the rows are decoded once and held.
SEARCH_ROWS = 2048


def register_quantize_method(name: str):
    """Class decorator registering a QuantizeMethod under the name a recipe selects it by.

    Its `config_class` joins `QUANTIZE_METHOD_CONFIGS` under the same name (the built-in
    ones are there already), so a quantize table that names it validates with it.

    Example:
        >>> @register_quantize_method("static")  # doctest: +SKIP
        ... class StaticMethod(QuantizeMethod):
        ...     config_class = StaticConfig
    """

    def decorator(method_class: type[QuantizeMethod]) -> type[QuantizeMethod]:
        QUANTIZE_METHOD_CONFIGS.ensure(name, method_class.config_class)
        return QUANTIZE_METHODS.register(name)(method_class)

    return decorator


class QuantizeMethod:
    """One way to quantize: `run` is the template, subclasses implement `quantize`.

    Args:
        config: the validated quantize table (an instance of `config_class`).
        ctx: the run context of the quantize stage.

    Example:
        >>> @register_quantize_method("copy")  # doctest: +SKIP
        ... class CopyMethod(QuantizeMethod):
        ...     config_class = CopyConfig
        ...     def quantize(self, fp32_path, out_path):
        ...         shutil.copyfile(fp32_path, out_path)
        ...         return {"mode": "copy"}
    """

    config_class: ClassVar[type[QuantizeStageConfig]]

    def __init__(self, config: Any, ctx: RunContext):
        self.config = config
        self.ctx = ctx

    def run(self) -> StageResult:
        """Float ONNX file -> `quantize` -> the quantized file and what runs in int8.

        The float torch model passes through unchanged (the export stage checks the
        quantized model's predictions against it)."""
        ctx = self.ctx
        fp32_path = ctx.workdir / "model.fp32.onnx"
        float_onnx(ctx, fp32_path)
        out_path = ctx.workdir / "model.onnx"
        settings = self.quantize(fp32_path, out_path)
        ops = count_runtime_ops(out_path, threads=ctx.recipe.runtime.threads)
        fp32_path.unlink()  # the quantized file is the artifact; fp32 lives in the previous stage
        details = {"quantization": self.details(settings, ops)}
        # a method whose ORT pre-processing failed says so (static, fallback, searches)
        return StageResult(ctx.model, ctx.spec, onnx_path=out_path, details=details,
                           warnings=preprocess_warnings(settings))  # fmt: skip

    def quantize(self, fp32_path: Path, out_path: Path) -> dict[str, Any]:
        """Write the quantized model to `out_path`; return the settings it used."""
        raise NotImplementedError

    def details(self, settings: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
        """The report's `quantization` table: the settings, then the runtime's op counts."""
        return {**settings, **ops}

    # ------------------------------------------------------------ what methods share

    def static_settings(self) -> dict[str, Any]:
        """The quantize_static_onnx settings (static, fallback, qat, placement)."""
        config = self.config
        return {
            "activation_type": config.activation_type,
            "weight_type": config.weight_type,
            "per_channel": config.per_channel,
            "calibration": config.calibration,
            "reduce_range": self.reduce_range(),
        }

    def reduce_range(self) -> bool:
        if self.config.reduce_range == "auto":
            return int8_saturates()
        return self.config.reduce_range

    def calibration_x(self) -> Samples:
        """Real training samples for range calibration: one array for a one-input
        model, arrays keyed by input name otherwise."""
        ctx = self.ctx
        generator = torch.Generator().manual_seed(ctx.seed)
        train = ctx.data.train
        count = min(self.config.calibration.samples, len(train))
        chosen = torch.randperm(len(train), generator=generator)[:count]
        rows = train.take(chosen)
        return rows[0].numpy() if len(rows) == 1 else ctx.spec.signature.feed(rows)

    def val_samples(self):
        """Validation inputs the searches (auto, placement, fallback) score on, as arrays:
        all of an in-memory split, the first SEARCH_ROWS of a lazy one (decoded once)."""
        val = self.ctx.data.val
        rows = None if val.reader is None else SEARCH_ROWS
        return split_samples(val, self.ctx.spec.signature, max_rows=rows)

    def val_labels(self, val_x, fp32_path: Path | None = None):
        """The labels the searches score accuracy on. Without labels: the float model's
        own predictions, so their "accuracy" is top-1 agreement with it."""
        val = self.ctx.data.val
        labels = val.y.numpy()[: sample_count(val_x)]
        if val.labeled:
            return labels
        fp32_path = fp32_path or self.ctx.workdir / "model.fp32.onnx"
        return onnx_predictions(fp32_path, val_x).argmax(1)


def float_onnx(ctx: RunContext, fp32_path: Path) -> None:
    """The float model to quantize: for an ONNX-input recipe the current ONNX file
    as it is; else the previous stage's deployed export of this very model (the
    runner exported and parity-checked it; a second export costs seconds for a
    transformer and gives the same graph), or a fresh export when there is none."""
    if ctx.model is None:
        shutil.copyfile(ctx.onnx_path, fp32_path)
    elif ctx.onnx_path is None and ctx.input_onnx is not None and ctx.input_onnx.is_file():
        shutil.copyfile(ctx.input_onnx, fp32_path)
    else:
        export_onnx(ctx.model, ctx.spec.signature, fp32_path, debug=ctx.debug)
