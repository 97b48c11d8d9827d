"""One writer per run folder: an OS lock on `<run>/.lock`, taken before anything is written.

`fcntl.flock` belongs to the open file, so the kernel drops it when the process ends
however it ends (`kill -9` included): a lock left by a killed run never blocks the
next one, and there is nothing to clean up. The file holds the holder's pid, for the
message a second run prints; it stays behind, empty, after a clean exit (removing it
would let two processes lock two different files of one name).

Readers (`compress report`, `compress bench`) never take it. A distributed run is
locked by the `compress run` that launches torchrun; it hands the lock to its rank 0
through the environment, so rank 0 (which creates the Runner) does not wait on it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

from compress.errors import UsageError

try:
    import fcntl
except ImportError:  # not POSIX (Windows): runs go unlocked, as they did before
    fcntl = None

LOCK_FILE = ".lock"
HELD_ENV = "COMPRESS_RUN_LOCK"  # the lock file this process tree already holds


def _holder(fd: int) -> str:
    """The pid written in the lock file; the holder may not have written it yet."""
    for _ in range(20):
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        if text:
            return text
        time.sleep(0.025)
    return "unknown"


@contextlib.contextmanager
def run_lock(out_dir: Path) -> Iterator[Path]:
    """Hold `out_dir`'s lock for the block; creates the folder and its `.lock`.

    Args:
        out_dir: the run folder.

    Raises:
        UsageError: another process holds the lock (the message names its pid), or
            the folder or its lock file cannot be created.

    Example:
        >>> with run_lock(Path("runs/digits")):  # doctest: +SKIP
        ...     Runner(recipe, Path("runs/digits")).run()
    """
    path = Path(out_dir) / LOCK_FILE
    key = str(path.resolve())
    if fcntl is None or os.environ.get(HELD_ENV) == key:  # our launcher holds it
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create the run folder's lock file ({exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{out_dir}: in use by process {_holder(fd)} (another compress run writing "
                "this run folder); wait for it to end, or pass another --out"
            ) from None
        except OSError as exc:  # a file system without locks
            raise UsageError(f"{out_dir}: cannot lock the run folder ({exc})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.environ[HELD_ENV] = key  # inherited by the processes this run starts
        try:
            yield path
        finally:
            os.environ.pop(HELD_ENV, None)
            os.ftruncate(fd, 0)  # still held: no one else reads a half-cleared pid
    finally:
        os.close(fd)  # releases the lock
