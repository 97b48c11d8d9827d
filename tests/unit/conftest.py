"""Fixtures shared by the quantization tests: one trained model, trained once."""

from __future__ import annotations

import pytest

from compress.recipe.schema import TrainingConfig
from compress.runtime.onnx_export import export_onnx
from compress.testing import tiny_run_context
from compress.training import fit


@pytest.fixture(scope="session")
def trained(digits_bundle, tmp_path_factory):
    """A CNN [8, 16] trained 2 epochs on digits (test accuracy ~0.9). Do not modify it."""
    ctx = tiny_run_context(tmp_path_factory.mktemp("trained"), digits_bundle)
    fit(
        ctx.model,
        digits_bundle,
        TrainingConfig(epochs=2, batch_size=32, optimizer={"name": "adam", "lr": 0.01}),
        seed=0,
    )
    return ctx.model.eval()


@pytest.fixture(scope="session")
def fp32(trained, tmp_path_factory):
    """`trained` exported to ONNX (input 1x8x8, dynamic batch)."""
    return export_onnx(trained, (1, 8, 8), tmp_path_factory.mktemp("fp32") / "fp32.onnx")
