"""The quantize stage's config: one config class per quantization method, chosen by
the table's own keys, and the tables several methods share.

A quantize table names its method the way recipes always have: `format = "auto"` or
`"placement"`, else `method = "kmeans"` or `"pow2"`, else `mode` (`"static"` by default,
`"dynamic"`, `"qat"`, `"int4"`), and a static table with a `fallback` table is the
`fallback` method. Each method's class (compress/recipe/quantize_methods.py, or a
plugin's own module) accepts only the keys it reads, so a key of another method is an
error naming the stage's method (`stages[3] (quantize, mode = "static"): unknown key
'bits' (a key of method = "kmeans", method = "pow2")`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError
from pydantic_core import PydanticCustomError

from compress.recipe.schema import CosineSchedule, OptimizerConfig, ScheduleConfig, SGDConfig
from compress.recipe.schema import StrictModel as _Strict
from compress.recipe.stage_common import FinetuneConfig, StageConfigBase
from compress.registry import Registry

QUANTIZE_METHOD_CONFIGS: Registry[type[QuantizeStageConfig]] = Registry("quantization method")
"""Method name -> its config class. Built-ins register in quantize_methods.py; a plugin's
`@register_quantize_method` (compress/stages/quantize_methods/base.py) registers its own."""

# The keys that name a method, in the order they are read, with the value that leaves
# the choice to the next key ("qdq": no whole-model search; "uniform": int8, no codebook).
SELECTORS = (("format", "qdq"), ("method", "uniform"), ("mode", "static"))
_LABEL = "(quantize, {})"  # marks a location element as "inside this method's table"


def method_name(table: dict[str, Any]) -> str:
    """The registered method a quantize table (raw or dumped) names.

    Example:
        >>> method_name({"type": "quantize", "mode": "qat"})
        'qat'
        >>> method_name({"type": "quantize", "fallback": {}})
        'fallback'
    """
    for key, neutral in SELECTORS:
        name = table.get(key, neutral)
        if name != neutral or key == "mode":
            break
    for refined, config in QUANTIZE_METHOD_CONFIGS.items():
        if config.refines is not None and config.refines[0] == name:
            if table.get(config.refines[1]) is not None:
                return refined
    return name


class QuantizeStageConfig(StageConfigBase):
    """Quantize the current model: int8 with ONNX Runtime (QDQ), or a codebook.

    `QuantizeStageConfig.model_validate(table)` returns the config of the table's method.
    Its method's class attributes refine the stage's: `qat` needs a torch model and
    trains on labels, the others run on an ONNX file too.

    Attributes:
        selected_by: the key whose value is this method's name (`mode`, `method` or
            `format`); a plugin picks one and narrows that field to its name.
        refines: (method, key): this method is that method with `key` set (fallback:
            static with a `fallback` table).
    """

    needs_torch_model = False
    followers = ("export",)
    followers_reason = " (its output is an int8 ONNX model)"
    selected_by: ClassVar[str] = "mode"
    refines: ClassVar[tuple[str, str] | None] = None

    type: Literal["quantize"]
    method: str = Field(
        "uniform",
        description="uniform: int8 with ONNX Runtime (see `mode`, `format`). kmeans: "
        "per-layer k-means weight sharing with 2^bits centroids (Deep Compression). pow2: "
        "weights snapped to 0 or +-2^k. kmeans and pow2 shrink the file; ORT folds the "
        "codebook at load, so they run as fast as fp32, not faster.",
    )
    mode: str = Field(
        "static",
        description="static: calibrated activations (QDQ); with a `fallback` table, "
        "sensitive layers return to float. dynamic: activations quantized per batch at "
        "run time, for MatMul/Gemm models (slow on convolutions). qat: static QDQ whose "
        "scales and weights are trained with fake quantization. int4: weight-only "
        "block-wise 4-bit MatMul (transformers' Linear layers).",
    )
    format: str = Field(
        "qdq",
        description="qdq: the configured method. auto: measure u8s8 QDQ, s8s8 QDQ and "
        "dynamic int8 against fp32, keep the fastest within the accuracy limit (or fp32). "
        "placement: static int8, then layers whose int8 costs more time than it saves "
        "return to fp32.",
    )

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> QuantizeStageConfig:
        """On this base class: validate `obj` with its method's class (see module doc)."""
        if cls is not QuantizeStageConfig or isinstance(obj, QuantizeStageConfig):
            return obj if isinstance(obj, cls) else super().model_validate(obj, *args, **kwargs)
        return _validate_method(obj)

    @classmethod
    def method_label(cls, name: str) -> str:
        """How messages name the method registered as `name`: `mode = "qat"`."""
        if cls.refines is not None:
            base = QUANTIZE_METHOD_CONFIGS.get(cls.refines[0])
            return f"{base.method_label(cls.refines[0])}, {cls.refines[1]}"
        return f'{cls.selected_by} = "{name}"'

    def label(self) -> str:
        return f"quantize, {type(self).method_label(method_name(self.model_dump()))}"

    @classmethod
    def onnx_forms(cls, name: str) -> list[str]:
        methods = [
            config.method_label(method)
            for method, config in QUANTIZE_METHOD_CONFIGS.items()
            if not config.needs_torch_model
        ]
        return [f"{name} ({'; '.join(methods)})"] if methods else []


def _validate_method(obj: Any) -> QuantizeStageConfig:
    """Validate a raw quantize table with its method's config class; errors carry
    the method in their location (`(quantize, mode = "static")`), which the loader
    prints after the stage's key path."""
    if not isinstance(obj, dict):
        raise PydanticCustomError("model_type", "must be a table")
    name = method_name(obj)
    if not isinstance(name, str) or name not in QUANTIZE_METHOD_CONFIGS:
        raise _unknown_method(obj, name)
    config = QUANTIZE_METHOD_CONFIGS.get(name)
    try:
        return config.model_validate(obj)
    except ValidationError as exc:
        raise _labelled(exc, _LABEL.format(config.method_label(name))) from None


def _unknown_method(obj: dict[str, Any], name: str) -> ValidationError:
    key = next((k for k, neutral in SELECTORS if obj.get(k, neutral) == name), "mode")
    neutral = dict(SELECTORS)[key]
    allowed = [neutral] if key != "mode" else []
    allowed += [
        method
        for method, config in QUANTIZE_METHOD_CONFIGS.items()
        if config.selected_by == key and config.refines is None
    ]
    error = {
        "type": "literal_error",
        "loc": (key,),
        "input": name,
        "ctx": {"expected": ", ".join(repr(value) for value in allowed)},
    }
    return ValidationError.from_exception_data("QuantizeStageConfig", [error])


def _owners(key: str) -> str:
    """' (a key of method = "kmeans", ...)' for a key other methods accept."""
    owners = [
        config.method_label(method)
        for method, config in QUANTIZE_METHOD_CONFIGS.items()
        if key in config.model_fields
    ]
    return f" (a key of {', '.join(owners)})" if owners else ""


def _labelled(exc: ValidationError, label: str) -> ValidationError:
    errors = []
    for error in exc.errors():
        kind = error["type"]
        if kind == "extra_forbidden" and len(error["loc"]) == 1:
            key = str(error["loc"][0])
            kind = PydanticCustomError("extra_forbidden", f"unknown key {key!r}{_owners(key)}")
        item = {"type": kind, "loc": (label, *error["loc"]), "input": error.get("input")}
        if "ctx" in error and not isinstance(kind, PydanticCustomError):
            item["ctx"] = error["ctx"]
        errors.append(item)
    try:
        return ValidationError.from_exception_data(exc.title, errors)
    except (KeyError, TypeError, ValueError):  # an error kind pydantic cannot rebuild
        return exc


# --------------------------------------------------------------------------- shared tables


class CalibrationConfig(_Strict):
    """Calibration of activation ranges for static quantization."""

    method: Literal["minmax", "percentile"] = Field(
        "minmax",
        description="Range estimation method. (entropy is not offered: ORT's "
        "quantize_static does not pass its bin settings through and returns the minmax "
        "ranges, measured.)",
    )
    samples: int = Field(256, gt=0, description="Training samples used for calibration.")
    percentile: float = Field(
        99.999, gt=90, le=100, description="Percentile, for method = 'percentile'."
    )


class FallbackConfig(_Strict):
    """Accuracy-aware fallback for static int8: worst layers return to float.

    The layers int8 hurts most (each quantized alone, logit error measured on
    validation samples) return to float one at a time until validation accuracy
    is back within the allowed drop.
    """

    val_accuracy_drop_max: float = Field(
        0.01, ge=0, le=1, description="Allowed validation-accuracy drop vs the float model."
    )
    max_layers: int = Field(8, gt=0, description="Most layers returned to float.")


class QATConfig(FinetuneConfig):
    """Quantization-aware training (mode = 'qat'): fine-tune with fake quantization.

    `distill = true` (the default) adds the distillation loss against the stage's
    fp32 input model (`distill_from = 'input'`) or the run's teacher.
    """

    epochs: int = Field(2, gt=0, description="QAT epochs.")
    distill: bool = Field(True, description="Distil from the fp32 model while training.")
    optimizer: OptimizerConfig = Field(
        default_factory=lambda: SGDConfig(name="nesterov", lr=1e-3),
        description="Optimizer table. Small SGD steps: Adam moves every parameter by ~lr "
        "per step whatever its gradient, which walked the learned scales (~0.01-0.05) "
        "far off and cost a pruned Fashion-MNIST student 0.5 points at lr 1e-4 (measured).",
    )
    schedule: ScheduleConfig = Field(
        default_factory=lambda: CosineSchedule(name="cosine"),
        description="Learning-rate schedule table.",
    )
    keep_val_drop_max: float = Field(
        0.002,
        ge=0,
        le=1,
        description="The trained model ships unless its fake-quant validation accuracy is "
        "more than this below the calibrated scales' (then static int8 ships). Catches a "
        "QAT that went wrong (measured drops of 0.4-0.5 points) without picking between "
        "equals on noise.",
    )
    augment: Literal["none", "crop", "crop-flip"] | None = Field(
        "none",
        description="Augmentation while training (null: data.augment). 'none' by default: "
        "a short fine-tune of a model trained without it should see the same inputs, "
        "and the teacher's logits are computed once.",
    )
