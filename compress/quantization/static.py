"""Uniform int8 static quantization with ONNX Runtime, in QDQ format.

Defaults come from measurements on this kind of CPU (../shared/FIELD-NOTES.md):
signed int8 activations (s8s8) left most ResNet-18 convolutions and all residual
adds in fp32 after ORT's optimizer (no speed-up), while unsigned activations
(u8s8) ran them all in int8 (2.2-2.8x); `quantize_dynamic` on convolutions was
6-9x slower. So the default is static, QDQ, u8 activations, s8 per-channel weights,
after ORT's pre-processing (shape inference, Conv/BN fusion).
"""

from __future__ import annotations

import collections
import contextlib
import io
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from compress.artifacts import atomic_path
from compress.models.signature import Samples, as_feeds, sample_count, slice_samples
from compress.recipe.stages import CalibrationConfig

# Ops that compute in integer arithmetic once ORT has fused Q/DQ pairs.
INT8_OPS = {
    "QLinearConv",
    "QLinearMatMul",
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QGemm",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
}
FLOAT_COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "Add"}


_SHORT = {"uint8": "u8", "int8": "s8"}


class ArrayCalibrationReader:
    """Feeds calibration batches to ORT's calibrator, every input of the graph.

    Args:
        names: the graph's input names.
        samples: one array (a one-input model) or arrays keyed by input name.
    """

    def __init__(self, names: list[str], samples: Samples, batch_size: int = 32):
        feeds = as_feeds(samples, names)
        total = sample_count(feeds)
        self._batches = iter(
            [slice_samples(feeds, i, i + batch_size) for i in range(0, total, batch_size)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - ORT calls it only for some methods
        pass


def _calibration_options(config: CalibrationConfig) -> tuple[Any, dict[str, Any]]:
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": (CalibrationMethod.MinMax, {}),
        "percentile": (CalibrationMethod.Percentile, {"CalibPercentile": config.percentile}),
    }
    return table[config.method]


def _overrides(fixed_qparams: dict[str, tuple[float, int]], activation_type: str) -> dict:
    """ORT's TensorQuantOverrides: each tensor's (scale, zero point) instead of its
    calibrated range."""
    zero_type = np.uint8 if activation_type == "uint8" else np.int8
    return {
        name: [{"scale": np.array(scale, np.float32), "zero_point": np.array(zero, zero_type)}]
        for name, (scale, zero) in fixed_qparams.items()
    }


def quantize_static_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_x: Samples,
    *,
    activation_type: str = "uint8",
    weight_type: str = "int8",
    per_channel: bool = True,
    calibration: CalibrationConfig | None = None,
    exclude: tuple[str, ...] = (),
    only: tuple[str, ...] | None = None,
    fixed_qparams: dict[str, tuple[float, int]] | None = None,
    reduce_range: bool = False,
) -> dict[str, Any]:
    """Pre-process, calibrate and quantize an fp32 ONNX model to QDQ int8.

    Args:
        fp32_path: the float model (dynamic batch axis).
        out_path: the int8 model, written atomically.
        calibration_x: real inputs (already normalised) for range calibration: one
            array, or arrays keyed by input name for a model with several inputs.
        activation_type, weight_type: "uint8" / "int8".
        per_channel: per-output-channel weight scales.
        calibration: method and its parameters.
        exclude: node names (of the pre-processed graph, see `quantizable_nodes`)
            left in float.
        only: quantize these nodes and no others (per-layer sensitivity).
        reduce_range: 7-bit weights ([-64, 64]): u8s8 cannot saturate on CPUs
            without VNNI (see `compress.runtime.machine.int8_saturates`).
        fixed_qparams: activation tensor name -> (scale, zero point) used instead of
            the calibrated range (QAT's learned scales); ORT derives the int32 bias
            scales from them, which a later edit of the file would leave stale.

    Returns:
        The settings used, for the report.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calibration = calibration or CalibrationConfig()
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    method, extra = _calibration_options(calibration)
    if fixed_qparams:
        extra = {**extra, "TensorQuantOverrides": _overrides(fixed_qparams, activation_type)}
    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        skipped = preprocess(fp32_path, prepared)
        import onnx

        graph = onnx.load(str(prepared), load_external_data=False).graph
        reader = ArrayCalibrationReader([value.name for value in graph.input], calibration_x)
        # the calibrators print progress lines: keep them out of the user's terminal
        with atomic_path(out_path) as tmp, contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(prepared),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=types[activation_type],
                weight_type=types[weight_type],
                per_channel=per_channel,
                reduce_range=reduce_range,
                calibrate_method=method,
                extra_options=extra,
                nodes_to_exclude=list(exclude),
                nodes_to_quantize=list(only) if only is not None else None,
            )
    return {
        "format": "QDQ",
        "activation_type": activation_type,
        "weight_type": weight_type,
        "scheme": f"{_SHORT[activation_type]}{_SHORT[weight_type]}",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "calibration": calibration.model_dump(),
        "calibration_samples": sample_count(calibration_x),
        "preprocessed": skipped is None,
        **({"preprocess_note": skipped} if skipped else {}),
        "float_nodes": list(exclude),
    }


def preprocess(fp32_path: str | Path, out_path: str | Path) -> str | None:
    """ORT's quantization pre-processing: shape inference and Conv/BN fusion. The
    graph it writes is the one quantization sees (node and tensor names included).

    Returns None, or why it was skipped: on a transformer export ORT's symbolic shape
    inference is incomplete and raises (../shared/FIELD-NOTES.md); the float graph is
    then quantized as exported (it has no Conv/BN to fuse) and the report says so.
    """
    import shutil
    import warnings

    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path).resolve(), Path(out_path).resolve()
    try:
        # a failing symbolic shape inference leaves its temporary model (and a .data
        # file) in the working directory: give it a scratch one
        with (
            tempfile.TemporaryDirectory(prefix="compress-pre-") as scratch,
            contextlib.chdir(scratch),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)
    except Exception as exc:  # ORT's pre-processing raises assorted types
        shutil.copyfile(fp32_path, out_path)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"pre-processing skipped: {type(exc).__name__}: {detail}"[:300]
    return None


def preprocess_warnings(report: dict[str, Any]) -> list[str]:
    """The line a stage puts in its warnings when `quantize_static_onnx` (whose
    `report` this is) quantized the graph without ORT's pre-processing; else none."""
    note = report.get("preprocess_note")
    if not note:
        return []
    cause = note.removeprefix("pre-processing skipped: ")
    return [
        f"ONNX Runtime's quantization pre-processing failed ({cause}): the graph was "
        "quantized as exported, without its shape inference and Conv/BN fusion (`exclude` "
        "names and QAT's matched tensors are that graph's)"
    ]


def quantizable_nodes(fp32_path: str | Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes quantization would convert, as named in
    the pre-processed graph (the names `exclude` and `only` take), in graph order."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="compress-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        preprocess(fp32_path, prepared)
        graph = onnx.load(str(prepared), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]


def count_runtime_ops(path: str | Path, threads: int = 1) -> dict[str, Any]:
    """Op histogram of the graph ORT actually runs (after its optimizer fused Q/DQ).

    Returns int8 compute nodes, float compute nodes left, and the histogram, so
    the report shows whether the quantized model really computes in int8.
    """
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="compress-opt-") as scratch:
        optimized = Path(scratch) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(optimized)).graph
    histogram = collections.Counter(node.op_type for node in graph.node)
    return {
        "int8_compute_nodes": sum(n for op, n in histogram.items() if op in INT8_OPS),
        "float_compute_nodes": sum(n for op, n in histogram.items() if op in FLOAT_COMPUTE_OPS),
        "ops": dict(sorted(histogram.items())),
    }
