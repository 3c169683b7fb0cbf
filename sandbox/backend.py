"""The one backend interface: create a session, exec in it, work on its files, stop it.

A backend implements engine-level calls (``ping``, ``create_session``,
``list_containers``, ``remove_container``) and a session implements ``exec``
and ``stop``. The workspace file operations are built here, once, on top of
``exec``: they run ``workspace_helper.py`` inside the sandbox, as its user, so
every backend gets the same semantics and the same kernel-enforced limits.

Backends and sessions block (the docker SDK does); they are driven from a
``SandboxSessionActor`` thread, one caller at a time per session.
"""

from __future__ import annotations

import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from callboard.engine.sandbox_api import (
    ExecResult,
    SandboxEditError,
    SandboxError,
    SandboxFileError,
    SandboxFileNotFound,
    SandboxPathError,
)
from callboard.sandbox.config import SandboxProfile

if TYPE_CHECKING:
    from callboard.sandbox.process_link import ProcessLink

LABEL_FLEET = "callboard.fleet"
LABEL_SESSION = "callboard.session"
LABEL_INSTANCE = "callboard.instance"
LABEL_TENANT = "callboard.tenant"

HELPER_SOURCE = (Path(__file__).with_name("workspace_helper.py")).read_text()
_HELPER_ARGV = ("python3", "-I", "-S", "-c", HELPER_SOURCE)
_HELPER_ERRORS: dict[str, type[SandboxError]] = {
    "not_found": SandboxFileNotFound,
    "no_match": SandboxEditError,
    "ambiguous": SandboxEditError,
    "bad_path": SandboxPathError,
}


def helper_timeout(op: str, seconds: float) -> SandboxFileError:
    return SandboxFileError(f"{op} did not finish within {seconds:g}s")


@dataclass(frozen=True)
class SessionSpec:
    """Everything needed to create one sandbox container."""

    fleet: str
    session: str  # unique per session incarnation; also the container name suffix
    instance: str  # the manager incarnation that owns it
    image: str
    profile: SandboxProfile
    network: bool
    tenant: str | None = None
    #: the named volume behind /workspace (persistent workspaces), else a tmpfs
    workspace_volume: str | None = None
    #: the directory of loop-mounted ext4 images (a new volume is one), when the engine can
    workspace_images: str | None = None

    @property
    def container_name(self) -> str:
        return f"callboard-{self.fleet}-{self.session}"

    @property
    def labels(self) -> dict[str, str]:
        labels = {LABEL_FLEET: self.fleet, LABEL_SESSION: self.session, LABEL_INSTANCE: self.instance}
        if self.tenant is not None:
            labels[LABEL_TENANT] = self.tenant
        return labels


@dataclass(frozen=True)
class ExecRequest:
    """One command, fully resolved (defaults and ceilings already applied)."""

    argv: tuple[str, ...]
    cwd: str
    timeout: float
    output_limit: int
    stdin: bytes | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the workspace
    kind: Literal["file", "dir", "link", "other"]
    size: int


@dataclass(frozen=True)
class FileData:
    data: bytes
    size: int  # of the whole file
    truncated: bool


@dataclass(frozen=True)
class ContainerRecord:
    """A container some fleet labelled as a sandbox."""

    id: str
    name: str
    fleet: str
    session: str
    instance: str
    state: str
    tenant: str | None = None


@dataclass(frozen=True)
class WorkspaceQuota:
    """Which quota new persistent workspaces get (``sandbox.workspaces.QuotaKind``) and why."""

    kind: str
    reason: str


@dataclass(frozen=True)
class Meter:
    """Tenant usage: cumulative CPU seconds of sessions' containers (by session name; a
    container not created yet or gone is absent), and with ``disk`` bytes held by each tenant's
    persistent workspaces (a tenant whose usage cannot be measured here is absent)."""

    cpu: dict[str, float]
    disk: dict[str, int] | None = None


@dataclass(frozen=True)
class EngineInfo:
    endpoint: str
    product: str
    version: str
    api_version: str


class SandboxSession(ABC):
    """One sandbox container. Not thread-safe: one caller at a time."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        #: False once the session cannot be trusted (e.g. processes survived a kill): replace it.
        self.healthy = True
        #: a persistent workspace whose size the engine does not enforce: bytes the tools allow
        self.measured_quota: int | None = None

    @property
    @abstractmethod
    def container_id(self) -> str: ...

    @abstractmethod
    def exec(self, request: ExecRequest) -> ExecResult:
        """Run a command; a timeout kills it and is reported, not raised."""

    @abstractmethod
    def stop(self) -> None:
        """Remove the container; idempotent."""

    def process_link(self) -> ProcessLink:
        """The container's process agent (managed processes), attached on first use."""
        raise SandboxError("this sandbox backend has no managed processes")

    # ------------------------------------------------------------------ workspace files

    def helper(self, op: str, request: dict[str, Any], payload: bytes = b"") -> dict[str, Any]:
        """Run one ``workspace_helper`` operation; its failures become typed errors."""
        reply = self.run_helper(op, request, payload)
        if not reply.get("ok"):
            error_type = _HELPER_ERRORS.get(str(reply.get("code")), SandboxFileError)
            raise error_type(str(reply.get("error")))
        return reply

    def run_helper(self, op: str, request: dict[str, Any], payload: bytes) -> dict[str, Any]:
        """The helper's raw reply. Here: one exec of the helper; a backend with a resident
        agent in the container answers without a new exec."""
        profile = self.spec.profile
        line = json.dumps({"op": op, **request}).encode() + b"\n"
        result = self.exec(
            ExecRequest(
                argv=_HELPER_ARGV,
                cwd="/workspace",
                timeout=profile.exec_timeout,
                output_limit=2 * profile.file_limit + (1 << 20),
                stdin=line + payload,
            )
        )
        if result.timed_out:
            raise helper_timeout(op, profile.exec_timeout)
        if result.exit_code == 127:
            raise SandboxFileError("the sandbox image has no python3, which the file tools need")
        try:
            reply: dict[str, Any] = json.loads(result.stdout)
        except ValueError:
            detail = (result.stderr or result.stdout).strip()[-500:]
            raise SandboxFileError(
                f"{op} failed in the sandbox (exit {result.exit_code}): {detail}"
            ) from None
        return reply

    def read_file(self, path: str, limit: int) -> FileData:
        reply = self.helper("read", {"path": path, "limit": limit})
        return FileData(base64.b64decode(reply["data"]), int(reply["size"]), bool(reply["truncated"]))

    def write_file(self, path: str, data: bytes) -> int:
        return int(self.helper("write", {"path": path, "limit": self.spec.profile.file_limit}, data)["size"])

    def list_files(
        self, path: str, recursive: bool = False, limit: int = 10_000
    ) -> tuple[list[FileEntry], bool]:
        reply = self.helper("list", {"path": path, "recursive": recursive, "limit": limit})
        return [FileEntry(p, k, s) for p, k, s in reply["entries"]], bool(reply["truncated"])

    def delete_file(self, path: str, recursive: bool = False) -> None:
        self.helper("delete", {"path": path, "recursive": recursive})


class SandboxBackend(ABC):
    """A container engine. Each thread that drives sessions owns its own backend."""

    @abstractmethod
    def ping(self) -> EngineInfo:
        """Engine identity; raises ``SandboxUnavailable`` when it cannot be reached."""

    @abstractmethod
    def create_session(self, spec: SessionSpec) -> SandboxSession:
        """Create and start a hardened container for ``spec``."""

    @abstractmethod
    def list_containers(self, fleet: str | None = None) -> list[ContainerRecord]:
        """Sandbox containers of ``fleet`` (every fleet when None), running or not."""

    def probe_workspaces(self, image: str, directory: str | None, fleet: str) -> WorkspaceQuota:
        """Whether persistent workspaces can be loop-mounted ext4 images (a hard quota)."""
        return WorkspaceQuota("measured", "this backend has no volumes")

    def meter(self, fleet: str, sessions: list[str], disk: bool) -> Meter:
        """CPU used so far by ``sessions``' containers, and (``disk``) the fleet's workspace
        bytes per tenant. A backend that cannot tell reports nothing."""
        return Meter({}, {} if disk else None)

    def prune_workspaces(self, fleet: str, older_than: float) -> list[str]:
        """Remove ``fleet``'s persistent workspaces older than ``older_than`` seconds that no
        container uses; their names. A backend without volumes has none."""
        return []

    @abstractmethod
    def remove_container(self, ref: str) -> bool:
        """Force-remove by id or name; False when it was already gone."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""
