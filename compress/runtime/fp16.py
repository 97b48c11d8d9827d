"""fp16 copies of float ONNX models for GPU deployment (`[runtime] gpu_fp16 = true`).

Uses ONNX Runtime's own converter (shipped with onnxruntime, no extra dependency).
Inputs and outputs stay float32, so the model's input contract does not change.
"""

from __future__ import annotations

from pathlib import Path


def convert_to_fp16(source: str | Path, target: str | Path) -> Path:
    """Write an fp16 copy of a float32 ONNX model (float32 inputs and outputs kept)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from compress.artifacts import atomic_path

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return Path(target)
