"""Atomic artifact writes and content hashes.

Every file the run directory holds is written to a temporary sibling and then
renamed into place (`os.replace` is atomic on POSIX), so an interrupted run
never leaves a file that looks complete but is not. The files get the mode the
umask gives any new file (0644 under the usual 022), not `tempfile.mkstemp`'s
0600: a serving container or CI step running as another user reads the model.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from compress.errors import CompressError

# Disk full, quota exceeded, file-size limit: the same thing to the user.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class DiskFullError(CompressError):
    """An artifact could not be written for lack of space (exit code 3)."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` on success.

    Args:
        path: the final destination.

    Example:
        >>> with atomic_path("out/model.onnx") as tmp:  # doctest: +SKIP
        ...     onnx.save(model, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(path)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise DiskFullError(
                f"{path}: cannot write it, {exc.strerror.lower()}; free space and run the "
                "same command again (completed stages are reused)"
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _new_file(path: Path) -> Path:
    """An empty, uniquely named sibling of `path`, created with mode 0666 minus the
    umask, as `open` would (mkstemp's 0600 would survive the rename)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def sha256_file(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
