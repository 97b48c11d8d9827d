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


def strip_nproc(argv: list[str]) -> list[str]:
    """The command line without `--nproc N` / `--nproc=N`, for the child processes."""
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            out.append(token)
    return out


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
    returncode = subprocess.call(command, env=env)
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
