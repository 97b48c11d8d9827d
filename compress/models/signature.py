"""A model's inputs as data: names, dtypes, shapes with named dynamic axes.

Export (dynamic axes by name), parity, latency, calibration, evaluation and the
input contract all read one `InputSignature` instead of assuming one image tensor
(the way `torch.export` takes `dynamic_shapes` by input name and Optimum's ONNX
configs describe each input). A vision model has one float32 input named `input`
of shape `("batch", C, H, W)`; a text encoder has int64 `input_ids` and
`attention_mask` of shape `("batch", "sequence")`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_DTYPES = {"float32": (torch.float32, np.float32), "int64": (torch.int64, np.int64)}
# Sizes a dynamic axis other than the batch takes in parity checks: two lengths, so a
# graph that baked in the traced length fails (FIELD-NOTES: the legacy exporter did).
_SECOND_AXIS_SIZES = (12, 40)


@dataclass(frozen=True)
class TensorSpec:
    """One named input.

    Attributes:
        name: the ONNX input name.
        dtype: "float32" or "int64".
        shape: sizes, with a string naming each dynamic axis ("batch", "sequence").
        high: for integer inputs, random examples draw values in [0, high) (token ids:
            the vocabulary size; masks: 2).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    high: int | None = None

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def concrete(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape with each dynamic axis given its size from `sizes`."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.high is not None:
            out["high"] = self.high
        return out


@dataclass(frozen=True)
class InputSignature:
    """Every input of a model, in the order its `forward` takes them.

    Example:
        >>> sig = InputSignature.image((1, 8, 8))
        >>> sig.names, sig.inputs[0].shape
        (['input'], ('batch', 1, 8, 8))
        >>> [t.shape for t in sig.random_example({"batch": 3})]
        [torch.Size([3, 1, 8, 8])]
    """

    inputs: tuple[TensorSpec, ...]
    output: str = OUTPUT_NAME
    # outputs after the logits that the export names (a model family's, e.g. a decoder's
    # key/value cache); the logits stay the first output, the only one measured
    extra_outputs: tuple[str, ...] = ()

    # ------------------------------------------------------------------ construction

    @classmethod
    def image(cls, sample_shape: Sequence[int]) -> InputSignature:
        """One float32 tensor `input` of shape (batch, *sample_shape): NCHW or NF."""
        shape = ("batch", *(int(d) for d in sample_shape))
        return cls((TensorSpec(INPUT_NAME, "float32", shape),))

    @classmethod
    def text(cls, vocab_size: int) -> InputSignature:
        """Token ids `input_ids` (values in [0, vocab_size)) and `attention_mask`, both
        int64 of shape ("batch", "sequence")."""
        return cls(
            (
                TensorSpec("input_ids", "int64", ("batch", "sequence"), int(vocab_size)),
                TensorSpec("attention_mask", "int64", ("batch", "sequence"), 2),
            )
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSignature:
        inputs = tuple(
            TensorSpec(i["name"], i["dtype"], tuple(i["shape"]), i.get("high"))
            for i in data["inputs"]
        )
        return cls(inputs, data.get("output", OUTPUT_NAME), tuple(data.get("extra_outputs", ())))

    @classmethod
    def from_onnx(cls, path: str | Path) -> InputSignature:
        """What an ONNX file declares: names, element types and (symbolic) dims."""
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {init.name for init in graph.initializer}
        kinds = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64"}
        inputs = []
        for value in graph.input:
            if value.name in initializers:
                continue
            tensor = value.type.tensor_type
            dims: list[int | str] = []
            for index, dim in enumerate(tensor.shape.dim):
                if dim.HasField("dim_value"):
                    dims.append(int(dim.dim_value))
                else:
                    # a symbolic first axis is the batch whatever the producer called it
                    dims.append("batch" if index == 0 else (dim.dim_param or f"dim{index}"))
            dtype = kinds.get(tensor.elem_type)
            if dtype is None:
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
            inputs.append(TensorSpec(value.name, dtype, tuple(dims)))
        output = graph.output[0].name if graph.output else OUTPUT_NAME
        return cls(tuple(inputs), output)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"inputs": [i.to_dict() for i in self.inputs], "output": self.output}
        if self.extra_outputs:  # only then: model.json of every other model is unchanged
            out["extra_outputs"] = list(self.extra_outputs)
        return out

    # ------------------------------------------------------------------ reading

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.inputs]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The per-sample shape of a single fixed-size input (vision models)."""
        shape = self.inputs[0].shape[1:]
        if len(self.inputs) != 1 or not all(isinstance(d, int) for d in shape):
            raise ValueError(f"{self.names}: not one input with a fixed per-sample shape")
        return tuple(int(d) for d in shape)

    @property
    def axis_names(self) -> list[str]:
        """Every dynamic axis name, first seen first ("batch" before "sequence")."""
        seen: list[str] = []
        for spec in self.inputs:
            seen += [d for d in spec.dynamic_axes.values() if d not in seen]
        return seen

    def dynamic_shapes(self) -> tuple[dict[int, Any], ...]:
        """`torch.onnx.export(dynamic_shapes=...)`: one Dim per axis name, shared by
        every input that has that axis (input_ids and attention_mask share a batch)."""
        dims = {name: torch.export.Dim(name) for name in self.axis_names}
        return tuple({i: dims[d] for i, d in spec.dynamic_axes.items()} for spec in self.inputs)

    def sizes(self, batch: int, **others: int) -> dict[str, int]:
        """Sizes for every dynamic axis: the batch given, other axes from `others` or
        the first parity length."""
        out = {"batch": batch}
        for name in self.axis_names:
            if name != "batch":
                out[name] = others.get(name, _SECOND_AXIS_SIZES[0])
        return out

    def parity_sizes(self, batch_sizes: Sequence[int]) -> list[dict[str, int]]:
        """The shapes a parity check runs at: each batch size, and where the model has
        another dynamic axis (a sequence) a different length at each, so a graph fixed
        to the traced length is caught."""
        out = []
        for index, batch in enumerate(batch_sizes):
            others = {
                name: _SECOND_AXIS_SIZES[index % len(_SECOND_AXIS_SIZES)] + index
                for name in self.axis_names
                if name != "batch"
            }
            out.append(self.sizes(batch, **others))
        return out

    def random_example(
        self, sizes: Mapping[str, int], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Random tensors of the given axis sizes: normal floats, ints in [0, high)."""
        tensors = []
        for spec in self.inputs:
            shape = spec.concrete(sizes)
            if spec.dtype == "float32":
                tensors.append(torch.randn(*shape, generator=generator))
            else:
                high = spec.high or 2
                tensors.append(torch.randint(0, high, shape, generator=generator))
        return tuple(tensors)

    def random_feed(self, sizes: Mapping[str, int], seed: int = 0) -> dict[str, np.ndarray]:
        """A NumPy feed for ONNX Runtime (same draws as `measure_latency` always made for
        one float input: standard normal from `np.random.default_rng(seed)`)."""
        rng = np.random.default_rng(seed)
        feed = {}
        for spec in self.inputs:
            shape = spec.concrete(sizes)
            if spec.dtype == "float32":
                feed[spec.name] = rng.standard_normal(shape, dtype=np.float32)
            else:
                feed[spec.name] = rng.integers(0, spec.high or 2, shape, dtype=np.int64)
        return feed

    def feed(self, tensors: Sequence[Any] | Any) -> dict[str, np.ndarray]:
        """ONNX Runtime's input dict from tensors or arrays in `forward` order."""
        values = tensors if isinstance(tensors, (tuple, list)) else (tensors,)
        if len(values) != len(self.inputs):
            raise ValueError(f"{len(values)} tensors for inputs {self.names}")
        return {
            spec.name: _as_numpy(value, _DTYPES.get(spec.dtype, (None, None))[1])
            for spec, value in zip(self.inputs, values)
        }

    def contract(self) -> list[dict[str, Any]]:
        """The inputs as `model.contract.json` lists them."""
        return [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in self.inputs]


def _as_numpy(value: Any, dtype) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    return array.astype(dtype, copy=False) if dtype is not None else array


def as_signature(value: InputSignature | Sequence[int]) -> InputSignature:
    """An `InputSignature` from itself or from a per-sample image shape (the form every
    API took before signatures, still accepted for one float input)."""
    if isinstance(value, InputSignature):
        return value
    return InputSignature.image(tuple(value))


# A batch of samples for ONNX Runtime: one array (a one-input model) or arrays keyed
# by input name. Calibration, evaluation and the quantizers take either.
Samples = np.ndarray | Mapping[str, np.ndarray]


def as_feeds(samples: Samples, names: Sequence[str]) -> dict[str, np.ndarray]:
    """`samples` keyed by the graph's input names."""
    if isinstance(samples, Mapping):
        missing = [name for name in names if name not in samples]
        if missing:
            raise ValueError(f"samples lack inputs {missing} (have {sorted(samples)})")
        return {name: samples[name] for name in names}
    if len(names) != 1:
        raise ValueError(f"one array given for a model with inputs {list(names)}")
    return {names[0]: samples}


def sample_count(samples: Samples) -> int:
    """Rows in `samples` (every input has the same number)."""
    if isinstance(samples, Mapping):
        return len(next(iter(samples.values())))
    return len(samples)


def slice_samples(samples: Samples, start: int, stop: int) -> Samples:
    """Rows [start, stop) of `samples`, in the form it came."""
    if isinstance(samples, Mapping):
        return {name: value[start:stop] for name, value in samples.items()}
    return samples[start:stop]
