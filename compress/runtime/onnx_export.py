"""torch -> ONNX with a dynamic batch axis, one self-contained file, and a parity check.

Measured traps this module designs around (see ../shared/FIELD-NOTES.md): the
dynamo exporter's default graph has a static batch of 1, it writes weights to a
side `.onnx.data` file unless told not to, and it prints progress lines and
warnings that do not belong in the user's terminal.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compress.artifacts import atomic_path
from compress.errors import StageError
from compress.models.signature import INPUT_NAME, OUTPUT_NAME, InputSignature, as_signature

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "check_parity", "export_onnx", "shape_label"]


@contextlib.contextmanager
def _quiet_exporter():
    """Capture the exporter's prints, warnings and log lines; yield the captured text."""
    captured = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(captured),
            contextlib.redirect_stderr(captured),
        ):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exporter_error_summary(exc: BaseException) -> str:
    """The line of a torch.onnx error that names the cause, without terminal colours.

    The dynamo exporter's message opens with generic "step 1/3 ... Next steps" advice;
    the cause sits under its "## Exception summary" heading.
    """
    text = _ANSI.sub("", str(exc)).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "## Exception summary" in lines:
        following = lines[lines.index("## Exception summary") + 1 :]
        if following:
            return following[0]
    return lines[0] if lines else type(exc).__name__


def strip_debug_info_(model) -> None:
    """Drop the exporter's debug metadata (stack traces, FX nodes, local paths, the
    exported program's signature) from an `onnx_ir.Model`.

    It made up ~70% of a small model's file, leaks the exporting machine's paths,
    and varies between machines, which would break byte-identical artifacts.
    onnx-ir's pass clears nodes, graphs and functions; the values (inputs, outputs,
    initializers, intermediate results: the optimizer's `folded_from` notes) are
    cleared here.
    """
    import onnx_ir as ir
    from onnx_ir.passes.common import ClearMetadataAndDocStringPass

    ClearMetadataAndDocStringPass()(model)
    for graph in (model.graph, *model.functions.values()):
        values = [*graph.inputs, *graph.outputs]
        values += [value for node in ir.traversal.RecursiveGraphIterator(graph)
                   for value in node.outputs]  # fmt: skip
        if isinstance(graph, ir.Graph):
            values += graph.initializers.values()
        for value in values:
            value.metadata_props.clear()
            value.doc_string = None
    model.doc_string = None


def export_onnx(
    model: nn.Module,
    signature: InputSignature | tuple[int, ...],
    path: str | Path,
    opset: int | None = None,
    debug: bool = False,
) -> Path:
    """Export `model` (eval mode) to a single ONNX file, every dynamic axis named.

    Args:
        model: a float32 torch model.
        signature: its inputs (names, dtypes, dynamic axes); a per-sample shape such
            as (1, 28, 28) stands for one image input.
        path: destination; written atomically and checked with onnx.checker.
        opset: ONNX opset; None takes the exporter's default.
        debug: let the exporter's own output through.

    Example:
        >>> export_onnx(model, (1, 8, 8), "model.onnx")  # doctest: +SKIP
    """
    import onnx
    import onnx_ir as ir

    path = Path(path)
    model = model.eval()
    signature = as_signature(signature)
    # batch 2: a batch of 1 lets the exporter specialise the axis to a constant
    example = signature.random_example(signature.sizes(2))
    kwargs = {
        "input_names": signature.names,
        "output_names": [signature.output, *signature.extra_outputs],
        "dynamic_shapes": signature.dynamic_shapes(),
        "external_data": False,
        "dynamo": True,
    }
    if opset is not None:
        kwargs["opset_version"] = opset
    quiet = contextlib.nullcontext(io.StringIO()) if debug else _quiet_exporter()
    with atomic_path(path) as tmp, quiet:
        try:
            torch.onnx.export(model, example, str(tmp), **kwargs)
        except Exception as exc:  # the exporter raises many types; keep its message
            detail = exporter_error_summary(exc)
            raise StageError(
                f"ONNX export failed: {detail} (run with --debug for the exporter's output)"
            ) from exc
        exported = ir.load(tmp)
        strip_debug_info_(exported)
        ir.save(exported, tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise StageError(f"exported ONNX model fails onnx.checker: {exc}") from exc
    return path


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    signature: InputSignature | tuple[int, ...],
    batch_sizes: list[int],
    atol: float,
    rtol: float,
    seed: int = 0,
) -> dict[str, float]:
    """Compare ONNX Runtime's logits with torch's at each batch size.

    Where the model has another dynamic axis (a sequence), each batch size runs at a
    different length too (`InputSignature.parity_sizes`). Returns the largest
    absolute difference per shape; raises StageError naming the shape, the
    difference and the tolerance on a mismatch, or when the graph rejects a shape
    (a static batch or sequence axis).
    """
    from compress.runtime.sessions import make_session

    signature = as_signature(signature)
    session = make_session(onnx_path, "cpu", threads=1)
    generator = torch.Generator().manual_seed(seed)
    report = {}
    model = model.eval()
    for sizes in signature.parity_sizes(batch_sizes):
        label = shape_label(sizes)
        inputs = signature.random_example(sizes, generator)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        try:
            got = session.run(None, signature.feed(inputs))[0]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise StageError(f"ONNX model fails at {label}: {exc}") from exc
        if got.shape != expected.shape:
            raise StageError(f"ONNX output shape {got.shape} != torch {expected.shape} at {label}")
        diff = float(np.max(np.abs(got - expected)))
        key = "_".join(f"{name}_{size}" for name, size in sizes.items())
        report[f"{key}_max_abs_diff"] = diff
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise StageError(
                f"ONNX/torch parity failed at {label}: max |diff| = {diff:.3g} "
                f"exceeds atol {atol} + rtol {rtol}"
            )
    return report


def shape_label(sizes: dict[str, int]) -> str:
    """'batch size 7' for an image model (the key every report had), else
    'batch 3 sequence 41'."""
    if list(sizes) == ["batch"]:
        return f"batch size {sizes['batch']}"
    return " ".join(f"{name} {size}" for name, size in sizes.items())
