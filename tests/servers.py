"""Real servers for the tests that need them, started on 127.0.0.1 and stopped after.

- `mlflow_server`: `mlflow server` with a sqlite file backend and proxied artifacts in
  a temporary folder (MLflow 3 keeps the plain file store behind an opt-in flag, in
  maintenance mode). Skips when mlflow is not installed.
- `postgres_server` / `postgres_url`: a PostgreSQL cluster from Debian's binaries
  (`initdb`, `pg_ctl`); a fresh database per test. Skips, with the reason, when the
  binaries or the driver (psycopg) are missing. initdb refuses to run as root, so as
  root the cluster runs as the `postgres` user through `runuser`.

The fixtures are re-exported by tests/integration/conftest.py.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 3) -> None:
    """End a server started in its own session, with everything it spawned.

    SIGTERM first, SIGKILL after `grace_s`: the servers here keep nothing worth a clean
    shutdown (their folders are thrown away), and mlflow's workers took 9-18 s to
    drain after SIGTERM on a busy 2-core machine."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """The URI of a running `mlflow server` (sqlite backend, artifacts proxied)."""
    if importlib.util.find_spec("mlflow") is None:
        pytest.skip("mlflow is not installed (pip install -e '.[tracking]')")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = (root / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # migrations take 20-30 s on a busy 2-core VM
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        _stop(process)
        log.close()


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:  # often a link (/usr/local/bin/initdb) to the folder with createdb too
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    return Path(versions[-1]).parent if versions else None


@dataclass
class Postgres:
    """A running cluster: `url(db)` is an optuna/SQLAlchemy URL for database `db`."""

    bin: Path
    port: int
    prefix: list[str]

    def run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.prefix, str(self.bin / tool), *args], check=True,
                       capture_output=True, text=True, timeout=60)  # fmt: skip

    def create_database(self) -> str:
        name = f"t{uuid.uuid4().hex[:12]}"
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "compress", name)
        return f"postgresql://compress@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL cluster on 127.0.0.1 (trust auth, user `compress`), stopped after."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg is not installed (pip install -e '.[postgres]')")
    prefix: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="compress-pg-"))
    if os.geteuid() == 0:  # initdb: "cannot be run as root"
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    server = Postgres(bin_dir, free_port(), prefix)
    data = root / "data"
    server.run("initdb", "-D", str(data), "-A", "trust", "-U", "compress", "-E", "UTF8",
               "--no-sync")  # fmt: skip
    options = f"-p {server.port} -k {root} -h 127.0.0.1 -c fsync=off"
    server.run("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-w", "-o", options,
               "start")  # fmt: skip
    try:
        yield server
    finally:
        server.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.create_database()
