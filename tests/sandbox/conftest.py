"""Real containers for the sandbox tests.

The ``engine`` session fixture gives tests a Docker Engine API endpoint with
the sandbox image on it. By default it starts Podman's compatible service on
a private unix socket (installing ``podman``, ``runc`` and ``debootstrap`` with
apt when missing, with the containers.conf of DEVELOPERS.md), builds the image
unless ``podman image exists`` already, and stops the service at the end.
``CALLBOARD_SANDBOX_TEST_ENGINE=unix:///...`` uses an engine you run instead.

Only when no container can start at all are the container tests skipped, with
a loud reason. Unit tests never request ``engine``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import shutil
import subprocess
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import pytest

from callboard.engine import ActorSystem
from callboard.sandbox import cli
from callboard.sandbox.config import SandboxSettings
from callboard.sandbox.image import image_id
from callboard.sandbox.podman_service import PodmanService, PodmanUnavailable
from tests.support import API_KEY

IMAGE = "localhost/callboard-sandbox:latest"
FLEET_PREFIX = f"t{os.getpid()}"
_fleets = itertools.count(1)


def sandbox_agent_rule(base_url: str, tools: str) -> str:
    """A routing rule (YAML) with a non-streaming openai agent on the fake model at
    ``base_url``; ``tools``: its ``tools:`` value (flow YAML, or a block indented 6)."""
    return f"""
- event_type: message.received
  handler_type: agent
  handler_config:
    runner: openai
    runner_config: {{base_url: "{base_url}", api_key: "{API_KEY}", model: fake}}
    stream: false
    tools: {tools}
"""


@dataclass
class Engine:
    url: str
    image: str
    client: docker.DockerClient
    service: PodmanService | None

    def containers(self, fleet: str) -> list[Seen]:
        """One list call (no per-container inspect, which races with removals)."""
        found = self.client.api.containers(all=True, filters={"label": [f"callboard.fleet={fleet}"]})
        return [Seen(c["Id"], c.get("Labels") or {}, str(c.get("State", ""))) for c in found]

    def remove(self, container_id: str) -> None:
        with contextlib.suppress(docker.errors.NotFound):
            self.client.api.remove_container(container_id, force=True)


@dataclass(frozen=True)
class Seen:
    """A container as the engine lists it."""

    id: str
    labels: dict[str, str]
    state: str


def _skip_loudly(reason: str) -> None:
    message = f"SANDBOX CONTAINER TESTS SKIPPED - no container can start here: {reason}"
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


def _ensure_podman() -> None:
    missing = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _skip_loudly(f"{', '.join(missing)} missing and cannot be installed (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "podman", "runc", "debootstrap"],
    ):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            _skip_loudly(f"{' '.join(command)} failed: {(done.stdout + done.stderr)[-800:]}")


def _probe(client: docker.DockerClient, image: str) -> None:
    """Start one real container and run one command in it, or skip loudly."""
    try:
        container = client.containers.run(image, ["true"], detach=True, network_mode="none")
        try:
            container.wait(timeout=60)
        finally:
            container.remove(force=True)
    except Exception as error:
        _skip_loudly(f"a test container did not run: {error}")


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    external = os.environ.get("CALLBOARD_SANDBOX_TEST_ENGINE")
    service: PodmanService | None = None
    if external:
        url = external
    else:
        _ensure_podman()
        service = PodmanService(tmp_path_factory.mktemp("podman"))
        try:
            service.start()
        except PodmanUnavailable as error:
            _skip_loudly(str(error))
        url = service.url
    client = docker.DockerClient(base_url=url, version="1.41", timeout=120)
    try:
        _ensure_image(client, url)
        _probe(client, IMAGE)
        yield Engine(url, IMAGE, client, service)
    finally:
        with contextlib.suppress(Exception):
            for container in client.containers.list(all=True, filters={"label": ["callboard.fleet"]}):
                if container.labels.get("callboard.fleet", "").startswith(FLEET_PREFIX):
                    container.remove(force=True)
        client.close()
        if service is not None:
            service.stop()


def _ensure_image(client: docker.DockerClient, url: str) -> None:
    """Build the image through the CLI unless the engine has it (built once, then reused)."""
    try:
        if image_id(client, IMAGE) is not None:
            return
    except Exception as error:
        _skip_loudly(f"the engine at {url} does not answer: {error}")
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        built = cli.main(["build-image", "--name", IMAGE, "--engine-url", url])
    if built != 0 or image_id(client, IMAGE) is None:
        _skip_loudly(f"the sandbox image could not be built: {output.getvalue()[-1500:]}")


@pytest.fixture
def fleet(engine: Engine) -> Iterator[str]:
    """A fleet name of its own per test; its containers are removed afterwards."""
    name = f"{FLEET_PREFIX}-{next(_fleets)}"
    yield name
    for container in engine.containers(name):
        engine.remove(container.id)


@pytest.fixture
def settings(engine: Engine) -> Callable[..., SandboxSettings]:
    def make(**overrides: Any) -> SandboxSettings:
        return SandboxSettings(engine_url=engine.url, image=engine.image, **overrides)

    return make


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    actors = ActorSystem("sandbox-test")
    yield actors
    await actors.shutdown(timeout=30)
