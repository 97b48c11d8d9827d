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

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


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
    """Drop the exporter's per-node debug metadata (stack traces, FX nodes, local paths).

    It made up ~70% of a small model's file, leaks the exporting machine's paths,
    and varies between machines, which would break byte-identical artifacts.
    """
    graphs = [model.graph] + [function for function in model.functions]
    for graph in graphs:
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del value.metadata_props[:]
        value.doc_string = ""
    model.graph.doc_string = ""
    model.doc_string = ""


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: str | Path,
    opset: int | None = None,
    debug: bool = False,
) -> Path:
    """Export `model` (eval mode) to a single ONNX file with a dynamic batch axis.

    Args:
        model: a float32 torch model taking one NCHW (or NF) tensor.
        input_shape: the per-sample shape, e.g. (1, 28, 28).
        path: destination; written atomically and checked with onnx.checker.
        opset: ONNX opset; None takes the exporter's default.
        debug: let the exporter's own output through.

    Example:
        >>> export_onnx(model, (1, 8, 8), "model.onnx")  # doctest: +SKIP
    """
    import onnx

    path = Path(path)
    model = model.eval()
    example = torch.randn(2, *input_shape)
    kwargs = {
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "dynamic_shapes": ({0: torch.export.Dim("batch")},),
        "external_data": False,
        "dynamo": True,
    }
    if opset is not None:
        kwargs["opset_version"] = opset
    quiet = contextlib.nullcontext(io.StringIO()) if debug else _quiet_exporter()
    with atomic_path(path) as tmp, quiet:
        try:
            torch.onnx.export(model, (example,), str(tmp), **kwargs)
        except Exception as exc:  # the exporter raises many types; keep its message
            detail = exporter_error_summary(exc)
            raise StageError(
                f"ONNX export failed: {detail} (run with --debug for the exporter's output)"
            ) from exc
        exported = onnx.load(str(tmp))
        strip_debug_info_(exported)
        onnx.save(exported, str(tmp))
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise StageError(f"exported ONNX model fails onnx.checker: {exc}") from exc
    return path


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    input_shape: tuple[int, ...],
    batch_sizes: list[int],
    atol: float,
    rtol: float,
    seed: int = 0,
) -> dict[str, float]:
    """Compare ONNX Runtime's logits with torch's at each batch size.

    Returns the largest absolute difference per batch size; raises StageError
    naming the batch size, the difference and the tolerance on a mismatch, or
    when the graph rejects a batch size (a static batch axis).
    """
    from compress.runtime.sessions import make_session

    session = make_session(onnx_path, "cpu", threads=1)
    generator = torch.Generator().manual_seed(seed)
    report = {}
    model = model.eval()
    for batch in batch_sizes:
        x = torch.randn(batch, *input_shape, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        try:
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            raise StageError(f"ONNX model fails at batch size {batch}: {exc}") from exc
        if got.shape != expected.shape:
            raise StageError(
                f"ONNX output shape {got.shape} != torch {expected.shape} at batch size {batch}"
            )
        diff = float(np.max(np.abs(got - expected)))
        report[f"batch_{batch}_max_abs_diff"] = diff
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise StageError(
                f"ONNX/torch parity failed at batch size {batch}: max |diff| = {diff:.3g} "
                f"exceeds atol {atol} + rtol {rtol}"
            )
    return report
