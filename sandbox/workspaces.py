"""Persistent workspaces: ``/workspace`` on a named volume per (fleet, scope key).

A profile with ``persistent_workspace: true`` mounts the volume instead of a tmpfs, so files
survive the container (idle removal, eviction, a replaced session) and callboard's restarts:
the next container of the same scope key mounts the same volume. Volumes are removed only by
``callboard sandbox prune`` or the age policy (``workspace_max_age``), never with containers.

The quota is the profile's ``workspace_size``. Where the engine's volume driver can enforce a
size (``o=size=``: XFS with project quotas) the kernel does; elsewhere (ext4, most machines)
the usage is measured after each command or write, and while it is over the quota, writes and
edits are refused (commands still run, so the agent can delete files). A single command can
overshoot by what it writes before it ends: that quota is a measured one, not a hard one.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import docker
import docker.errors

LABEL_WORKSPACE = "callboard.workspace"
LABEL_FLEET = "callboard.fleet"
LABEL_TENANT = "callboard.tenant"


def volume_name(fleet: str, scope_key: str) -> str:
    """Stable across sessions and restarts for one scope key (a digest: keys hold user ids)."""
    return f"callboard-{fleet}-ws-{hashlib.sha256(scope_key.encode()).hexdigest()[:16]}"


def ensure_volume(client: docker.DockerClient, name: str, fleet: str, tenant: str | None, size: int) -> bool:
    """Create the volume unless it exists; True when the engine enforces its size."""
    try:
        existing = client.api.inspect_volume(name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        return "size=" in str((existing.get("Options") or {}).get("o", ""))
    labels = {LABEL_WORKSPACE: "1", LABEL_FLEET: fleet}
    if tenant is not None:
        labels[LABEL_TENANT] = tenant
    try:
        client.api.create_volume(name, driver="local", driver_opts={"o": f"size={size}"}, labels=labels)
        return True
    except docker.errors.APIError as error:
        if "not supported" not in str(error).lower() and "quota" not in str(error).lower():
            raise
    client.api.create_volume(name, driver="local", labels=labels)
    return False


@dataclass(frozen=True)
class WorkspaceVolume:
    name: str
    fleet: str
    created: float


def list_volumes(client: docker.DockerClient, fleet: str | None = None) -> list[WorkspaceVolume]:
    filters = {"label": [f"{LABEL_WORKSPACE}=1", *([f"{LABEL_FLEET}={fleet}"] if fleet else [])]}
    found = client.api.volumes(filters=filters).get("Volumes") or []
    return [
        WorkspaceVolume(v["Name"], (v.get("Labels") or {}).get(LABEL_FLEET, ""), _created(v)) for v in found
    ]


def prune(
    client: docker.DockerClient, fleet: str | None, older_than: float | None, dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """Remove workspace volumes (of ``fleet``, older than ``older_than`` seconds); a volume a
    container still uses is kept. Returns (removed, kept because in use)."""
    now = time.time()
    removed: list[str] = []
    in_use: list[str] = []
    for volume in list_volumes(client, fleet):
        if older_than is not None and now - volume.created < older_than:
            continue
        if dry_run:
            removed.append(volume.name)
            continue
        try:
            client.api.remove_volume(volume.name)
        except docker.errors.NotFound:
            continue
        except docker.errors.APIError as error:
            if error.status_code == 409 or "in use" in str(error).lower():
                in_use.append(volume.name)
                continue
            raise
        removed.append(volume.name)
    return removed, in_use


def _created(volume: dict[str, Any]) -> float:
    text = str(volume.get("CreatedAt") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
