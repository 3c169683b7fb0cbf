"""Persistent workspaces: ``/workspace`` on a named volume per (fleet, scope key).

A profile with ``persistent_workspace: true`` mounts the volume instead of a tmpfs, so files
survive the container (idle removal, eviction, a replaced session) and callboard's restarts:
the next container of the same scope key mounts the same volume. Volumes are removed only by
``callboard sandbox prune`` or the age policy (``workspace_max_age``), never with containers.

The quota is the profile's ``workspace_size``, of one of three kinds (``QuotaKind``):

- ``loop``: the volume is an ext4 file system in a sparse image file of that size (under the
  fleet's ``workspace_dir``), loop-mounted by the engine while a container uses it (Podman's
  ``local`` driver: ``type=ext4``, ``device=IMAGE``, ``o=loop``). The kernel answers ENOSPC at
  the quota; the loop device goes with the last container that used it (autoclear). Needs a
  local engine that may mount (rootful Podman), ``/dev/loop-control`` and ``mkfs.ext4``: the
  manager probes that once (``probe_loop``) and falls back to the next kinds;
- ``driver``: the volume driver enforces ``o=size=`` (XFS with project quotas);
- ``measured``: the usage is measured after each command or write, and while it is over the
  quota, writes and edits are refused (commands still run, so the agent can delete files). A
  single command can overshoot by what it writes before it ends.

A volume keeps the kind it was created with.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import docker
import docker.errors
import docker.types

LABEL_WORKSPACE = "callboard.workspace"
LABEL_FLEET = "callboard.fleet"
LABEL_TENANT = "callboard.tenant"
#: free bytes of a loop workspace's file system when it was made (its usage is measured from it)
LABEL_CAPACITY = "callboard.workspace.capacity"

QuotaKind = Literal["loop", "driver", "measured"]

log = logging.getLogger("callboard.sandbox")

_MOUNT_OPTIONS = "loop,nodev,nosuid,discard"
_EXT4_MAGIC = 0xEF53
_INCOMPAT_64BIT = 0x80


class WorkspaceError(RuntimeError):
    """An image could not be made (mkfs failed, the directory is not writable)."""


def volume_name(fleet: str, scope_key: str) -> str:
    """Stable across sessions and restarts for one scope key (a digest: keys hold user ids)."""
    return f"callboard-{fleet}-ws-{hashlib.sha256(scope_key.encode()).hexdigest()[:16]}"


def image_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}.img"


# ---------------------------------------------------------------------- ext4 images


def make_image(path: Path, size: int, owner: str = "1000:1000") -> int:
    """A sparse ext4 image at ``path`` where files can take ``size`` bytes (and up to about
    2 MiB or 0.2% more: ext4 lays out block groups): mkfs's metadata and the blocks ext4 keeps
    back for its own use (2%, at most 4096 blocks) come on top, so ENOSPC comes at the quota,
    not before. Returns its free bytes (the usage baseline)."""
    try:
        return _make_image(path, size, owner)
    except (OSError, subprocess.SubprocessError) as error:
        raise WorkspaceError(f"cannot make the workspace image {path}: {error}") from None


def _make_image(path: Path, size: int, owner: str) -> int:
    mkfs = shutil.which("mkfs.ext4")
    if mkfs is None:
        raise WorkspaceError("mkfs.ext4 is not installed (e2fsprogs)")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    total = _round_up(size, 1 << 16)
    try:
        for attempt in range(8):
            with scratch.open("wb") as image:
                image.truncate(total)
            argv = [mkfs, "-q", "-F", "-m", "0", "-L", "callboard-ws", "-E", f"root_owner={owner}"]
            done = subprocess.run(
                [*argv, str(scratch)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            if done.returncode != 0:
                raise WorkspaceError(f"mkfs.ext4 failed: {(done.stderr or done.stdout).strip()[-300:]}")
            _drop_lost_found(scratch)
            free, kept_back = ext4_space(scratch)
            if free - kept_back >= size:
                os.replace(scratch, path)
                return free
            # more room; ext4 may drop a short last block group, so the step grows each time
            total = _round_up(total + max(size - free + kept_back, 1 << 16) * (1 << attempt), 1 << 16)
        raise WorkspaceError(f"could not make an image with {size} bytes free")
    finally:
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()


def _drop_lost_found(image: Path) -> None:
    """A root-only ``lost+found`` would sit in every agent's listing; e2fsck remakes it if needed."""
    debugfs = shutil.which("debugfs")
    if debugfs is not None:
        subprocess.run(
            [debugfs, "-w", "-R", "rmdir lost+found", str(image)],
            capture_output=True,
            timeout=60,
            check=False,
        )


def ext4_space(image: Path) -> tuple[int, int]:
    """(free bytes, bytes the kernel keeps back for metadata: 2% of blocks, at most 4096), as
    the image's superblock records them (exact when it is not mounted)."""
    with image.open("rb") as handle:
        handle.seek(1024)
        block = handle.read(1024)
    if len(block) < 0x15C or struct.unpack_from("<H", block, 0x38)[0] != _EXT4_MAGIC:
        raise WorkspaceError(f"{image} is not an ext4 image")
    wide = bool(struct.unpack_from("<I", block, 0x60)[0] & _INCOMPAT_64BIT)

    def field(low: int, high: int) -> int:
        value = int(struct.unpack_from("<I", block, low)[0])
        return value | (int(struct.unpack_from("<I", block, high)[0]) << 32 if wide else 0)

    size = 1 << (10 + int(struct.unpack_from("<I", block, 0x18)[0]))
    return field(0x0C, 0x158) * size, min(field(0x04, 0x150) // 50, 4096) * size


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


# ---------------------------------------------------------------------- volumes


def kind_of(volume: dict[str, Any]) -> QuotaKind:
    options = volume.get("Options") or {}
    mount = str(options.get("o", ""))
    if options.get("type") == "ext4" and "loop" in mount.split(","):
        return "loop"
    return "driver" if "size=" in mount else "measured"


def ensure_volume(
    client: docker.DockerClient,
    name: str,
    fleet: str,
    tenant: str | None,
    size: int,
    images: str | None = None,
    owner: str = "1000:1000",
) -> QuotaKind:
    """Create the volume unless it exists; the kind of quota it has. With ``images`` (a
    directory: the loop probe passed) a new volume is an ext4 image there."""
    try:
        existing = client.api.inspect_volume(name)
    except docker.errors.NotFound:
        existing = None
    if existing is not None:
        kind = kind_of(existing)
        device = Path(str((existing.get("Options") or {}).get("device", "")))
        if kind == "loop" and not device.exists():  # deleted under us: the files are gone anyway
            log.warning("workspace %s: its image %s is missing; making an empty one", name, device)
            make_image(device, size, owner)
        return kind
    labels = {LABEL_WORKSPACE: "1", LABEL_FLEET: fleet}
    if tenant is not None:
        labels[LABEL_TENANT] = tenant
    if images is not None:
        path = image_path(images, name)
        capacity = make_image(path, size, owner)
        options = {"type": "ext4", "device": str(path), "o": _MOUNT_OPTIONS}
        try:
            client.api.create_volume(
                name, driver="local", driver_opts=options, labels={**labels, LABEL_CAPACITY: str(capacity)}
            )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return "loop"
    try:
        client.api.create_volume(name, driver="local", driver_opts={"o": f"size={size}"}, labels=labels)
        return "driver"
    except docker.errors.APIError as error:
        if "not supported" not in str(error).lower() and "quota" not in str(error).lower():
            raise
    client.api.create_volume(name, driver="local", labels=labels)
    return "measured"


@dataclass(frozen=True)
class WorkspaceVolume:
    name: str
    fleet: str
    created: float
    kind: QuotaKind = "measured"
    tenant: str | None = None
    #: the ext4 image of a loop workspace
    image: str | None = None
    #: where the engine mounts it (on the engine's machine)
    mountpoint: str | None = None
    capacity: int | None = None


def list_volumes(client: docker.DockerClient, fleet: str | None = None) -> list[WorkspaceVolume]:
    """Workspace volumes (of ``fleet``). The labels are checked here too: Podman 4.3 answers
    two label filters with the volumes matching either, which listed every fleet's."""
    found = client.api.volumes(filters={"label": [f"{LABEL_WORKSPACE}=1"]}).get("Volumes") or []
    volumes = [_volume(v) for v in found if (v.get("Labels") or {}).get(LABEL_WORKSPACE) == "1"]
    return [v for v in volumes if fleet is None or v.fleet == fleet]


def _volume(raw: dict[str, Any]) -> WorkspaceVolume:
    labels = raw.get("Labels") or {}
    kind = kind_of(raw)
    capacity = labels.get(LABEL_CAPACITY)
    return WorkspaceVolume(
        name=raw["Name"],
        fleet=labels.get(LABEL_FLEET, ""),
        created=_created(raw),
        kind=kind,
        tenant=labels.get(LABEL_TENANT),
        image=str((raw.get("Options") or {}).get("device")) if kind == "loop" else None,
        mountpoint=raw.get("Mountpoint"),
        capacity=int(capacity) if capacity and capacity.isdigit() else None,
    )


def prune(
    client: docker.DockerClient, fleet: str | None, older_than: float | None, dry_run: bool = False
) -> tuple[list[str], list[str]]:
    """Remove workspace volumes (of ``fleet``, older than ``older_than`` seconds) and their
    images; a volume a container still uses is kept. Returns (removed, kept because in use)."""
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
        _delete_image(volume)
        removed.append(volume.name)
    return removed, in_use


def _delete_image(volume: WorkspaceVolume) -> None:
    """The volume's image, and only a file named as ours (the path comes from the engine)."""
    if volume.image is None:
        return
    path = Path(volume.image)
    if path.name == f"{volume.name}.img":
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("workspace %s: image %s not deleted: %s", volume.name, path, error)


def usage(volume: WorkspaceVolume) -> int | None:
    """Bytes the workspace holds, measured on this machine; None when it cannot be (a remote
    engine, or no permission to its mount point)."""
    try:
        if volume.kind == "loop" and volume.image is not None and volume.capacity is not None:
            if volume.mountpoint and os.path.ismount(volume.mountpoint):
                stat = os.statvfs(volume.mountpoint)
                return max(0, volume.capacity - stat.f_bfree * stat.f_frsize)
            return max(0, volume.capacity - ext4_space(Path(volume.image))[0])
        if volume.mountpoint and os.path.isdir(volume.mountpoint):
            return _tree_bytes(volume.mountpoint)
    except (OSError, WorkspaceError):
        return None
    return None


def _tree_bytes(top: str) -> int:
    total = 0
    device = os.lstat(top).st_dev
    stack = [top]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                stat = entry.stat(follow_symlinks=False)
                total += stat.st_blocks * 512
                if entry.is_dir(follow_symlinks=False) and stat.st_dev == device:
                    stack.append(entry.path)
    return total


# ---------------------------------------------------------------------- the loop probe


def probe_loop(client: docker.DockerClient, image: str, directory: str, fleet: str) -> str | None:
    """None when a loop-mounted ext4 workspace works on this engine, else why not. One tiny
    image, volume and container, all removed again (about a second, once per manager)."""
    if shutil.which("mkfs.ext4") is None:
        return "mkfs.ext4 is not installed (e2fsprogs)"
    if not os.path.exists("/dev/loop-control"):
        return "this machine has no loop devices (/dev/loop-control)"
    name = f"callboard-{fleet}-wsprobe-{secrets.token_hex(4)}"
    path = image_path(directory, name)
    container = None
    try:
        make_image(path, 1 << 20)
        options = {"type": "ext4", "device": str(path), "o": _MOUNT_OPTIONS}
        client.api.create_volume(name, driver="local", driver_opts=options, labels={LABEL_FLEET: fleet})
        container = client.api.create_container(
            image,
            ["/bin/sh", "-c", "grep -q ' /workspace ext4 ' /proc/mounts"],
            user="65534:65534",
            labels={LABEL_FLEET: fleet},
            network_disabled=True,
            host_config=client.api.create_host_config(
                mounts=[docker.types.Mount(target="/workspace", source=name, type="volume")],
                network_mode="none",
            ),
        )["Id"]
        client.api.start(container)
        code = client.api.wait(container, timeout=60).get("StatusCode")
        if code != 0:
            return "the engine mounted the image, but not as ext4 at /workspace"
        return None
    except (docker.errors.DockerException, WorkspaceError, OSError) as error:
        return f"the engine cannot loop-mount an image: {_short(error)}"
    finally:
        if container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                client.api.remove_container(container, force=True)
        with contextlib.suppress(docker.errors.DockerException):
            client.api.remove_volume(name, force=True)
        path.unlink(missing_ok=True)


def _short(error: BaseException) -> str:
    text = getattr(error, "explanation", None) or str(error) or type(error).__name__
    return str(text)[:300]


def _created(volume: dict[str, Any]) -> float:
    text = str(volume.get("CreatedAt") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
