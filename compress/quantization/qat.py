"""Quantization-aware training that ends in the same QDQ model ORT would build.

ONNX Runtime decides where the int8 model quantizes (which tensors get a
QuantizeLinear, after its Conv/BN fusion and ReLU removal), so QAT asks it
instead of guessing: a calibrated QDQ model names the activation tensors and
their starting scales, each is found in the torch model by value (the module
output, or module input, that computes the same numbers on the same batch), and
a fake-quant hook with a learnable scale (LSQ, straight-through rounding) is put
there. Weights of every Conv/Linear are fake-quantized per output channel the way
ORT quantizes them (symmetric int8, absmax / 127), which commutes with folding
BatchNorm into the convolution, so BatchNorm stays a module with frozen
statistics. After training, the float weights are exported, quantized by ORT
again, and the learned scales and zero points replace the calibrated ones.

Nothing here builds on torch.ao.quantization (deprecated).
"""

from __future__ import annotations

import math
import tempfile
import types
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.errors import StageError
from compress.quantization.static import preprocess

INPUT_KEY = ("", -1)  # the model's input tensor
Key = tuple[str, int]  # (module name, call index within one forward); "" is the root
# the exporter renames a graph output that ORT quantizes to NAME + this suffix
_RENAMED_OUTPUT = "_QuantizeLinear_Input"
_QRANGE = {"uint8": (0, 255), "int8": (-128, 127)}


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round forward, identity backward (the straight-through estimator)."""
    return (torch.round(x) - x).detach() + x


def _scale_grad(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward, gradient times `factor` backward (LSQ's step-size gradient scale)."""
    return (x - x * factor).detach() + x * factor


class ActivationFakeQuant(nn.Module):
    """Asymmetric fake quantization with a learned scale (LSQ) and a fixed zero point."""

    def __init__(self, scale: float, zero_point: int, dtype: str):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.register_buffer("zero_point", torch.tensor(float(zero_point)))
        self.qmin, self.qmax = _QRANGE[dtype]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # LSQ: without this scale the step size's gradient swamps the weights'
        factor = 1.0 / math.sqrt(max(x[0].numel(), 1) * self.qmax)
        scale = _scale_grad(self.scale.abs().clamp_min(1e-12), factor)
        q = torch.clamp(round_ste(x / scale) + self.zero_point, self.qmin, self.qmax)
        return (q - self.zero_point) * scale


class WeightFakeQuant(nn.Module):
    """ORT's int8 weights: symmetric per output channel, scale = absmax / 127.

    Per-channel scaling commutes with folding BatchNorm into the convolution
    (both scale output channels), so fake-quantizing the unfolded weight gives
    the same grid ORT uses on the folded one.
    """

    def __init__(self, reduce_range: bool = False):
        super().__init__()
        self.levels = 64 if reduce_range else 127  # ORT's reduced int8 range is [-64, 64]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, weight.dim()))
        absmax = weight.detach().abs().amax(dim=dims, keepdim=True).clamp_min(1e-12)
        scale = absmax / self.levels
        return torch.clamp(round_ste(weight / scale), -self.levels, self.levels) * scale


# ---------------------------------------------------------------- where ORT quantizes


def activation_qparams(qdq_path: str | Path) -> dict[str, dict[str, Any]]:
    """Activation tensors a QDQ model quantizes: name -> scale, zero point, type,
    and the initializer names holding them (weights are initializers: skipped)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(qdq_path)).graph
    initializers = {i.name: i for i in graph.initializer}
    found: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        scale = numpy_helper.to_array(initializers[node.input[1]])
        zero = numpy_helper.to_array(initializers[node.input[2]])
        name = node.input[0]
        found[name] = {
            "scale": float(scale),
            "zero_point": int(zero),
            "dtype": str(zero.dtype),
            # the tensor's name in the float graph (ORT renames a quantized graph output)
            "tensor": name.removesuffix(_RENAMED_OUTPUT),
        }
    return found


def shared_qparams(qdq_path: str | Path) -> dict[str, str]:
    """Tensors ORT quantizes with another tensor's scale (a MaxPool's output shares
    its input's, so the op runs on int8 as is): name -> the first tensor using it.
    Trained apart they would drift, and the op would fall back to float."""
    import onnx

    graph = onnx.load(str(qdq_path)).graph
    initializers = {i.name for i in graph.initializer}
    owner: dict[str, str] = {}
    ties: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in initializers:
            continue
        first = owner.setdefault(node.input[1], node.input[0])
        if first != node.input[0]:
            ties[node.input[0]] = first
    return ties


def _onnx_values(fp32_path: Path, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """The fp32 values of `names` in the pre-processed graph ORT quantizes."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="compress-qat-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        preprocess(fp32_path, prepared)
        model = onnx.load(str(prepared))
        graph_outputs = {o.name for o in model.graph.output}
        input_name = model.graph.input[0].name
        wanted = {}
        for name in names:
            plain = name.removesuffix(_RENAMED_OUTPUT)
            wanted[name] = plain
            if plain not in graph_outputs and plain != input_name:
                model.graph.output.append(onnx.ValueInfoProto(name=plain))
                graph_outputs.add(plain)
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        fetch = [o.name for o in session.get_outputs()]
        values = dict(zip(fetch, session.run(fetch, {input_name: x})))
        values[input_name] = x
    return {name: values[plain] for name, plain in wanted.items() if plain in values}


def _torch_values(model: nn.Module, x: torch.Tensor) -> list[tuple[Key, np.ndarray]]:
    """Every module's output (and input), per call, in the order they were computed."""
    captured: list[tuple[Key, np.ndarray]] = [(INPUT_KEY, x.numpy())]
    inputs_seen: list[tuple[Key, np.ndarray]] = []
    calls: dict[str, int] = defaultdict(int)
    handles = []

    def hook(name):
        def run(module, inputs, output):
            index = calls[name]
            calls[name] += 1
            if isinstance(output, torch.Tensor):
                captured.append(((name, index), output.detach().clone().numpy()))
            # a module's input may be a functional op's result (x + shortcut) that
            # no module outputs; kept after outputs so a producing module wins
            if inputs and isinstance(inputs[0], torch.Tensor):
                inputs_seen.append(((name, -2 - index), inputs[0].detach().clone().numpy()))

        return run

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured + inputs_seen


def match_points(
    model: nn.Module, fp32_path: Path, names: list[str], x: np.ndarray
) -> tuple[dict[str, Key], list[str]]:
    """Map ORT's quantized tensors to torch modules by value on one batch.

    Returns the matched names -> (module, call) and the names no module computes
    (those keep their calibrated ranges). Raises when the ONNX model and the torch
    model disagree so much that nothing matches (a wrong file).
    """
    onnx_values = _onnx_values(fp32_path, names, x)
    was_training = model.training
    model.eval()
    try:
        torch_values = _torch_values(model, torch.from_numpy(x))
    finally:
        model.train(was_training)
    matched: dict[str, Key] = {}
    for name in names:
        target = onnx_values.get(name)
        if target is None:
            continue
        tolerance = 1e-4 * (float(np.abs(target).max()) + 1.0)
        for key, value in torch_values:
            if value.size == target.size and np.allclose(
                value.reshape(target.shape), target, rtol=1e-3, atol=tolerance
            ):
                matched[name] = key
                break
    if names and not matched:
        raise StageError("QAT: no quantized tensor of the ONNX model matches the torch model")
    return matched, [name for name in names if name not in matched]


# ---------------------------------------------------------------- training hooks


@dataclass
class QATModel:
    """Fake quantization attached to a model in place; `detach()` leaves float weights."""

    model: nn.Module
    quant_of: dict[str, ActivationFakeQuant]  # ONNX tensor name -> its fake quantizer
    handles: list = field(default_factory=list)
    weights: list[nn.Module] = field(default_factory=list)
    frozen_norms: list[nn.Module] = field(default_factory=list)

    def learned(self) -> dict[str, tuple[float, int]]:
        """ONNX tensor name -> (learned scale, zero point)."""
        return {
            name: (abs(float(quant.scale.detach())), int(quant.zero_point))
            for name, quant in self.quant_of.items()
        }

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module in self.weights:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        for module in self.frozen_norms:
            del module.train  # the class's own train() again
        del self.model._qat_fake_quants


def attach(
    model: nn.Module,
    points: dict[str, Key],
    qparams: dict[str, dict],
    ties: dict[str, str] | None = None,
    reduce_range: bool = False,
) -> QATModel:
    """Put fake quantization where ORT will quantize, on `model` in place.

    Tensors in `ties` (from `shared_qparams`) share their source's learned scale.
    BatchNorm keeps its running statistics (the deployed model folds exactly those
    into the convolutions), so it stays in eval mode while the rest trains.
    """
    ties = ties or {}
    fake_quants = nn.ModuleDict()
    by_name: dict[str, nn.Module] = {}
    by_key: dict[Key, nn.Module] = {}
    for name, key in points.items():
        source = ties.get(name, name)
        if source not in by_name:
            params = qparams[source]
            quant = ActivationFakeQuant(params["scale"], params["zero_point"], params["dtype"])
            fake_quants[str(len(fake_quants))] = quant
            by_name[source] = quant
        by_name[name] = by_name[source]
        by_key.setdefault(key, by_name[name])  # several ONNX names may be one torch value
    # registered as a submodule so the optimizer trains the scales
    model.add_module("_qat_fake_quants", fake_quants)
    state = QATModel(model, by_name)
    calls: dict[str, int] = defaultdict(int)
    modules = dict(model.named_modules())

    def on_model_input(module, inputs):
        calls.clear()
        quant = by_key.get(INPUT_KEY)
        return (quant(inputs[0]), *inputs[1:]) if quant is not None else None

    state.handles.append(model.register_forward_pre_hook(on_model_input))
    hooked_outputs = {name for name, index in by_key if name and index >= 0}
    hooked_inputs = {name for name, index in by_key if name and index <= -2}
    for name in hooked_outputs | hooked_inputs:
        module = modules[name]

        def on_input(module, inputs, name=name):
            quant = by_key.get((name, -2 - calls[name]))
            return (quant(inputs[0]), *inputs[1:]) if quant is not None else None

        def on_output(module, inputs, output, name=name):
            index = calls[name]
            calls[name] += 1
            quant = by_key.get((name, index))
            return quant(output) if quant is not None else None

        if name in hooked_inputs:
            state.handles.append(module.register_forward_pre_hook(on_input))
        state.handles.append(module.register_forward_hook(on_output))
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(module, "weight", WeightFakeQuant(reduce_range))
            state.weights.append(module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
            module.train = types.MethodType(lambda self, mode=True: self, module)
            state.frozen_norms.append(module)
    return state
