"""`compress run --nproc N`: start N processes on this machine through torchrun.

torchrun's elastic agent (torch.distributed.run) owns the processes: it sets up the
rendezvous, streams their output, and when one exits with an error it stops the
others at once, so a crash never leaves a job hanging. Several machines use an
external `torchrun --nnodes ...` instead (see docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

LAUNCHED_ENV = "COMPRESS_LAUNCHED"  # set for the children: the parent owns the exit code
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere
    nothing).

    torchrun starts each rank in a session of its own, so a `kill -9` of the launcher
    (or of the CLI above it) left the ranks running: rank 0 went on writing into a run
    folder whose lock had died with the CLI, and the next run raced it. With this set
    in torchrun and in every rank, killing the top process ends the whole job.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent was already gone before the request took effect
        os._exit(1)


def launch(child_argv: list[str], nproc: int, report_path: Path) -> tuple[int, str | None]:
    """Run `compress <child_argv>` in `nproc` processes; return (exit code, error line).

    The exit code comes from the report rank 0 wrote, as in a single-process run;
    when no fresh complete report exists, a process died: exit 3.
    """
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, LAUNCHED_ENV: "1", "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        "--monitor-interval=0.5",
        "-m",
        "compress",
        *child_argv,
    ]
    started = time.time()
    returncode = subprocess.call(command, env=env, preexec_fn=die_with_parent)
    exit_code = None
    if report_path.is_file() and report_path.stat().st_mtime >= started:
        try:
            exit_code = json.loads(report_path.read_text(encoding="utf-8")).get("exit_code")
        except (OSError, json.JSONDecodeError):
            exit_code = None
    if returncode == 0 and isinstance(exit_code, int):
        return exit_code, None
    return 3, (
        f"distributed run failed: torchrun exited {returncode} after a process ended "
        "with an error (its message is above); the run directory keeps every stage "
        "that completed"
    )
