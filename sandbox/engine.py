"""Where the container engine is, and how to connect to it.

``sandbox.engine_url`` wins; unset, ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY``
and ``DOCKER_CERT_PATH``) applies through ``docker.from_env()``; failing both,
the usual local sockets of Docker and rootful Podman are tried. None of them:
sandboxes are off, and say so. Endpoints are shown with credentials removed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import docker

from callboard.sandbox.config import SandboxSettings

DEFAULT_SOCKETS = ("/var/run/docker.sock", "/run/podman/podman.sock")
_USERINFO = re.compile(r"^([a-z+]+://)[^@/]*@", re.IGNORECASE)


@dataclass(frozen=True)
class EngineEndpoint:
    """A resolved engine address; ``url`` None means ``docker.from_env()``."""

    url: str | None
    source: str  # what chose it: "sandbox.engine_url", "DOCKER_HOST" or "default socket"
    env_url: str | None = None  # DOCKER_HOST's value, for display and socket checks

    @property
    def display(self) -> str:
        return redact(self.url or self.env_url or "(docker.from_env)")

    @property
    def unix_socket(self) -> str | None:
        """The socket path of a local unix endpoint, else None (remote engine)."""
        url = self.url or self.env_url or ""
        return url[len("unix://") :] if url.startswith("unix://") else None


def redact(url: str) -> str:
    """``tcp://user:secret@host`` -> ``tcp://***@host``."""
    return _USERINFO.sub(r"\1***@", url)


def resolve_endpoint(
    settings: SandboxSettings,
    environ: Mapping[str, str] | None = None,
    default_sockets: Sequence[str] | None = None,
) -> EngineEndpoint | None:
    """The engine to use, or None when sandboxes are off (see ``off_reason``)."""
    env = os.environ if environ is None else environ
    default_sockets = DEFAULT_SOCKETS if default_sockets is None else default_sockets
    if not settings.enabled:
        return None
    if settings.engine_url:
        return EngineEndpoint(settings.engine_url, "sandbox.engine_url")
    if env.get("DOCKER_HOST"):
        return EngineEndpoint(None, "DOCKER_HOST", env["DOCKER_HOST"])
    for socket in default_sockets:
        if os.path.exists(socket):
            return EngineEndpoint(f"unix://{socket}", "default socket")
    return None


def off_reason(settings: SandboxSettings) -> str:
    if not settings.enabled:
        return "sandboxes are disabled (sandbox.enabled is false)"
    return (
        "no container engine configured: set sandbox.engine_url in the fleet file or DOCKER_HOST "
        f"(looked for {', '.join(DEFAULT_SOCKETS)})"
    )


def connect(endpoint: EngineEndpoint, settings: SandboxSettings) -> docker.DockerClient:
    """A client for ``endpoint``; with a fixed API version this makes no request."""
    version = settings.api_version
    if endpoint.url is None:
        return docker.from_env(
            version=version,
            timeout=settings.engine_timeout,  # type: ignore[arg-type]  # stubs say int; requests takes a float
            environment=dict(os.environ),
        )
    return docker.DockerClient(
        base_url=endpoint.url,
        version=version,
        timeout=settings.engine_timeout,  # type: ignore[arg-type]  # stubs say int; requests takes a float
    )
