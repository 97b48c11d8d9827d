"""Run the `compress` command from a test: in this process by default, or in a real one.

A fresh `python -m compress` pays 3-6 s of torch/onnx/onnxruntime imports before it
does anything; most CLI tests check exit codes, messages and the run folder, which
the same command run in this process gives as well. `run_cli` therefore calls the
click group here, with everything a process would have to itself set up for the call
and put back after it (see `_isolated`): the working directory, `sys.argv`,
`sys.path[0]` (the user-code modules a recipe imports from its folder), standard
streams (Python-level and file-descriptor-level, so ONNX Runtime's C++ log lines are
caught too), environment variables, torch threads and random generators, logging
handlers and levels, warnings filters, signal handlers and the umask.

Not click's `CliRunner`: it captures only Python-level streams and hands each call
fresh stream objects, so a `StreamHandler` a library builds during one call (optuna,
mlflow) writes to a discarded buffer in every later call, and C++ log lines escape.
tests/unit/test_run_cli.py checks the output here equals a real process's.

`run_cli(..., subprocess=True)` keeps a real process for what only a process shows:
kill -9, the run folder's lock held by another process, rlimits, torchrun, exit
handlers, import side effects. Tests that use it carry `@pytest.mark.subprocess`.
"""

from __future__ import annotations

import contextlib
import faulthandler
import importlib
import io
import json
import logging
import os
import random
import signal
import subprocess as _subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CliRun", "run_cli"]

# What the subprocess form sets too: one torch thread, a wide colourless terminal.
_ENV = {"OMP_NUM_THREADS": "1", "COLUMNS": "250", "NO_COLOR": "1"}
_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)  # fmt: skip


@dataclass
class CliRun:
    """One finished `compress` command: exit code, output and run directory."""

    returncode: int
    stdout: str
    stderr: str
    out: Path

    @property
    def output(self) -> str:
        """stdout and stderr together, for assertions about either."""
        return self.stdout + self.stderr

    @property
    def report(self) -> dict[str, Any]:
        """The run directory's report.json."""
        return json.loads((self.out / "report.json").read_text(encoding="utf-8"))


def run_cli(
    *args: str | Path,
    cwd: str | Path,
    out: str | Path | None = None,
    timeout: float = 300,
    subprocess: bool = False,
) -> CliRun:
    """Run `compress ARGS` in `cwd`, on one torch thread, and collect what it printed.

    In this process by default (see the module docstring for what is isolated);
    `subprocess=True` starts `python -m compress ARGS` instead, for tests about what
    only a real process shows (mark those `@pytest.mark.subprocess` and say why).
    The terminal is wide and colourless so messages are not wrapped.

    Args:
        *args: the command line after `compress`.
        cwd: the working directory (a tmp_path: `runs/` defaults land there).
        out: the run directory the command writes, for `CliRun.report`
            (default: `cwd`).
        timeout: seconds before the command is given up: the process is killed
            (subprocess); in process, every thread's traceback is printed on stderr
            at that point, so a hang says where it hangs (ending the test process
            would end every other test of it too).
        subprocess: start a real `python -m compress` process.

    Example:
        >>> run = run_cli("validate", "t.toml", cwd=tmp_path)  # doctest: +SKIP
        >>> run.returncode  # doctest: +SKIP
        0
    """
    argv = [str(arg) for arg in args]
    if subprocess:
        result = _subprocess.run(
            [sys.executable, "-m", "compress", *argv],
            cwd=cwd,
            env={**os.environ, **_ENV},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return CliRun(result.returncode, result.stdout, result.stderr, Path(out or cwd))
    # a hang prints every thread's traceback where the test's output goes (a dup of
    # descriptor 2: the call's own descriptor 2 goes to a file read only at its end)
    with open(os.dup(2), "w") as terminal, _isolated(Path(cwd), argv) as streams:
        faulthandler.dump_traceback_later(timeout, file=terminal)
        try:
            code = _invoke(argv)
        finally:
            faulthandler.cancel_dump_traceback_later()
    return CliRun(code, streams.stdout, streams.stderr, Path(out or cwd))


def _invoke(argv: list[str]) -> int:
    """`compress ARGV` as `python -m compress` would end: its exit status."""
    os.environ.update(_ENV)  # before compress.cli's module-level console reads them
    from compress.cli import main

    try:
        main.main(args=argv, prog_name="compress", standalone_mode=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # what the interpreter prints for an uncaught exception
        traceback.print_exc(file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- isolation


class _Streams:
    """stdout/stderr text of one call, from Python and from file descriptors 1 and 2."""

    def __init__(self) -> None:
        self.stdout = ""
        self.stderr = ""


class _Forward(io.TextIOBase):
    """A standard stream that writes to the current call's buffer.

    A library that builds a `StreamHandler` during a call (optuna, mlflow) keeps the
    stream object it found; forwarding keeps its lines going to whichever call runs
    next, as they would in that call's own process, not to a buffer long read."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.target: io.StringIO | None = None

    def write(self, text: str) -> int:
        fallback = sys.__stderr__ if self.name == "<stderr>" else sys.__stdout__
        target = self.target if self.target is not None else fallback
        return target.write(text) if target is not None else len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


_STDOUT, _STDERR = _Forward("<stdout>"), _Forward("<stderr>")


@contextlib.contextmanager
def _fd_captured(fd: int) -> Iterator[io.BufferedRandom]:
    """Point file descriptor `fd` at a temporary file for the block (C++ log lines)."""
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as file:
        os.dup2(file.fileno(), fd)
        try:
            yield file
        finally:
            os.dup2(saved, fd)
            os.close(saved)


@contextlib.contextmanager
def _captured() -> Iterator[_Streams]:
    """Standard streams (Python objects and descriptors 1, 2) into a `_Streams`."""
    streams = _Streams()
    buffers = io.StringIO(), io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    with _fd_captured(1) as fd_out, _fd_captured(2) as fd_err:
        _STDOUT.target, _STDERR.target = buffers
        sys.stdin, sys.stdout, sys.stderr = io.StringIO(), _STDOUT, _STDERR
        try:
            yield streams
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
            _STDOUT.target = _STDERR.target = None
            for stream in (sys.__stdout__, sys.__stderr__):
                with contextlib.suppress(Exception):
                    stream.flush()
            fd_out.seek(0)
            fd_err.seek(0)
            streams.stdout = buffers[0].getvalue() + fd_out.read().decode(errors="replace")
            streams.stderr = buffers[1].getvalue() + fd_err.read().decode(errors="replace")


@contextlib.contextmanager
def _isolated(cwd: Path, argv: list[str]) -> Iterator[_Streams]:
    """The process-global state a `compress` command sets, put back after it."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_process_state(cwd, argv))
        stack.enter_context(_torch_state())
        stack.enter_context(_logging_state())
        stack.enter_context(_process_warnings())
        stack.enter_context(_user_code(cwd))
        yield stack.enter_context(_captured())


@contextlib.contextmanager
def _process_state(cwd: Path, argv: list[str]) -> Iterator[None]:
    """cwd, argv, environment variables, signal handlers and the umask."""
    old_cwd, old_argv, old_env = os.getcwd(), sys.argv[:], dict(os.environ)
    handlers = {number: signal.getsignal(number) for number in _SIGNALS}
    umask = os.umask(0o022)
    os.umask(umask)
    os.chdir(cwd)
    sys.argv = ["compress", *argv]
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        os.environ.clear()
        os.environ.update(old_env)
        for number, handler in handlers.items():
            if handler is not None:
                signal.signal(number, handler)
        os.umask(umask)


# A fresh interpreter's filters (CPython 3.11+, no -W): what `python -m compress` has.
_INTERPRETER_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, None),
    ("ignore", PendingDeprecationWarning, None),
    ("ignore", ImportWarning, None),
    ("ignore", ResourceWarning, None),
)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's own printing of a warning, to the call's stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def _process_warnings() -> Iterator[None]:
    """Warnings filtered and printed as in a fresh process, not recorded by pytest: a
    test that says "no warning reached the console" then means it. Put back after."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for action, category, module in reversed(_INTERPRETER_FILTERS):
            warnings.filterwarnings(action, category=category, module=module or "")
        warnings.showwarning = _print_warning
        yield


@contextlib.contextmanager
def _torch_state() -> Iterator[None]:
    """Threads, grad mode, default dtype and every random generator a run seeds."""
    import numpy as np
    import torch

    threads, grad = torch.get_num_threads(), torch.is_grad_enabled()
    dtype = torch.get_default_dtype()
    rng = torch.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])


@contextlib.contextmanager
def _logging_state() -> Iterator[None]:
    """Root handlers and every logger's level (the exporter and ORT quantizer set them).

    Handlers a library adds to its own logger when first imported stay, as they would
    in the process: they write through `_Forward` to the call that is running."""
    root = logging.getLogger()
    handlers, disabled = root.handlers[:], logging.root.manager.disable
    loggers = [root, *(log for log in logging.root.manager.loggerDict.values()
                       if isinstance(log, logging.Logger))]  # fmt: skip
    levels = {log: (log.level, log.propagate, log.disabled) for log in loggers}
    try:
        yield
    finally:
        logging.captureWarnings(False)
        logging.disable(disabled)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        for log, (level, propagate, off) in levels.items():
            log.setLevel(level)
            log.propagate, log.disabled = propagate, off


@contextlib.contextmanager
def _user_code(cwd: Path) -> Iterator[None]:
    """`python -m` puts the working directory first on sys.path: recipes import user
    code from their folder. Modules imported from there are forgotten after the call,
    so the next test's `mymodel.py` is its own, and so is what they registered (a toy
    stage, a model family) in compress's registries: it would be 'registered twice'."""
    importlib.invalidate_caches()  # files a test has just written
    path = sys.path[:]
    sys.path.insert(0, str(cwd))
    try:
        yield
    finally:
        sys.path[:] = path
        roots = (str(cwd) + os.sep, os.path.realpath(cwd) + os.sep)
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None) or ""
            if where.startswith(roots):
                del sys.modules[name]
        _forget_registered_by_forgotten_modules()


def _forget_registered_by_forgotten_modules() -> None:
    from compress.registry import Registry

    registries = {
        id(value): value
        for name, module in list(sys.modules.items())
        if name == "compress" or name.startswith("compress.")
        for value in list(vars(module).values())
        if isinstance(value, Registry)
    }
    for registry in registries.values():
        for key, entry in list(registry._entries.items()):
            if getattr(entry, "__module__", "compress") not in sys.modules:
                del registry._entries[key]
