"""One writer per run folder: a second `compress run` refuses at once, naming the first;
a run killed with SIGKILL leaves nothing that blocks the next; readers need no lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from compress.cli import main
from compress.errors import UsageError
from compress.pipeline.lock import HELD_ENV, LOCK_FILE, run_lock
from compress.testing import run_cli, tiny_recipe_dict, write_recipe

pytestmark = pytest.mark.integration


def _start_long_run(tmp_path):
    """A `compress run` that trains for minutes, once it holds the lock: (process, out)."""
    recipe = tiny_recipe_dict(stages=[{"type": "train", "epochs": 1000}, {"type": "export"}])
    path = write_recipe(tmp_path / "long.toml", recipe)
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "compress", "run", str(path), "--out", str(out), "--quiet"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    lock = out / LOCK_FILE
    while not (lock.is_file() and lock.read_text().strip() == str(process.pid)):
        assert process.poll() is None, "the first run ended before taking the lock"
        assert time.monotonic() < deadline, "the first run never took the lock"
        time.sleep(0.1)
    while not (out / "report.json").is_file():  # written right after the lock
        time.sleep(0.1)
    return process, out


def _kill(process) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


# subprocess: the lock must be held by another process, as a user meets it
@pytest.mark.subprocess
def test_a_second_run_into_the_same_folder_exits_2_naming_the_first(tmp_path):
    first, out = _start_long_run(tmp_path)
    try:
        path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())
        started = time.monotonic()

        second = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

        seconds = time.monotonic() - started
        report = CliRunner().invoke(main, ["report", str(out)])  # readers take no lock
        assert first.poll() is None  # still running: the second did not wait for it
    finally:
        _kill(first)

    assert second.returncode == 2, second.output
    assert "Traceback" not in second.output
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {out}: in use by process {first.pid} (another compress run writing this "
        "run folder); wait for it to end, or pass another --out"
    ]
    assert seconds < 30  # refused at once (a process start), not after training
    assert report.exit_code == 0, report.output


# subprocess: kill -9 of a real run holding the lock
@pytest.mark.subprocess
def test_a_lock_left_by_a_killed_run_does_not_block_the_next(tmp_path):
    first, out = _start_long_run(tmp_path)
    _kill(first)
    path = write_recipe(tmp_path / "t.toml", tiny_recipe_dict())

    run = run_cli("run", path, "--out", out, cwd=tmp_path, out=out)

    assert run.returncode == 0, run.output
    assert run.report["status"] == "passed"
    assert (out / LOCK_FILE).read_text() == ""  # released: no pid left behind


def test_the_lock_is_held_for_the_block_and_handed_to_child_processes(tmp_path):
    out = tmp_path / "run"

    with run_lock(out):
        held = os.environ.get(HELD_ENV)
        with run_lock(out):  # a torchrun child of this run: its launcher holds the lock
            pass
        os.environ.pop(HELD_ENV)  # as an unrelated process would see it
        try:
            with pytest.raises(UsageError) as info:
                with run_lock(out):
                    pass
        finally:
            os.environ[HELD_ENV] = held
        pid = (out / LOCK_FILE).read_text().strip()
    with run_lock(out):  # released at the end of the block
        pass

    assert held == str((out / LOCK_FILE).resolve())
    assert pid == str(os.getpid())
    assert str(info.value) == (
        f"{out}: in use by process {os.getpid()} (another compress run writing this run "
        "folder); wait for it to end, or pass another --out"
    )
    assert HELD_ENV not in os.environ
