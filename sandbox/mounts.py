"""Host mount checks: an allow-list of roots; never ``/``, system paths or the engine socket.

Checked twice: when the fleet file is loaded (so a bad mount is a config
error naming the field) and again just before a container is created, on the
paths as they resolve *then*, so a symlink swapped in between cannot widen a
mount. The engine resolves the path string once more when it mounts, so the
checked path is also pinned: walked component by component without following
any symlink, its device and inode recorded, and walked again once the
container has started; a path that became a symlink or another file in the
meantime gets the container removed. Paths resolve on the machine running
callboard; with a remote engine host mounts are refused outright (see
``DockerBackend``).
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable, Mapping

#: Never mounted, nor any directory holding one of them.
SYSTEM_PATHS = (
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/boot",
    "/root",
    "/run",
    "/var/run",
    "/var/lib/docker",
    "/var/lib/containers",
)
#: Engine sockets checked even when not the configured endpoint.
KNOWN_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")
#: Mount targets live below one of these, inside the container.
TARGET_PARENTS = ("/mnt", "/workspace")


class MountRefused(ValueError):
    """A host mount that the allow-list or the fixed rules refuse."""


def within(path: str, root: str) -> bool:
    """True when ``path`` is ``root`` or lies below it (both normalised, absolute)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def engine_sockets(engine_url: str | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every engine socket a mount must not expose: the configured one and the usual ones."""
    env = os.environ if environ is None else environ
    sockets = list(KNOWN_SOCKETS)
    for url in (engine_url, env.get("DOCKER_HOST")):
        if url and url.startswith("unix://"):
            sockets.append(url[len("unix://") :])
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        sockets.append(posixpath.join(runtime_dir, "podman", "podman.sock"))
    return sockets


def check_root(root: str) -> str:
    """An allowed mount root, resolved; refuses ``/`` and system paths."""
    if not root or not root.startswith("/"):
        raise MountRefused(f"mount root {root!r} must be an absolute path")
    real = os.path.realpath(root)
    if real == "/":
        raise MountRefused("'/' can never be a mount root")
    _refuse_system(real, root)
    return real


def check_source(source: str, allowed_roots: Iterable[str], sockets: Iterable[str]) -> str:
    """The resolved host path of a mount source, or ``MountRefused`` saying why."""
    if not source or not source.startswith("/"):
        raise MountRefused(f"mount source {source!r} must be an absolute host path")
    real = os.path.realpath(source)
    if real == "/":
        raise MountRefused(f"mount source {source!r} resolves to '/', which is never mounted")
    if not os.path.exists(real):
        raise MountRefused(f"mount source {source!r} does not exist")
    for socket in sockets:
        socket_real = os.path.realpath(socket)
        if within(socket_real, real):
            raise MountRefused(f"mount source {source!r} would expose the container engine socket {socket}")
    _refuse_system(real, source)
    roots = [os.path.realpath(root) for root in allowed_roots]
    if not roots:
        raise MountRefused(
            f"mount source {source!r} refused: no host mounts are allowed "
            "(sandbox.allowed_mount_roots is empty)"
        )
    if not any(within(real, root) for root in roots):
        raise MountRefused(
            f"mount source {source!r} (resolved to {real}) is not under an allowed root: {', '.join(roots)}"
        )
    return real


def pin(real: str) -> tuple[int, int]:
    """(device, inode) of the resolved path ``real``, reached without following any
    symlink (``openat`` with ``O_NOFOLLOW`` per component): a component that is now a
    symlink means the path was swapped after it was checked."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY)
    try:
        for part in [p for p in real.split("/") if p]:
            try:
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as error:
                raise MountRefused(f"mount source {real!r} cannot be pinned: {error.strerror}") from None
            os.close(fd)
            fd = child
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise MountRefused(f"mount source {real!r} has a symlink in it now; it was swapped")
        info = os.fstat(fd)
        return info.st_dev, info.st_ino
    finally:
        os.close(fd)


def check_target(target: str) -> str:
    """A mount point inside the container: strictly below ``/mnt`` or ``/workspace``."""
    if not target or not target.startswith("/") or "\x00" in target:
        raise MountRefused(f"mount target {target!r} must be an absolute path")
    normal = posixpath.normpath(target)
    if not any(within(normal, parent) and normal != parent for parent in TARGET_PARENTS):
        raise MountRefused(f"mount target {target!r} must lie below /mnt or /workspace")
    return normal


def _refuse_system(real: str, given: str) -> None:
    for system in SYSTEM_PATHS:
        system_real = os.path.realpath(system)
        if within(real, system_real) or within(system_real, real):
            raise MountRefused(f"{given!r} (resolved to {real}) is or contains the system path {system}")
