"""The `[runtime]` table: how models are measured."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.recipe.schema.base import StrictModel


class RuntimeConfig(StrictModel):
    """How models are measured: ONNX Runtime providers, threads, batch size, repeats."""

    providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        ["cpu"],
        min_length=1,
        description="ONNX Runtime execution providers to measure; the first is the one "
        "latency budgets read.",
    )
    optional_providers: list[Literal["cpu", "cuda", "tensorrt"]] = Field(
        default_factory=list,
        description="Providers that may be missing: reported as unavailable and their "
        "latency budgets skipped, instead of failing the run before it starts.",
    )
    threads: int = Field(1, gt=0, description="Intra-op threads for latency measurement.")
    batch_size: int = Field(1, gt=0, description="Batch size for latency measurement.")
    warmup: int = Field(10, ge=0, description="Untimed runs before measuring.")
    repeats: int = Field(50, gt=0, description="Timed runs per model per round.")
    rounds: int = Field(5, gt=0, description="Interleaved rounds (A B A B ...).")
    gpu_fp16: bool = Field(
        False,
        description="Also measure an fp16 copy of float models on cuda/tensorrt "
        "(model.fp16.onnx beside model.onnx; latency key '<provider>-fp16').",
    )
    train_threads: int | None = Field(
        None, gt=0, description="torch intra-op threads for training (default: all cores)."
    )
