"""The `[training]` table: where every training use runs, and in what precision."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from compress.recipe.schema.base import StrictModel

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class TrainingPlacementConfig(StrictModel):
    """Device and precision of training (train, distill, fine-tunes, QAT, teacher logits,
    gradients for importance). ONNX export and ONNX Runtime evaluation stay on the CPU
    path they always take; saved weights are fp32 whatever the precision."""

    device: str = Field(
        "auto",
        description="'auto' (CUDA when torch sees a GPU, else CPU), 'cpu', 'cuda' or 'cuda:N'.",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="Mixed precision by autocast: 'auto' is fp32 on CPU and bf16 on a GPU "
        "that supports it (else fp16 with a gradient scaler); 'bf16' on CPU works too.",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError(f"unknown device {value!r}; allowed: auto, cpu, cuda, cuda:N")
        return value
