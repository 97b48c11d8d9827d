"""Quantization methods, one class per recipe method name; importing this package
registers the built-in ones (static, fallback, dynamic, int4, qat, kmeans, pow2, auto,
placement, weight-only). docs/adding-a-quantization-method.md shows how to add one."""

from compress.stages.quantize_methods import (  # noqa: F401  (registers them)
    codebook,
    qat,
    search,
    uniform,
    weight_only,
)
from compress.stages.quantize_methods.base import (
    QUANTIZE_METHODS,
    QuantizeMethod,
    register_quantize_method,
)

__all__ = ["QUANTIZE_METHODS", "QuantizeMethod", "register_quantize_method"]
