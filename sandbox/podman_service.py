"""A private Podman service speaking the Docker Engine API on a unix socket.

For tests and benchmarks on machines without a Docker daemon. The recipe that
works on these machines: runtime ``runc``, cgroup manager ``cgroupfs``, the
``file`` events logger, and ``nofile``/``nproc`` ulimits no higher than the
host's hard limits, in a private ``containers.conf`` passed through
``CONTAINERS_CONF`` (the system one is left alone); then
``podman system service --time=0 unix://SOCKET``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path

import docker
import docker.errors
import requests


class PodmanUnavailable(RuntimeError):
    """Podman is missing or its service did not come up."""


def containers_conf() -> str:
    nofile = _limit(resource.RLIMIT_NOFILE)
    nproc = _limit(resource.RLIMIT_NPROC)
    return (
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "\n"
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
    )


def _limit(which: int, wanted: int = 1024) -> int:
    hard = resource.getrlimit(which)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


class PodmanService:
    """``podman system service`` on ``directory/podman.sock``; start, use ``url``, stop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "podman.sock"
        self.conf = directory / "containers.conf"
        self.log = directory / "service.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for podman commands that should use this configuration."""
        return {**os.environ, "CONTAINERS_CONF": str(self.conf)}

    def start(self, timeout: float = 60.0) -> None:
        podman = shutil.which("podman")
        if podman is None:
            raise PodmanUnavailable("podman is not installed (apt-get install podman runc)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(containers_conf())
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [podman, "system", "service", "--time=0", self.url],
                env=self.env,
                cwd=self.directory,  # conmon drops files (an "oom" marker, say) in its working directory
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise PodmanUnavailable(f"podman system service exited: {self._tail()}")
            if self.socket.exists() and _answers(self.url):
                return
            time.sleep(0.1)
        self.stop()
        raise PodmanUnavailable(f"podman system service did not answer within {timeout:g}s: {self._tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"


def _answers(url: str) -> bool:
    try:
        client = docker.DockerClient(base_url=url, version="1.41", timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError):
        return False
