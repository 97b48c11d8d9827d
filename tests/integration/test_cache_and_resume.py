"""Stage cache, corrupt artifacts, SIGKILL + re-run, and determinism of seeded runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration

STAGES = [
    {"type": "train", "epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01}},
    # round_to 1: this 8/16-channel CNN would not prune in multiples of 8 (the default)
    {"type": "prune", "ratio": 0.5, "steps": 2, "round_to": 1, "finetune": {"epochs": 1}},
    {"type": "export"},
]


def _recipe(tmp_path: Path, **overrides) -> Path:
    return write_recipe(tmp_path / "t.toml", tiny_recipe_dict(stages=STAGES, **overrides))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _untimed(report: dict) -> list[dict]:
    """Per-stage metrics that must be reproducible: everything but the timings."""
    keep = ("accuracy", "size_bytes", "size_compressed_bytes", "params", "macs")
    return [{k: s["metrics"][k] for k in keep} for s in report["stages"]]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the 3-stage recipe."""
    root = tmp_path_factory.mktemp("reference")
    run = run_cli("run", _recipe(root), "--out", root / "run", cwd=root, out=root / "run")
    assert run.returncode == 0, run.output
    return root / "run", run.report


def _finished(reference, tmp_path: Path) -> tuple[Path, Path]:
    """(recipe, run folder) in tmp_path: a copy of the reference run, as if this test had
    just run the recipe there (cache keys hold no paths); the copy is the test's to change."""
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    return _recipe(tmp_path), out


def test_rerun_of_an_unchanged_recipe_reuses_every_stage(reference, tmp_path):
    path, out = _finished(reference, tmp_path)
    first = reference[1]

    second = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert second.returncode == 0, second.output
    assert [s["cached"] for s in first["stages"]] == [False, False, False]
    assert [s["cached"] for s in second.report["stages"]] == [True, True, True]
    assert second.stdout.count("(cached)") == 3
    assert _untimed(second.report) == _untimed(first)


def test_changing_a_stage_reruns_it_and_everything_after_nothing_before(reference, tmp_path):
    path, out = _finished(reference, tmp_path)

    changed = run_cli(
        "run",
        path,
        "--out",
        out,
        "--set",
        "stages[1].ratio=0.25",
        cwd=tmp_path,
        out=out,
    )

    assert changed.returncode == 0, changed.output
    assert [s["cached"] for s in changed.report["stages"]] == [True, False, False]


def test_changing_only_a_budget_rechecks_without_rerunning(reference, tmp_path):
    _, out = _finished(reference, tmp_path)

    rerun = run_cli(
        "run", _recipe(tmp_path, budgets={"params_max": 10}), "--out", out, cwd=tmp_path, out=out
    )

    assert rerun.returncode == 1
    assert all(s["cached"] for s in rerun.report["stages"])
    assert "params" in rerun.stderr and "max 10" in rerun.stderr


def test_a_corrupt_cached_artifact_is_detected_and_rebuilt(reference, tmp_path):
    path, out = _finished(reference, tmp_path)
    first = reference[1]
    weights = out / "prune" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated, as by a full disk

    second = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert second.returncode == 0, second.output
    assert "prune/model.safetensors does not match its recorded hash" in second.stdout
    cached = [s["cached"] for s in second.report["stages"]]
    assert cached[:2] == [True, False]
    assert second.report["stages"][1]["cache_rejected"].startswith("prune/model.safetensors")
    assert _untimed(second.report) == _untimed(first)  # rebuilt identically


def test_no_cache_flag_reruns_everything(reference, tmp_path):
    path, out = _finished(reference, tmp_path)

    rerun = run_cli("run", path, "--out", out, "--no-cache", cwd=tmp_path, out=out)

    assert [s["cached"] for s in rerun.report["stages"]] == [False, False, False]


# subprocess: the same bytes from a fresh process, not only from this warmed-up one
@pytest.mark.subprocess
def test_two_seeded_runs_give_byte_identical_models_and_metrics(reference, tmp_path):
    ref_dir, ref_report = reference

    run = run_cli(
        "run", _recipe(tmp_path), "--out", tmp_path / "run", cwd=tmp_path, out=tmp_path / "run",
        subprocess=True,
    )  # fmt: skip

    assert _sha(run.out / "final" / "model.onnx") == _sha(ref_dir / "final" / "model.onnx")
    for stage in ("train", "prune"):
        assert _sha(run.out / stage / "model.safetensors") == _sha(
            ref_dir / stage / "model.safetensors"
        )
    assert _untimed(run.report) == _untimed(ref_report)
    assert run.report["seed"] == 0 and run.report["environment"]["torch"]


def _kill_when(process: subprocess.Popen, out: Path, condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition(out):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail("the run ended before the kill point")
        time.sleep(0.02)
    process.kill()
    pytest.fail("kill point never reached")


KILL_POINTS = {
    "mid-training": lambda out: (
        (out / "train").is_dir() and not (out / "train" / "metrics.json").exists()
    ),
    "after the first stage": lambda out: (out / "train" / "metrics.json").exists(),
    "mid-pruning": lambda out: (
        (out / "prune").is_dir() and not (out / "prune" / "metrics.json").exists()
    ),
}


def test_a_half_written_stage_folder_is_never_reused(reference, tmp_path):
    ref_dir, ref_report = reference
    path, out = _finished(reference, tmp_path)
    # what a kill during the prune stage's writes leaves: no metrics.json, a truncated
    # file and a temporary sibling
    (out / "prune" / "metrics.json").unlink()
    onnx = out / "prune" / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:50])
    (out / "prune" / ".model.onnx.abc.tmp").write_bytes(b"partial")
    (out / ".report.json.abc.tmp").write_bytes(b"{partial")  # killed mid-report

    rerun = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert rerun.returncode == 0, rerun.output
    # prune is rebuilt byte-identically, so export's input is unchanged: it is reused
    assert [s["cached"] for s in rerun.report["stages"]] == [True, False, True]
    assert _untimed(rerun.report) == _untimed(ref_report)
    assert not list(out.rglob("*.tmp"))


# subprocess: kill -9 of a real run at each kill point
@pytest.mark.subprocess
@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_rerun_matches_an_uninterrupted_run(reference, tmp_path, point):
    ref_dir, ref_report = reference
    out = tmp_path / "run"
    path = _recipe(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "compress", "run", str(path), "--out", str(out), "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_when(process, out, KILL_POINTS[point])
    if (out / "report.json").exists():  # whatever was written is whole JSON
        assert json.loads((out / "report.json").read_text())["status"] in ("running", "passed")

    resumed = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert resumed.returncode == 0, resumed.output
    assert _untimed(resumed.report) == _untimed(ref_report)
    assert _sha(out / "final" / "model.onnx") == _sha(ref_dir / "final" / "model.onnx")
    assert not [p for p in out.rglob("*.tmp")]


# --------------------------------------------------------------------------- epoch resume

LONG_STAGES = [
    {"type": "train", "epochs": 8, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.01},
     "schedule": {"name": "cosine"}, "early_stopping": {"patience": 8}},
    {"type": "prune", "ratio": 0.5, "steps": 2,
     "finetune": {"epochs": 4, "optimizer": {"name": "momentum", "lr": 0.02}}},
    {"type": "export"},
]  # fmt: skip


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    """One uninterrupted run of a recipe whose stages train for several epochs."""
    root = tmp_path_factory.mktemp("long-reference")
    path = write_recipe(root / "t.toml", tiny_recipe_dict(stages=LONG_STAGES))
    run = run_cli("run", path, "--out", root / "run", cwd=root, out=root / "run")
    assert run.returncode == 0, run.output
    return root / "run", run.report


def _epoch_saved(stage: str, fit: int):
    def condition(out: Path) -> bool:
        if (out / stage / "metrics.json").exists():
            return False
        return any(out.glob(f".resume/{stage}-*/fit-{fit}/state.json"))

    return condition


# subprocess: kill -9 of a real run mid-stage
@pytest.mark.subprocess
@pytest.mark.parametrize(
    "stage, fit",
    [("train", 1), ("prune", 2)],
    ids=["mid-training, after an epoch", "mid-pruning, in the second fine-tune"],
)
def test_sigkill_mid_stage_resumes_from_the_last_epoch_with_identical_results(
    long_reference, tmp_path, stage, fit
):
    ref_dir, ref_report = long_reference
    out = tmp_path / "run"
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict(stages=LONG_STAGES))
    process = subprocess.Popen(
        [sys.executable, "-m", "compress", "run", str(path), "--out", str(out), "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _kill_when(process, out, _epoch_saved(stage, fit))

    resumed = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert resumed.returncode == 0, resumed.output
    record = next(s for s in resumed.report["stages"] if s["name"] == stage)
    if stage == "train":
        assert record["details"]["training"]["resumed_from_epoch"] >= 1
    else:
        steps = {step["step"]: step for step in record["details"]["steps"]}  # 0: unpruned
        assert steps[1]["finetune"]["resumed_from_epoch"] == 4  # step 1 was complete
        assert steps[2]["finetune"]["resumed_from_epoch"] >= 1
    assert _untimed(resumed.report) == _untimed(ref_report)
    # epoch by epoch, the resumed training saw the same losses as the uninterrupted one
    ours, theirs = resumed.report["stages"][0], ref_report["stages"][0]
    assert ours["details"]["training"]["history"] == theirs["details"]["training"]["history"]
    assert _sha(out / "final" / "model.onnx") == _sha(ref_dir / "final" / "model.onnx")
    assert not list(out.glob(".resume/*"))  # spent checkpoints are removed


# --------------------------------------------------------------------------- disk full


# subprocess: RLIMIT_FSIZE applies to a whole process
@pytest.mark.subprocess
@pytest.mark.parametrize("limit_kib", [40])
def test_a_full_disk_is_one_clear_error_and_a_rerun_completes(tmp_path, limit_kib):
    """RLIMIT_FSIZE makes writes past the limit fail (EFBIG) the way a full disk
    does (ENOSPC); 40 KiB lets the stages run and fails part-way through the reports."""
    import resource

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_kib * 1024, limit_kib * 1024))

    out = tmp_path / "run"
    path = _recipe(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "compress", "run", str(path), "--out", str(out), "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size,
    )

    assert run.returncode == 3, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors and "free space and run the same command again" in errors[-1]
    assert str(out) in errors[-1]
    assert not list(out.rglob("*.tmp"))  # no half-written file left behind
    for written in out.rglob("*.json"):  # and every file there is whole
        json.loads(written.read_text())

    rerun = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)
    assert rerun.returncode == 0, rerun.output


def test_a_model_the_pruner_cannot_handle_fails_its_stage_clearly_and_keeps_the_rest(tmp_path):
    recipe = tiny_recipe_dict(
        stages=[{"type": "train", "epochs": 1}, {"type": "prune", "ratio": 0.5}, {"type": "export"}]
    )
    # the user's module sits beside the recipe, as it would in their project
    (tmp_path / "odd_models.py").write_text((Path(__file__).parent / "_odd_models.py").read_text())
    recipe["model"] = {"architecture": "odd_models:raw_conv"}
    path = write_recipe(tmp_path / "t.toml", recipe)
    out = tmp_path / "run"

    run = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert run.returncode == 3, run.output
    assert "stage 'prune': torch-pruning failed at step 1" in run.output
    assert "Traceback" not in run.output
    assert run.report["status"] == "error"
    assert (out / "final" / "model.onnx").is_file()  # the trained model is still saved
    assert run.report["best_stage"] == "train"
