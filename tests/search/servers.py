"""Real servers for the parallel tests: PostgreSQL (Debian's packages) and `mlflow server`, on loopback.

    with postgres_server() as pg, mlflow_server(pg.url("mlflow"), folder) as tracking:
        ...  # pg.url("optuna") is an Optuna storage URL, tracking an MLflow tracking URI

PostgreSQL refuses to run as root: as root, its data folder belongs to the `postgres` user the
Debian package creates and the server runs as that user. Where there is no PostgreSQL,
`missing()` says why, so the fixture can skip with that reason (or fail, in CI).
"""

from __future__ import annotations

import contextlib
import glob
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
from dataclasses import dataclass
from pathlib import Path

REQUIRE = "RYS_SEARCH_REQUIRE_SERVERS"  # set (in CI): a missing server fails the tests instead of skipping them


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def missing() -> str | None:
    """Why the servers cannot be started here, or None."""
    if postgres_bin() is None:
        return "no PostgreSQL server (Debian: apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "no psycopg (pip install 'psycopg[binary]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Postgres:
    port: int
    user: str = "rys"

    def url(self, database: str, driver: str = "") -> str:
        return f"postgresql{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')


@contextlib.contextmanager
def postgres_server(timeout: float = 60):
    import psycopg

    bindir = postgres_bin()
    user = {}
    folder = Path(tempfile.mkdtemp(prefix="rys-pg-"))  # not under pytest's tmp: postgres must reach it
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(folder, account.pw_uid, account.pw_gid)
        user = {"user": account.pw_uid, "group": account.pw_gid}
    data = folder / "data"
    proc = log = None
    try:
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "rys", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, cwd=folder, **user)
        port = free_port()
        log = open(folder / "server.log", "wb")
        proc = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=127.0.0.1", "-c", f"port={port}",
             "-c", "unix_socket_directories=", "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, cwd=folder, **user)
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(host="127.0.0.1", port=port, user="rys", dbname="postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not start: {(folder / 'server.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield Postgres(port)
    finally:
        if log is not None:
            log.close()
        if proc is not None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(backend: str, folder: Path, timeout: float = 180):
    """`mlflow server` on a SQL backend, one worker process, artifacts served from folder."""
    port = free_port()
    log = open(folder / "mlflow-server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(folder / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # its own group: uvicorn's children stop with it
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
