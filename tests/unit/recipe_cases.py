"""Recipes whose resolved configs are pinned by tests/unit/data/resolved-recipes.json.

Every bundled recipe, and a representative set of the recipes the tests write: each
quantize table a test validates (one per method and setting it exercises), the prune,
distill and train stages of the test recipes, each inside `tiny_recipe_dict`. The
snapshot was written by `python -m tests.unit.recipe_cases` with the code from before
stages and quantization methods became registered plugins (issue #26), so the test
comparing against it shows that every one of these recipes still validates to the same
configuration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from compress.testing import tiny_recipe_dict

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).parent / "data" / "resolved-recipes.json"
TRAIN = {"type": "train", "epochs": 1, "batch_size": 32}

# Every quantize table the tests validate or run (tests/unit/test_quantization*.py,
# test_codebook_quantization.py, test_gather_quantization.py, test_recipe.py,
# tests/integration/test_onnx_input.py, test_image_folder_run.py, test_text_pipeline.py).
QUANTIZE_TABLES: dict[str, dict[str, Any]] = {
    "default": {},
    "calibration-64": {"calibration": {"samples": 64}},
    "percentile": {"calibration": {"method": "percentile", "samples": 32}},
    "reduce-range-false": {"calibration": {"samples": 32}, "reduce_range": False},
    "reduce-range-true": {"calibration": {"samples": 32}, "reduce_range": True},
    "static-explicit": {"mode": "static", "calibration": {"samples": 16}},
    "s8s8": {"activation_type": "int8", "weight_type": "int8"},
    "per-tensor": {"per_channel": False},
    "auto": {"format": "auto", "calibration": {"samples": 64}},
    "auto-drop": {"format": "auto", "auto_val_accuracy_drop_max": 0.05},
    "auto-gather": {
        "format": "auto",
        "calibration": {"samples": 32},
        "auto_val_accuracy_drop_max": 0.05,
    },
    "auto-op-types": {"format": "auto", "op_types": ["MatMul"]},
    "dynamic": {"mode": "dynamic"},
    "dynamic-gather": {"mode": "dynamic", "op_types": ["MatMul", "Gather"]},
    "dynamic-text": {"mode": "dynamic", "op_types": ["MatMul", "Gemm", "Gather"]},
    "dynamic-uint8": {"mode": "dynamic", "weight_type": "uint8", "per_channel": False},
    "qat": {"mode": "qat"},
    "qat-one-epoch": {
        "mode": "qat",
        "calibration": {"samples": 64},
        "qat": {"epochs": 1, "batch_size": 32},
    },
    "qat-fashion": {
        "method": "uniform",
        "mode": "qat",
        "activation_type": "uint8",
        "weight_type": "int8",
        "calibration": {"method": "minmax", "samples": 512},
        "qat": {"epochs": 1, "batch_size": 128, "distill_from": "teacher"},
    },
    "kmeans": {
        "method": "kmeans",
        "bits": 4,
        "layers": {"classifier": "skip", "re:features\\..*": 2, "features.0": 8},
    },
    "kmeans-skip": {"method": "kmeans", "bits": 4, "layers": {"classifier": "skip"}},
    "pow2": {"method": "pow2", "layers": {"classifier": 3}},
    "int4": {"mode": "int4"},
    "int4-block": {"mode": "int4", "block_size": 32},
    "int4-op-types": {"mode": "int4", "op_types": ["MatMul"]},
    "fallback": {"calibration": {"samples": 256}, "fallback": {"val_accuracy_drop_max": 0.02}},
    "fallback-empty": {"fallback": {}},
    "fallback-onnx": {
        "calibration": {"samples": 32},
        "fallback": {"val_accuracy_drop_max": 0.0, "max_layers": 1},
    },
    "exclude": {"exclude": ["node_a", "re:node_b"]},
    "placement": {
        "format": "placement",
        "calibration": {"samples": 64},
        "placement_repeats": 10,
        "placement_max_candidates": 2,
    },
    "placement-default": {"format": "placement"},
    "placement-knobs": {
        "format": "placement",
        "placement_rounds": 4,
        "placement_min_gain": 0.05,
        "auto_val_accuracy_drop_max": 0.02,
    },
}

OTHER_STAGES: dict[str, list[dict[str, Any]]] = {
    "every-stage": [
        {
            "type": "train",
            "epochs": 3,
            "optimizer": {"name": "nesterov", "lr": 0.1, "weight_decay": 1e-4},
            "schedule": {"name": "multistep", "milestones": [1, 2], "warmup_epochs": 1},
            "early_stopping": {"monitor": "val_loss", "patience": 1, "min_delta": 0.01},
            "grad_clip": 1.0,
            "budgets": {"latency_p90_ms_max": 2.5},
        },
        {
            "type": "distill",
            "student": {"architecture": "mlp", "hidden": [16]},
            "optimizer": {"name": "adamw", "betas": [0.8, 0.9]},
            "schedule": {"name": "onecycle", "max_lr": 0.01},
        },
        {
            "type": "prune",
            "ratio": 0.3,
            "steps": 2,
            "schedule": "agp",
            "ignored_layers": ["stem.0"],
            "finetune": {"epochs": 0, "optimizer": {"name": "rmsprop"}},
        },
        {"type": "quantize", "calibration": {"method": "percentile", "samples": 32}},
        {"type": "export", "parity_batch_sizes": [1, 3, 5]},
    ],
    "prune-finetune": [
        {"type": "train", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.01}},
        {"type": "prune", "ratio": 0.5, "finetune": {"epochs": 1}},
        {"type": "export"},
    ],
    "prune-steps": [
        {
            "type": "train",
            "epochs": 8,
            "batch_size": 32,
            "optimizer": {"name": "adam", "lr": 0.01},
            "schedule": {"name": "cosine"},
            "early_stopping": {"patience": 8},
        },
        {
            "type": "prune",
            "ratio": 0.5,
            "steps": 2,
            "round_to": 1,
            "finetune": {"epochs": 4, "optimizer": {"name": "momentum", "lr": 0.02}},
        },
        {"type": "export"},
    ],
    "prune-unstructured": [
        TRAIN,
        {"type": "prune", "method": "unstructured", "ratio": 0.5, "finetune": {"epochs": 0}},
        {"type": "export"},
    ],
    "prune-layer-ratios": [
        TRAIN,
        {"type": "prune", "ratio": 0.3, "layer_ratios": {"features.3": 0.5}},
        {"type": "export", "agreement_min": 0.97},
    ],
    "distill-cnn": [
        {"type": "train", "epochs": 1, "batch_size": 64},
        {
            "type": "distill",
            "epochs": 1,
            "batch_size": 64,
            "student": {"architecture": "cnn", "widths": [64, 128]},
        },
        {"type": "export"},
    ],
    "named-stages": [
        {**TRAIN, "name": "teacher"},
        {"type": "quantize", "name": "int8"},
        {"type": "export", "name": "ship", "opset": 18},
    ],
}


def raw_cases() -> dict[str, dict[str, Any]]:
    """Case name -> raw recipe dict (before validation)."""
    import tomllib

    cases = {}
    for path in sorted((ROOT / "recipes").glob("*.toml")):
        cases[f"recipes/{path.name}"] = tomllib.loads(path.read_text(encoding="utf-8"))
    cases["tiny"] = tiny_recipe_dict()
    for name, table in QUANTIZE_TABLES.items():
        stages = [TRAIN, {"type": "quantize", **table}, {"type": "export"}]
        cases[f"quantize/{name}"] = tiny_recipe_dict(stages=stages)
    for name, stages in OTHER_STAGES.items():
        cases[f"stages/{name}"] = tiny_recipe_dict(stages=stages)
    return cases


def resolved(raw: dict[str, Any]) -> dict[str, Any]:
    """What `recipe.resolved.toml` holds for this recipe, as a JSON-ready dict."""
    from compress.recipe.loader import validate_recipe

    return validate_recipe(raw).model_dump(mode="json", exclude_none=True)


if __name__ == "__main__":
    snapshot = {name: resolved(raw) for name, raw in raw_cases().items()}
    SNAPSHOT.parent.mkdir(exist_ok=True)
    SNAPSHOT.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(snapshot)} resolved recipes to {SNAPSHOT}\n")
