"""Hostile data and diverging training, as a new user meets them on recipes/digits.toml.

Each bad `.npz` is refused with exit 2 and one line naming the file (and the index at
fault) before anything trains; a learning rate that blows the loss up stops the train
stage (exit 3) with nothing after it. `run_cli` in this process, with the exit code,
output and tracebacks a real process gives (tests/unit/test_run_cli.py): the command
line, its one error line and the report, where tests/unit/test_data.py pins each
loader message on its own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compress.testing import run_cli

pytestmark = pytest.mark.integration

DIGITS = Path(__file__).parents[2] / "recipes" / "digits.toml"
# one short stage pair, so the cases that do train stay quick
SHORT = ["--set", 'stages=[{ type = "train", epochs = 1 }, { type = "export" }]']


def _images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 16, (count, 1, 8, 8)).astype(np.float32)


def _nan() -> dict:
    x = _images(100)
    x[17, 0, 3, 5] = np.nan
    return {"x_train": x, "y_train": np.arange(100) % 10}


def _negative() -> dict:
    y = np.arange(100) % 10
    y[42] = -3
    return {"x_train": _images(100), "y_train": y}


def _object_array() -> dict:
    objects = np.empty(100, dtype=object)
    objects[:] = [{"label": i % 10} for i in range(100)]
    return {"x_train": _images(100), "y_train": objects}


CASES = {
    "nan": (_nan, "x_train holds NaN or infinite values: x_train[17, 0, 3, 5] is nan"),
    "negative-label": (_negative, "y_train[42] = -3: labels must be >= 0"),
    "1d-x": (
        lambda: {"x_train": np.zeros(100, np.float32), "y_train": np.arange(100) % 10},
        "x_train must be (N, C, H, W) images or (N, features) rows, got shape (100,)",
    ),
    "float-labels": (
        lambda: {"x_train": _images(100), "y_train": (np.arange(100) % 10).astype(np.float32)},
        "y_train must hold integer class labels 0..n-1, got dtype float32",
    ),
    "object-array": (
        _object_array,
        "unreadable: y_train: Object arrays cannot be loaded when allow_pickle=False",
    ),
    "three-samples": (
        lambda: {"x_train": _images(3), "y_train": np.array([0, 1, 2])},
        "too few samples for val_fraction 0.15 and test_fraction 0.2: each class needs at "
        "least 3 (1 each for train, validation and test); class 0 has 1, class 1 has 1, "
        "class 2 has 1 (3 samples in all)",
    ),
    "one-class": (
        lambda: {"x_train": _images(100), "y_train": np.zeros(100, np.int64)},
        "every label in y_train is 0: one class is not a classification task",
    ),
}


def _write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_data_exits_2_with_one_line_before_anything_trains(tmp_path, case):
    make, expected = CASES[case]
    data = _write_npz(tmp_path / "data.npz", make())
    out = tmp_path / "run"

    run = run_cli(
        "run", DIGITS, "--out", out, "--set", "data.source=npz", "--set", f"data.path={data}",
        cwd=tmp_path, out=out,
    )  # fmt: skip

    assert run.returncode == 2, run.output
    assert "Traceback" not in run.output
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert errors[0].startswith(f"error: npz {data}: ") and expected in errors[0]
    report = run.report
    assert (report["status"], report["exit_code"], report["stages"]) == ("error", 2, [])
    assert report["error"]["type"] == "DataError"
    assert not (out / "train").exists() and not (out / "final").exists()


def test_one_class_the_recipe_allows_trains_with_a_warning_in_the_report(tmp_path):
    data = _write_npz(tmp_path / "data.npz", CASES["one-class"][0]())
    out = tmp_path / "run"

    run = run_cli(
        "run", DIGITS, "--out", out, "--set", "data.source=npz", "--set", f"data.path={data}",
        "--set", "data.allow_single_class=true", "--set", "budgets={}", *SHORT,
        cwd=tmp_path, out=out,
    )  # fmt: skip

    assert run.returncode == 0, run.output
    assert run.report["data"]["warnings"] == [
        f"npz {data}: every label in y_train is 0: a one-class model is right by "
        "construction (accepted by data.allow_single_class)"
    ]
    assert f"data: npz {data}: every label in y_train is 0" in run.output  # on the console too


def test_an_exploding_learning_rate_stops_the_train_stage_and_nothing_after_runs(tmp_path):
    out = tmp_path / "run"

    run = run_cli(
        "run", DIGITS, "--out", out, "--set", "stages[0].optimizer.lr=1e6",
        cwd=tmp_path, out=out,
    )  # fmt: skip

    assert run.returncode == 3, run.output
    assert "Traceback" not in run.output
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith("error: stage 'train': epoch 1: training loss ")
    assert "training diverged" in errors[0] and "divergence_factor = 10" in errors[0]
    report = run.report
    assert [(s["name"], s["status"]) for s in report["stages"]] == [("train", "error")]
    assert not (out / "distill").exists() and report["final"] is None
