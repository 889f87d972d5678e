"""A throw-away PostgreSQL server for the sweep tests (``test_sweep``, ``test_sweep_secrets``).

:func:`postgres_server` starts one from Debian's ``postgresql`` binaries (``initdb``, ``pg_ctl``) on a
Unix socket in a fresh folder under ``/tmp`` and a free port, and removes it afterwards. Without a
password the superuser ``postgres`` is trusted; with one, the server asks every client for it
(``scram-sha-256``), so a connection that succeeds proves the password reached the server.
Where the binaries are missing the test is skipped, or fails when ``DYNALAY_REQUIRE_POSTGRES`` is set
(CI installs the server: ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "postgres"
DATABASE = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """A running server: its socket folder and port; ``password`` is the superuser's (``None``: trust)."""

    socket_dir: Path
    port: int
    password: str | None

    def url(self, password: str | None = None, driver: str = "postgresql+psycopg2", database: str = DATABASE) -> str:
        """A SQLAlchemy URL of the server, with ``password`` in it when given."""
        secret = f":{password}" if password is not None else ""
        return f"{driver}://{USER}{secret}@/{database}?host={self.socket_dir}&port={self.port}"


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` (on PATH, or Debian's ``/usr/lib/postgresql/<version>/bin``)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def unavailable(reason: str) -> None:
    """Skip the test, or fail it where ``DYNALAY_REQUIRE_POSTGRES`` is set (CI)."""
    if os.environ.get("DYNALAY_REQUIRE_POSTGRES"):
        pytest.fail(reason)
    pytest.skip(reason)


@contextlib.contextmanager
def postgres_server(password: str | None = None) -> Iterator[PostgresServer]:
    """Start a server (superuser ``postgres``, database ``postgres``); stop and remove it on exit."""
    bindir = postgres_bin()
    if bindir is None:
        unavailable("PostgreSQL server binaries (initdb) not found; install Debian's postgresql package")
    as_server_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="dynalay-pg-"))  # under /tmp: reachable by the server user
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root and there is no 'postgres' user to run the server as")
        shutil.chown(root, "postgres")
        as_server_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = root / "data", root / "server.log"

    def run(*args: str) -> None:
        done = subprocess.run([*as_server_user, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            pytest.fail(f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}{server_log}")

    auth = ["--auth=trust"]
    if password is not None:
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if as_server_user:
            shutil.chown(pwfile, "postgres")
        auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", USER, *auth, "-E", "UTF8")
        if password is not None:
            (root / "pwfile").unlink()
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start",
            "-o", f"-k {root} -p {port} -c listen_addresses=''")
        yield PostgresServer(root, port, password)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*as_server_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
