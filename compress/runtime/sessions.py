"""ONNX Runtime sessions and execution providers."""

from __future__ import annotations

from pathlib import Path

from compress.errors import UsageError

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}

INSTALL_HINT = {
    "cuda": "install the GPU build: pip install 'compress[gpu]' (onnxruntime-gpu) on a machine "
    "with an NVIDIA GPU and CUDA",
    "tensorrt": "install onnxruntime-gpu with TensorRT libraries on a machine with an NVIDIA GPU",
}


def available_providers() -> list[str]:
    """Recipe names of the providers this onnxruntime build offers."""
    import onnxruntime as ort

    offered = set(ort.get_available_providers())
    return [name for name, ort_name in PROVIDERS.items() if ort_name in offered]


def check_providers(requested: list[str], optional: list[str] = ()) -> dict[str, str]:
    """Raise UsageError (exit 2) naming any required provider this machine lacks.

    Returns the optional ones that are missing, each with the reason, for the report.
    """
    have = available_providers()
    unavailable = {
        name: f"not offered by this onnxruntime build; {INSTALL_HINT.get(name, '')}".strip()
        for name in requested
        if name not in have
    }
    missing = [name for name in unavailable if name not in optional]
    if missing:
        hints = "; ".join(f"{name}: {INSTALL_HINT.get(name, 'not available')}" for name in missing)
        raise UsageError(
            f"runtime.providers asks for {', '.join(missing)}, which this onnxruntime build "
            f"does not offer (available: {', '.join(have)}). {hints}. Or list it in "
            "runtime.optional_providers to skip it where it is missing."
        )
    return unavailable


def session_options(threads: int | None = 1) -> dict[str, object]:
    """The SessionOptions every measurement uses, as plain data (the contract records
    them, so a deployment can reproduce what was measured)."""
    options: dict[str, object] = {
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "graph_optimization_level": "ORT_ENABLE_ALL",
    }
    if threads is not None:
        options["intra_op_num_threads"] = threads
    return options


def make_session(path: str | Path, provider: str = "cpu", threads: int | None = 1):
    """An InferenceSession on one provider with fixed intra-op threads.

    Args:
        path: the ONNX file.
        provider: "cpu", "cuda" or "tensorrt".
        threads: intra-op threads; None lets ONNX Runtime choose (all cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    for name, value in session_options(threads).items():
        if name == "execution_mode":
            value = getattr(ort.ExecutionMode, value)
        elif name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(options, name, value)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=[PROVIDERS[provider]])
