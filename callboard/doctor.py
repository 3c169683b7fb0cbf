"""``callboard doctor [FILE]``: what is wrong with this machine and this fleet file, and how to
fix it, before an operator finds out from a failing start.

Each check prints one line, ``ok``, ``warn`` or ``FAIL``, with what to do. Nothing secret is
printed: tokens are checked by the fleet file's own validators (shape, length), whose errors
never echo values. The exit status is 1 when any check failed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import ConfigError, load_fleet

Level = Literal["ok", "warn", "FAIL"]
#: file systems on which SQLite's locking and fsync are not to be trusted
NETWORK_FILESYSTEMS = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "davfs"})
#: below this much free space next to the journal, warn
LOW_SPACE = 1 << 30
#: the year this release was made: a wall clock before it is wrong
RELEASE_YEAR = 2026


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    detail: str

    def __str__(self) -> str:
        return f"{self.level:<4}  {self.check}: {self.detail}"


def check_python() -> Iterator[Finding]:
    version = ".".join(str(part) for part in sys.version_info[:3])
    yield Finding("ok", "python", f"{version} at {sys.executable}")
    for package in ("callboard", "pydantic", "aiohttp", "msgspec", "orjson", "uvloop"):
        try:
            yield Finding("ok", f"package {package}", importlib.metadata.version(package))
        except importlib.metadata.PackageNotFoundError:
            level: Level = "warn" if package == "uvloop" else "FAIL"
            yield Finding(level, f"package {package}", "not installed: pip install callboard")


def check_fleet(path: str) -> tuple[FleetConfig | None, list[Finding]]:
    try:
        config = load_fleet(path)
    except ConfigError as error:
        return None, [Finding("FAIL", "fleet file", str(problem)) for problem in error.problems]
    bots = ", ".join(f"{bot.id} ({bot.adapter.type})" for bot in config.bots) or "no bots"
    return config, [Finding("ok", "fleet file", f"{path}: {bots}")]


def _filesystem(path: Path) -> str:
    """The mount's type for ``path`` (longest mount point that contains it)."""
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1]
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


def check_journal(config: FleetConfig) -> Iterator[Finding]:
    path = Path(config.engine.journal.path)
    directory = path.resolve().parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        yield Finding(
            "FAIL", "journal", f"{existing} is not a directory; set engine.journal to a writable path"
        )
        return
    if not os.access(existing, os.W_OK | os.X_OK):
        yield Finding("FAIL", "journal", f"{existing} is not writable by this user; fix its owner or mode")
        return
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        yield Finding("FAIL", "journal", f"{path} exists but is not readable and writable by this user")
        return
    kind = _filesystem(existing)
    if kind in NETWORK_FILESYSTEMS:
        yield Finding(
            "FAIL",
            "journal",
            f"{existing} is on {kind}: SQLite needs a local disk (put it on one, or use PostgreSQL)",
        )
    else:
        yield Finding("ok", "journal", f"{path} ({kind} file system)")
    free = shutil.disk_usage(existing).free
    if free < LOW_SPACE:
        yield Finding(
            "warn", "disk space", f"{free >> 20} MiB free next to the journal; new events stop when it fills"
        )
    else:
        yield Finding("ok", "disk space", f"{free >> 30} GiB free next to the journal")


def check_port(config: FleetConfig) -> Iterator[Finding]:
    admin = config.engine.admin
    family = socket.AF_INET6 if ":" in admin.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((admin.host, admin.port))
        except OSError as error:
            yield Finding(
                "FAIL",
                "port",
                f"{admin.host}:{admin.port} cannot be bound ({error.strerror}): another process "
                "(a running engine?) holds it; stop it or set engine.admin.port",
            )
            return
    yield Finding("ok", "port", f"{admin.host}:{admin.port} is free")
    if admin.auth == "none":
        yield Finding("warn", "admin", "auth: none: anyone on this machine can read the admin API")


def check_sandbox(config: FleetConfig) -> Iterator[Finding]:
    settings = config.sandbox
    wanted = [bot.id for bot in config.bots if bot.enabled and bot.sandbox.enabled]
    if settings is None or not settings.enabled or not wanted:
        yield Finding("ok", "sandbox", "not used by this fleet")
        return
    from callboard.sandbox.config import SandboxSettings
    from callboard.sandbox.engine import connect, off_reason, resolve_endpoint
    from callboard.sandbox.image import image_id

    assert isinstance(settings, SandboxSettings)
    endpoint = resolve_endpoint(settings)
    if endpoint is None:
        yield Finding(
            "warn", "sandbox", f"{off_reason(settings)}; /run and sandbox tools will answer that they are off"
        )
        return
    try:
        client = connect(endpoint, settings)
        version = client.version()
        image = image_id(client, settings.image)
        client.close()
    except Exception as error:
        yield Finding(
            "warn",
            "sandbox",
            f"container engine {endpoint.display} does not answer ({type(error).__name__}); "
            "start it (see docs/sandbox.md)",
        )
        return
    yield Finding("ok", "sandbox engine", f"{endpoint.display}: {version.get('Version', '?')}")
    if image is None:
        yield Finding(
            "FAIL", "sandbox image", f"{settings.image} is missing: run `callboard sandbox build-image`"
        )
    else:
        yield Finding("ok", "sandbox image", settings.image)


def _public_urls(config: FleetConfig) -> Iterator[tuple[str, str]]:
    for bot in config.bots:
        url = getattr(bot.adapter, "webhook_url", None)
        if bot.enabled and isinstance(url, str) and url:
            yield bot.id, url


def check_webhooks(config: FleetConfig, fetch: Callable[[str], int] | None = None) -> Iterator[Finding]:
    fetch = fetch or _status_of
    for bot_id, url in _public_urls(config):
        try:
            status = fetch(url)
        except OSError as error:
            reason = getattr(error, "reason", error)
            yield Finding(
                "warn",
                f"webhook {bot_id}",
                f"{url} is not reachable from here ({reason}); the platform must be able to reach it",
            )
            continue
        yield Finding("ok", f"webhook {bot_id}", f"{url} answers (HTTP {status})")


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)  # it answered: a route that wants POST is reachable


def check_clock(config: FleetConfig | None) -> Iterator[Finding]:
    now = time.time()
    if time.gmtime(now).tm_year < RELEASE_YEAR:
        yield Finding(
            "FAIL", "clock", "the system clock is in the past; fix NTP (timers, tokens, signatures)"
        )
        return
    if config is not None:
        journal = Path(config.engine.journal.path)
        if journal.exists() and journal.stat().st_mtime > now + 60:
            yield Finding(
                "warn", "clock", "the journal was written in the future: the clock went back; check NTP"
            )
            return
    yield Finding("ok", "clock", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)))


def diagnose(path: str | None) -> list[Finding]:
    findings = list(check_python())
    config = None
    if path is not None:
        config, found = check_fleet(path)
        findings += found
    if config is not None:
        findings += check_journal(config)
        findings += check_port(config)
        findings += check_sandbox(config)
        findings += check_webhooks(config)
    findings += check_clock(config)
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="callboard doctor", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="a fleet file to check as well")
    args = parser.parse_args(argv)
    findings = diagnose(args.file)
    for finding in findings:
        print(finding)
    failed = sum(1 for f in findings if f.level == "FAIL")
    warned = sum(1 for f in findings if f.level == "warn")
    print(f"\n{failed} failed, {warned} warnings, {len(findings) - failed - warned} ok")
    return 1 if failed else 0
