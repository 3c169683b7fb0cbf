"""deploy/Containerfile builds with Podman (from a base image made locally, since no registry is
reachable here) and the engine it holds starts and answers /healthz with the admin API locked.
Slow (a debootstrap, a wheel build and an image build): CI runs it with the slow marker."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from callboard.bench.harness import free_port
from callboard.sandbox.image import ImageBuildError, build_image, image_id
from callboard.sandbox.podman_service import PodmanService, PodmanUnavailable

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
ROOT = Path(__file__).resolve().parents[2]
BASE = "localhost/callboard-python-base:latest"
IMAGE = "localhost/callboard-engine:test"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[docker.DockerClient]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (the sandbox tests install it)")
    service = PodmanService(tmp_path_factory.mktemp("podman"))
    try:
        service.start()
    except PodmanUnavailable as error:
        pytest.skip(f"podman service did not start: {error}")
    engine = docker.DockerClient(base_url=service.url, version="1.41", timeout=600)
    try:
        yield engine
    finally:
        engine.close()
        service.stop()


def _context(tmp: Path) -> Path:
    """deploy/ plus the wheels of callboard and every dependency."""
    context = tmp / "context"
    shutil.copytree(ROOT / "deploy", context, ignore=shutil.ignore_patterns("dist"))
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--wheel-dir",
            str(context / "dist"),
            f"{ROOT}[slack,lark]",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return context


def test_the_image_builds_and_serves(client: docker.DockerClient, tmp_path: Path) -> None:
    if image_id(client, BASE) is None:
        try:
            build_image(client, BASE, packages=("python3", "python3-pip", "passwd"), progress=lambda _: None)
        except ImageBuildError as error:
            pytest.skip(f"no base image could be made here: {error}")
    context = _context(tmp_path)
    client.images.build(
        path=str(context), dockerfile="Containerfile", tag=IMAGE, buildargs={"BASE": BASE}, rm=True
    )
    port = free_port()
    container = client.containers.run(IMAGE, detach=True, ports={"8765/tcp": ("127.0.0.1", port)})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{base}/healthz", timeout=3) as response,
            ):
                health = response.status
                break
            time.sleep(0.5)
        assert health == 200, container.logs()[-3000:]
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/api/bots", timeout=5)
        assert refused.value.code == 401
        token = container.exec_run(["cat", "/var/lib/callboard/admin-token"]).output.decode().strip()
        request = urllib.request.Request(f"{base}/api/bots", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert b'"demo"' in response.read()
        logs = container.logs().decode()
        assert token not in logs
        assert '"level"' in logs  # the image's fleet logs JSON lines
        container.stop(timeout=30)
        assert container.wait(timeout=60)["StatusCode"] == 0  # a graceful SIGTERM stop
    finally:
        container.remove(force=True)
