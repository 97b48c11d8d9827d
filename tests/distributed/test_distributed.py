"""Distributed training on 2 gloo ranks (CPU) against one process on the same batches."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from compress.training import fit
from tests.distributed._ranks import model_and_spec, tiny_data, training_config

HERE = Path(__file__).parent

# subprocess: torchrun starts the ranks; the CLI tests relaunch themselves through it
pytestmark = pytest.mark.subprocess


def torchrun(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        *args,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent.parent)}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def single_process(kind: str) -> dict[str, torch.Tensor]:
    kind = kind.removesuffix("-lazy")  # lazy splits train as their tensors do (in memory)
    data = tiny_data()
    model, _ = model_and_spec(kind, data)
    fit(model, data, training_config(), seed=3)
    return model.state_dict()


@pytest.fixture(scope="module")
def every_mode(tmp_path_factory) -> Path:
    """One torchrun launch that trains every DDP / GPipe mode (`_ranks.py all`)."""
    out = tmp_path_factory.mktemp("modes")
    run = torchrun(str(HERE / "_ranks.py"), "all", str(out), timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    "mode, kind",
    [("ddp", "cnn"), ("pipeline", "mlp"), ("pipeline", "cnn"), ("ddp", "cnn-lazy")],
)
def test_two_ranks_train_the_same_weights_as_one_process(every_mode, mode, kind):
    out = every_mode / f"{mode}-{kind}.safetensors"
    distributed = load_file(str(out))
    single = single_process(kind)
    assert distributed.keys() == single.keys()
    if mode == "pipeline" and kind == "cnn":
        # GPipe runs BatchNorm per micro-batch, so weights differ from one process by
        # design; what must hold: finite, and statistics from exactly the training
        # micro-batches (2 epochs x full batches of 64 x 2 micro-batches), none extra.
        full_batches = len(tiny_data().train) // 64
        for name, tensor in distributed.items():
            assert torch.isfinite(tensor.float()).all(), name
            if name.endswith("num_batches_tracked"):
                assert tensor.item() == 2 * full_batches * 2, name
    else:
        for name, tensor in single.items():
            torch.testing.assert_close(distributed[name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # and training moved the weights at all (the comparison is not of two initialisations)
    data = tiny_data()
    untrained, _ = model_and_spec(kind.removesuffix("-lazy"), data)
    moved = [
        not torch.allclose(untrained.state_dict()[k].float(), v.float())
        for k, v in distributed.items()
    ]
    assert any(moved)


def test_gpipe_step_matches_one_process_outputs_and_gradients(every_mode):
    out = every_mode / "pipeline-step.safetensors"
    first, last = (load_file(f"{out}.rank{rank}") for rank in (0, 1))

    data = tiny_data()
    model, _ = model_and_spec("mlp", data)
    x, y = data.train.x[:32], data.train.y[:32]
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()

    torch.testing.assert_close(last["outputs"], logits.detach(), rtol=1e-5, atol=1e-6)
    assert first["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert last["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    grads = {
        k[len("grad.") :]: v
        for rank in (first, last)
        for k, v in rank.items()
        if k.startswith("grad.")
    }
    expected = {name: p.grad for name, p in model.named_parameters()}
    assert grads.keys() == expected.keys()  # every parameter trained by exactly one stage
    assert not (
        {k for k in first if k.startswith("grad.")} & {k for k in last if k.startswith("grad.")}
    )
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


# --------------------------------------------------------------------------- the CLI

DIGITS = HERE.parent.parent / "recipes" / "digits.toml"
TINY = [
    "--set", "stages[0].epochs=2", "--set", "stages[1].epochs=2",
    "--set", "stages[2].finetune.epochs=1", "--set", "runtime.repeats=5",
    "--set", "runtime.rounds=2", "--set", "budgets.accuracy_drop_max=0.5",
    "--set", "budgets.accuracy_min=0.5", "--set", "stages[0].budgets.accuracy_min=0.5",
    "--set", "stages[4].agreement_min=0.8",
]  # fmt: skip


def compress_cli(*args: str, cwd: Path, timeout: float = 300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent.parent)}
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "compress", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )  # fmt: skip
    return run, time.monotonic() - started


@pytest.mark.parametrize(
    "strategy",
    # the pipeline path through the CLI differs from ddp only in the engine, which the
    # tests above cover; run it end to end with `pytest -m slow`
    ["ddp", pytest.param("pipeline", marks=pytest.mark.slow)],
)
def test_nproc_2_runs_the_digits_recipe_and_writes_one_report(tmp_path, strategy):
    out = tmp_path / "run"
    run, _ = compress_cli(
        "run", str(DIGITS), "--nproc", "2", "--out", str(out), "--quiet",
        "--set", f"distributed.strategy={strategy}", *TINY, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "passed"
    assert report["distributed"] == {"strategy": strategy, "world_size": 2, "micro_batches": 4}
    assert [s["status"] for s in report["stages"]] == ["passed"] * 5
    assert run.stdout.count("PASSED report") == 1  # rank 1 printed no second run


@pytest.mark.parametrize("function", ["killed_on_rank1", "raises_on_rank1"])
def test_a_failing_rank_ends_the_job_quickly_with_a_clear_error(tmp_path, function):
    out = tmp_path / "run"
    run, seconds = compress_cli(
        "run", str(DIGITS), "--nproc", "2", "--out", str(out), "--quiet",
        "--set", f'model={{ architecture = "tests.distributed._models:{function}" }}',
        "--set", "stages=[{ type = \"train\", epochs = 1 }]",
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == 3, run.stdout[-2000:] + run.stderr[-3000:]
    assert seconds < 60
    assert "distributed run failed" in run.stderr
    if function == "raises_on_rank1":
        assert "rank 1" in run.stderr and "only-on-node-0.bin" in run.stderr


def test_a_strategy_this_machine_cannot_run_is_a_recipe_error(tmp_path):
    run, _ = compress_cli(
        "run", str(DIGITS), "--nproc", "2", "--out", str(tmp_path / "run"),
        "--set", "distributed.strategy=fsdp", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 2
    assert "distributed.strategy" in run.stderr and "ddp" in run.stderr
    assert "Traceback" not in run.stderr


# --------------------------------------------------------------------------- kill -9, resume

RESUMABLE = [
    "--set", 'stages=[{ type = "train", epochs = 4, batch_size = 32 }, { type = "export" }]',
    "--set", "runtime.repeats=5", "--set", "runtime.rounds=2",
    "--set", "budgets={ accuracy_min = 0.5 }",
]  # fmt: skip


def _epochs_saved(out: Path, rank: int) -> list[int]:
    states = out.glob(f".resume/train-*/fit-1/rank-{rank}/epoch-*/state.json")
    return sorted(int(path.parent.name.split("-")[1]) for path in states)


def _processes_naming(out: Path, within_s: float) -> list[int]:
    """Pids whose command line names `out`, once none is left or after `within_s`."""
    deadline = time.monotonic() + within_s
    while True:
        alive = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(out) in command and (proc / "stat").read_text().split()[2] != "Z":
                alive.append(int(proc.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _untimed(report: dict) -> list[dict]:
    keep = ("accuracy", "size_bytes", "params", "macs")
    return [{k: stage["metrics"][k] for k in keep} for stage in report["stages"]]


@pytest.mark.parametrize(
    "strategy",
    # GPipe ranks each keep their own stage's optimizer state: `pytest -m slow` runs it
    ["ddp", pytest.param("pipeline", marks=pytest.mark.slow)],
)
def test_a_killed_two_rank_run_resumes_from_its_last_epoch_with_the_same_result(tmp_path, strategy):
    import hashlib
    import json
    import signal

    def command(out: Path) -> list[str]:
        return [
            "run", str(DIGITS), "--nproc", "2", "--out", str(out), "--quiet",
            "--set", f"distributed.strategy={strategy}", *RESUMABLE,
        ]  # fmt: skip

    reference = tmp_path / "reference"
    run, _ = compress_cli(*command(reference), cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent.parent)}
    # its own session: kill -9 reaches the CLI, torchrun and both ranks at once, as a
    # crash of the machine or a killed CI job would
    process = subprocess.Popen(
        [sys.executable, "-m", "compress", *command(out)], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not (_epochs_saved(out, 0) and max(_epochs_saved(out, 0)) >= 2):
        assert process.poll() is None, "the run ended before the kill point"
        assert time.monotonic() < deadline, "no epoch checkpoint appeared"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # torchrun starts the ranks in sessions of their own: they must die with it, not
    # go on writing into the folder (they once did, and the rerun found a finished stage)
    assert _processes_naming(out, within_s=10) == []
    assert not (out / "train" / "metrics.json").exists()  # killed mid-stage
    assert _epochs_saved(out, 1), "rank 1 kept no epoch state of its own"

    resumed, _ = compress_cli(*command(out), cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    ours = json.loads((out / "report.json").read_text())
    theirs = json.loads((reference / "report.json").read_text())
    training = ours["stages"][0]["details"]["training"]
    assert training["resumed_from_epoch"] >= 2
    assert training["history"] == theirs["stages"][0]["details"]["training"]["history"]
    assert _untimed(ours) == _untimed(theirs)
    digest = [
        hashlib.sha256((run_dir / "final" / "model.onnx").read_bytes()).hexdigest()
        for run_dir in (out, reference)
    ]
    assert digest[0] == digest[1]
    assert not list(out.glob(".resume/*"))  # spent checkpoints are removed


def test_a_rank_exits_with_its_code_after_its_exit_handlers_ran(tmp_path):
    """exit_process skips C++ static teardown (where gloo can abort) but not Python's:
    exit handlers run, buffered output reaches the pipe, the code is the one given."""
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, pathlib, sys\n"
        "from compress.distributed.session import exit_process\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.stdout.write('buffered, no newline')\n"
        "exit_process(3)\n"
        "print('unreachable')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 3, run.stderr
    assert run.stdout == "buffered, no newline"
    assert marker.read_text() == "yes"


def test_gpipe_says_which_batches_it_left_out_in_the_report_and_on_the_console(tmp_path):
    import json

    from compress.testing import tiny_recipe_dict, write_recipe

    # 1,222 training rows in batches of 32: GPipe takes the 38 full ones and leaves out
    # the last 6 rows of every epoch (its micro-batch shapes are fixed)
    train = {"type": "train", "epochs": 1, "batch_size": 32, "optimizer": {"name": "adam"}}
    recipe = write_recipe(
        tmp_path / "tiny.toml", tiny_recipe_dict(stages=[train, {"type": "export"}])
    )
    out = tmp_path / "run"
    run, _ = compress_cli(
        "run", str(recipe), "--nproc", "2", "--out", str(out), "--quiet", "--no-cache",
        "--set", "distributed.strategy=pipeline", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]

    report = json.loads((out / "report.json").read_text())
    (line,) = report["stages"][0]["warnings"]
    assert line == (
        "1 batch(es) of [6] rows (6 rows in all, over 1 epoch(s) of 1222 training rows) were "
        "left out of training: GPipe takes full batches only (its micro-batch shapes are "
        "fixed at the first step)"
    )
    assert f"warning: train: {line}" in " ".join(run.stdout.split())
