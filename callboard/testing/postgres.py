"""A throwaway PostgreSQL server for tests and benchmarks: Debian's binaries
(installed with apt-get when missing and this runs as root), ``initdb`` into a
temporary directory as the unprivileged ``postgres`` user, listening on
127.0.0.1 only on a free port, trust authentication, removed at ``stop``."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed and cannot be (the message says why)."""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``, installing Debian's package if needed."""
    found = _bin_dir()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable("postgresql missing and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(command)} failed: {(done.stdout + done.stderr)[-800:]}")
    found = _bin_dir()
    if found is None:
        raise PostgresUnavailable("apt-get installed postgresql but no initdb was found")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self) -> None:
        self.bin = ensure_installed()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="callboard-pg-"))
        self.data = self.dir / "data"
        self._databases = 0

    def _as_user(self, *command: str) -> subprocess.CompletedProcess[str]:
        prefix = [] if os.geteuid() != 0 else ["runuser", "-u", USER, "--"]
        return subprocess.run(
            [*prefix, *command], capture_output=True, text=True, timeout=120, check=False, cwd=self.dir
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            raise PostgresUnavailable(f"{what} failed: {(done.stdout + done.stderr)[-800:]}")

    def start(self) -> None:
        if os.geteuid() == 0:
            account = pwd.getpwnam(USER)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._check(
            self._as_user(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "callboard",
                "--auth=trust",
                "-E",
                "UTF8",
            ),
            "initdb",
        )
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir}"
        options += " -c max_connections=200"
        self._check(
            self._as_user(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ),
            "pg_ctl start",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://callboard@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "j") -> str:
        """A new empty database; its URL."""
        self._databases += 1
        name = f"{prefix}{self._databases}_{os.getpid()}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
