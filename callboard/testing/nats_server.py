"""A throwaway NATS server with JetStream for tests and benchmarks: Debian's
``nats-server`` (installed with apt-get when missing and this runs as root),
on 127.0.0.1 only, a free port, its store in a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class NatsUnavailable(RuntimeError):
    """nats-server is not installed and cannot be (the message says why)."""


def ensure_installed() -> str:
    found = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None
    )
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise NatsUnavailable("nats-server missing and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "nats-server"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise NatsUnavailable(f"{' '.join(command)} failed: {(done.stdout + done.stderr)[-800:]}")
    found = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not os.path.exists(found):
        raise NatsUnavailable("apt-get installed nats-server but it was not found")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NatsServer:
    def __init__(self) -> None:
        self.binary = ensure_installed()
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="callboard-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir / "js")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "log", "wb"),  # noqa: SIM115 - the server writes to it until stop
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise NatsUnavailable(f"nats-server did not start: {(self.dir / 'log').read_text()[-800:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
