"""Where training runs and in what precision, resolved once per run.

`auto` picks CUDA when torch sees a GPU. A recipe asking for CUDA on a machine whose
torch sees none is a recipe error (exit 2) before anything trains: the CPU wheel this
project pins has no CUDA at all, and a silent fallback would train 50-100x slower
than the user planned.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from compress.errors import RecipeError

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision ('fp32', 'bf16' or 'fp16')."""

    device: torch.device
    precision: str = "fp32"

    def autocast(self):
        """The autocast context of a forward pass (a no-op in fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self):
        """fp16 needs loss scaling (its range underflows small gradients); bf16 does not."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def identity(self) -> dict[str, str]:
        return {"device": str(self.device), "precision": self.precision}


CPU = Placement(torch.device("cpu"), "fp32")


def resolve_placement(config, where: str = "training") -> Placement:
    """The concrete device and precision of a `[training]` table.

    Raises:
        RecipeError: CUDA asked for but not visible to torch, or a GPU index out of range.
    """
    name = config.device
    available = torch.cuda.is_available()
    if name == "auto":
        name = "cuda" if available else "cpu"
    if name.startswith("cuda"):
        if not available:
            build = torch.version.cuda or "none: a CPU-only build"
            raise RecipeError(
                f"{where}.device: {config.device!r} asks for a CUDA GPU, but torch "
                f"{torch.__version__} sees none (CUDA in this build: {build}); use "
                "device = 'cpu' or 'auto', or install a CUDA build of torch on a GPU machine"
            )
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise RecipeError(
                f"{where}.device: {config.device!r}: this machine has "
                f"{torch.cuda.device_count()} GPU(s)"
            )
    device = torch.device(name)
    precision = config.precision
    if precision == "auto":
        if device.type == "cpu":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Placement(device, precision)
