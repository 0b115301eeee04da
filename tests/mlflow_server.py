"""A real `mlflow server` backed by a real PostgreSQL, started and stopped by the test harness.

    >>> with PostgresServer.start() as pg, MlflowServer.start(pg.sqlalchemy_uri("mlflow"), artifacts) as srv:
    ...     Registry(srv.url, "fraud").register(...)

PostgreSQL: Debian's package (/usr/lib/postgresql/<N>/bin: initdb, pg_ctl), or $RATCHET_PG_BIN,
or initdb/pg_ctl on PATH. A fresh cluster is initdb'ed into a temporary folder (trust
authentication, superuser `ratchet`), listens on 127.0.0.1 at a free port with its unix
socket in that folder, and is stopped (`pg_ctl stop -m fast`) and deleted at teardown.
PostgreSQL refuses to run as root: as root, initdb and the postmaster run as the `postgres`
user (Debian's package creates it; $RATCHET_PG_USER names another), which owns the folder.

MLflow: `python -m mlflow server --backend-store-uri postgresql+psycopg://... --default-artifact-root
<folder> --host 127.0.0.1 --port P --workers 1` in its own process group (the server starts
uvicorn as a child), MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (no job runner next to it), ready
when GET /health answers OK; SIGTERM to the group at teardown (SIGKILL after 20 s).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PG_TOOLS = ("initdb", "pg_ctl", "postgres", "createdb")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_pg_bin() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres and createdb, or None when none is installed."""
    candidates: list[Path] = []
    if os.environ.get("RATCHET_PG_BIN"):
        candidates.append(Path(os.environ["RATCHET_PG_BIN"]))
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():  # newest major version first
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if all((c / t).is_file() and os.access(c / t, os.X_OK) for t in PG_TOOLS):
            return c
    return None


def _pg_user() -> pwd.struct_passwd | None:
    """The user the cluster runs as: None (ourselves) unless we are root, who may not run it."""
    if os.geteuid() != 0:
        return None
    name = os.environ.get("RATCHET_PG_USER", "postgres")
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"running as root, and PostgreSQL refuses to run as root; no user {name!r} to run it as "
                           "(Debian's postgresql package creates `postgres`; set RATCHET_PG_USER to another)") from None


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


@dataclass
class PostgresServer:
    bin: Path
    folder: Path
    port: int
    user: pwd.struct_passwd | None
    superuser: str = "ratchet"
    databases: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, bin_dir: Path | None = None) -> PostgresServer:
        bin_dir = bin_dir or find_pg_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
        user = _pg_user()
        folder = Path(tempfile.mkdtemp(prefix="ratchet-pg-"))  # not pytest's tmp_path: root-only (0700)
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        server = cls(bin_dir, folder, free_port(), user)
        try:
            server._run("initdb", "-D", str(folder / "data"), "-U", server.superuser, "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync")
            opts = f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
            server._run("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "postgres.log"), "-w", "-t", "60",
                        "-o", opts, "start")
        except BaseException:
            server.stop()
            raise
        return server

    def _run(self, tool: str, *args: str) -> None:
        cmd = [str(self.bin / tool), *args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}{r.stderr}\n"
                               f"postgres.log:\n{_log_tail(self.folder / 'postgres.log')}")

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name`; its SQLAlchemy URI (psycopg 3 over TCP, as users write it)."""
        self._run("createdb", "-h", str(self.folder), "-p", str(self.port), "-U", self.superuser, name)
        self.databases.append(name)
        return self.sqlalchemy_uri(name)

    def sqlalchemy_uri(self, database: str) -> str:
        return f"postgresql+psycopg://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str):  # -> psycopg.Connection
        """A psycopg connection, to look at what MLflow wrote from outside it."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname=database,
                               autocommit=True)

    def stop(self) -> None:
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pid = int((data / "postmaster.pid").read_text().split()[0])  # the postmaster we started
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class MlflowServer:
    url: str
    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, backend_store_uri: str, artifact_root: Path, log: Path, timeout: float = 240.0) -> MlflowServer:
        port = free_port()
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        artifact_root.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--default-artifact-root", str(artifact_root), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    cwd=artifact_root.parent)
        server = cls(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + timeout  # a fresh database: MLflow creates and migrates its tables first
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}) before answering:\n{_log_tail(log)}")
            try:
                r = httpx.get(f"{server.url}/health", timeout=2)
                if r.status_code == 200 and r.text.strip() == "OK":
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"mlflow server did not answer /health within {timeout:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: the group of the server and its uvicorn child
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait(10)
        try:  # a child that outlived the server
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def __enter__(self) -> MlflowServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
