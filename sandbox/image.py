"""Build the sandbox image without any registry.

``debootstrap`` makes a Debian minbase root filesystem with ``python3`` from the
machine's own apt sources (the mirror is read from ``/etc/apt`` at run time,
never written into the repository), trims caches and docs, adds the
``sandbox`` user (uid 1000), and imports the tree through the Engine API, so
the same command works against Docker or Podman. Needs root and
``debootstrap``; takes about 40 s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import docker
import docker.errors

DEFAULT_PACKAGES = ("python3",)
#: what Debian allows in a package name (and nothing that could end debootstrap's --include list)
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SANDBOX_UID = 1000
_TRIM = ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man", "usr/share/locale")
_CHANGES = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV HOME=/workspace",
    f"USER {SANDBOX_UID}:{SANDBOX_UID}",
    "WORKDIR /workspace",
    'CMD ["/bin/sh"]',
    "LABEL callboard.sandbox=1",
]


class ImageBuildError(RuntimeError):
    """The image could not be built; the message says what to fix."""


def os_codename(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        text = os_release.read_text()
    except OSError as error:
        raise ImageBuildError(f"cannot read {os_release}: {error}; pass --suite") from None
    match = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.MULTILINE)
    if match is None:
        raise ImageBuildError(f"no VERSION_CODENAME in {os_release}; pass --suite")
    return match.group(1)


def apt_mirror(suite: str, apt_dir: Path = Path("/etc/apt")) -> str:
    """The first configured apt URI that serves ``suite`` (deb822 ``.sources`` or ``sources.list``)."""
    candidates: list[tuple[str, list[str]]] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields = dict(
                (key.strip().lower(), value.strip())
                for key, _, value in (line.partition(":") for line in stanza.splitlines())
                if value and not key.startswith("#")
            )
            if "deb" in fields.get("types", "").split() and "uris" in fields:
                candidates.append((fields["uris"].split()[0], fields.get("suites", "").split()))
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                parts = re.sub(r"\[[^\]]*\]", "", line).split()
                if len(parts) >= 3 and parts[0] == "deb":
                    candidates.append((parts[1], [parts[2]]))
    for uri, suites in candidates:
        if suite in suites:
            return uri
    raise ImageBuildError(f"no apt source for suite {suite!r} in {apt_dir}; pass --mirror")


def image_id(client: docker.DockerClient, name: str) -> str | None:
    try:
        return str(client.images.get(name).id)
    except docker.errors.ImageNotFound:
        return None


def build_image(
    client: docker.DockerClient,
    name: str,
    *,
    suite: str | None = None,
    mirror: str | None = None,
    packages: Iterable[str] = DEFAULT_PACKAGES,
    progress: Callable[[str], None] = print,
) -> str:
    """Build and tag ``name``; returns the new image id."""
    packages = list(packages)
    bad = [package for package in packages if not _PACKAGE.match(package)]
    if bad:
        raise ImageBuildError(f"not a Debian package name: {', '.join(map(repr, bad))}")
    if os.geteuid() != 0:
        raise ImageBuildError("building the image needs root (debootstrap creates device nodes and owners)")
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise ImageBuildError("debootstrap is not installed: apt-get install debootstrap")
    suite = suite or os_codename()
    mirror = mirror or apt_mirror(suite)
    repository, tag = _split_name(name)
    workdir = Path(tempfile.mkdtemp(prefix="callboard-rootfs-", dir="/var/tmp"))
    rootfs = workdir / "rootfs"
    try:
        progress(f"debootstrap {suite} (minbase + {', '.join(packages)}) from the configured apt mirror ...")
        command = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            suite,
            str(rootfs),
            mirror,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageBuildError(
                f"debootstrap failed ({done.returncode}): {(done.stdout + done.stderr)[-1500:]}"
            )
        _prepare(rootfs)
        progress(f"importing into the engine as {name} ...")
        new_id = _import(client, rootfs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    old_id = image_id(client, name)
    client.api.tag(new_id, repository, tag, force=True)
    if old_id and old_id != new_id:
        try:
            client.api.remove_image(old_id)
        except docker.errors.APIError as error:
            progress(f"(the previous image {old_id[:19]} was kept: {error.explanation})")
    return new_id


def _split_name(name: str) -> tuple[str, str]:
    repository, _, tag = name.rpartition(":")
    if not repository or "/" in tag:
        return name, "latest"
    return repository, tag


def _prepare(rootfs: Path) -> None:
    for relative in _TRIM:
        directory = rootfs / relative
        if directory.is_dir():
            for child in directory.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    passwd, group = rootfs / "etc/passwd", rootfs / "etc/group"
    if f":{SANDBOX_UID}:" not in passwd.read_text():
        with passwd.open("a") as handle:
            handle.write(f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:/workspace:/bin/sh\n")
    if f":{SANDBOX_UID}:" not in group.read_text():
        with group.open("a") as handle:
            handle.write(f"sandbox:x:{SANDBOX_UID}:\n")
    workspace = rootfs / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chmod(workspace, 0o1777)  # Podman copies the image directory's mode onto the tmpfs


def _import(client: docker.DockerClient, rootfs: Path) -> str:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert tar.stdout is not None
    try:
        reply = client.api.import_image_from_stream(tar.stdout, changes=_CHANGES)
    finally:
        tar.stdout.close()
        error = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
        if tar.wait() != 0:
            raise ImageBuildError(f"tar failed: {error[-500:]}")
    for line in str(reply).splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "error" in item:
            raise ImageBuildError(f"the engine refused the import: {item['error']}")
        for value in (item.get("id"), item.get("status")):
            if isinstance(value, str) and value.startswith("sha256:"):
                return value
    raise ImageBuildError(f"the engine did not report the imported image id: {str(reply)[:300]}")
