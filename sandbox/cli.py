"""``callboard sandbox``: build-image, status, sweep, prune.

The engine comes from ``--engine-url``, else the ``sandbox:`` block of
``--config FLEET.yaml``, else ``DOCKER_HOST`` and the usual sockets (as the
fleet itself resolves it). Exit status 0 means done or ready; 1 means not
ready or failed, with the reason on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from callboard.engine.sandbox_api import SandboxError
from callboard.engine.units import parse_duration
from callboard.sandbox.config import DEFAULT_IMAGE, SandboxSettings
from callboard.sandbox.docker_backend import DockerBackend
from callboard.sandbox.engine import EngineEndpoint, off_reason, resolve_endpoint
from callboard.sandbox.image import DEFAULT_PACKAGES, ImageBuildError, build_image, image_id
from callboard.sandbox.workspaces import list_volumes, prune


class CliError(Exception):
    """A failure to report on one line, without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callboard sandbox", description=__doc__.split("\n")[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--engine-url", help="Docker Engine API endpoint, e.g. unix:///run/podman/podman.sock"
    )
    common.add_argument("--config", type=Path, help="fleet YAML file whose sandbox: block to use")
    sub = parser.add_subparsers(dest="command", required=True)

    build = sub.add_parser(
        "build-image", parents=[common], help="build the sandbox image (debootstrap, no registry)"
    )
    build.add_argument("--name", help=f"image name (default: the configured image, {DEFAULT_IMAGE})")
    build.add_argument("--rebuild", action="store_true", help="build even if the image exists")
    build.add_argument("--suite", help="Debian suite (default: this machine's, from /etc/os-release)")
    build.add_argument("--mirror", help="Debian mirror URL (default: this machine's apt sources)")
    build.add_argument(
        "--package",
        action="append",
        default=[],
        help="a Debian package to add besides python3, from the same mirror (repeat it), e.g. "
        "python3-pip so skills may install from the package index",
    )

    status = sub.add_parser(
        "status",
        parents=[common],
        help="is the sandbox on, is its engine and image ready (and, live: sessions)",
    )
    status.add_argument(
        "--admin", help="a running engine's admin URL: also show its sessions, processes and recent errors"
    )
    status.add_argument("--token", help="admin token (default: $CALLBOARD_ADMIN_TOKEN)")

    sweep = sub.add_parser(
        "sweep", parents=[common], help="remove sandbox containers of a fleet that is not running"
    )
    target = sweep.add_mutually_exclusive_group()
    target.add_argument("--fleet", help="fleet name (the callboard.fleet label; default: --config's name)")
    target.add_argument("--all", action="store_true", help="every fleet's sandbox containers")
    sweep.add_argument("--dry-run", action="store_true", help="list, do not remove")

    prune_cmd = sub.add_parser(
        "prune", parents=[common], help="remove persistent workspaces (named volumes) no container uses"
    )
    owner = prune_cmd.add_mutually_exclusive_group()
    owner.add_argument("--fleet", help="fleet name (default: --config's name)")
    owner.add_argument("--all", action="store_true", help="every fleet's workspaces")
    prune_cmd.add_argument("--older-than", help="only workspaces created longer ago, e.g. 7d, 12h")
    prune_cmd.add_argument("--dry-run", action="store_true", help="list, do not remove")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings, fleet = _settings(args)
        if args.command == "status":
            code = _status(settings)
            if args.admin:
                code = max(code, _live(args.admin, args.token or os.environ.get("CALLBOARD_ADMIN_TOKEN")))
            return code
        if args.command == "build-image":
            return _build(_endpoint(settings), settings, args)
        fleet = None if args.all else args.fleet or fleet
        if fleet is None and not args.all:
            raise CliError("say which fleet: --fleet NAME, --all, or --config FLEET.yaml")
        if args.command == "prune":
            return _prune(_endpoint(settings), settings, fleet, args.older_than, args.dry_run)
        return _sweep(_endpoint(settings), settings, fleet, args.dry_run)
    except CliError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _settings(args: argparse.Namespace) -> tuple[SandboxSettings, str | None]:
    """Settings from --config (its sandbox: block) and --engine-url."""
    data: dict[str, Any] = {}
    fleet = None
    if args.config is not None:
        data, fleet = _read_config(args.config)
    if args.engine_url:
        data = {**data, "engine_url": args.engine_url}
    try:
        return SandboxSettings.model_validate(data), fleet
    except ValidationError as error:
        raise CliError(f"invalid sandbox settings: {error}") from None


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    import yaml

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CliError(f"cannot read {path}: {error}") from None
    if not isinstance(document, dict):
        raise CliError(f"{path} is not a mapping")
    block = document.get("sandbox")
    fleet = str(document.get("name", "callboard"))
    if block is None:
        return {"enabled": False}, fleet
    if not isinstance(block, dict):
        raise CliError(f"{path}: sandbox must be a mapping")
    return block, fleet


def _endpoint(settings: SandboxSettings) -> EngineEndpoint:
    endpoint = resolve_endpoint(settings)
    if endpoint is None:
        raise CliError(f"sandbox is off: {off_reason(settings)}")
    return endpoint


def _connect(endpoint: EngineEndpoint, settings: SandboxSettings) -> DockerBackend:
    try:
        backend = DockerBackend(endpoint, settings)
        backend.ping()
    except SandboxError as error:
        raise CliError(f"sandbox unavailable: {error}") from None
    return backend


def _status(settings: SandboxSettings) -> int:
    endpoint = resolve_endpoint(settings)
    if endpoint is None:
        print(f"sandbox: off - {off_reason(settings)}")
        return 1
    try:
        backend = DockerBackend(endpoint, settings)
        info = backend.ping()
    except SandboxError as error:
        print(f"sandbox: unavailable - {error}")
        return 1
    try:
        found = image_id(backend.client, settings.image)
        containers = backend.list_containers()
        volumes = list_volumes(backend.client)
    except Exception as error:
        print(f"sandbox: unavailable - {error}")
        return 1
    finally:
        backend.close()
    by_fleet = Counter(record.fleet for record in containers)
    fleets = ", ".join(f"{name}: {count}" for name, count in sorted(by_fleet.items())) or "none"
    print("sandbox: on" if found else "sandbox: on, but the image is missing")
    print(f"  engine:     {info.endpoint} ({endpoint.source})")
    print(f"              {info.product} {info.version}, API {info.api_version}")
    print(f"  image:      {settings.image} - " + (f"present ({found[:19]})" if found else "MISSING"))
    print(f"  containers: {len(containers)} labelled callboard.fleet ({fleets})")
    kinds = Counter(volume.kind for volume in volumes)
    quotas = ", ".join(f"{count} {_QUOTAS[kind]}" for kind, count in sorted(kinds.items())) or "none"
    print(f"  workspaces: {len(volumes)} persistent ({quotas})")
    if not found:
        print("run `callboard sandbox build-image` to build it")
        return 1
    return 0


_QUOTAS = {
    "loop": "with a hard quota (ext4 image, loop-mounted)",
    "driver": "with a hard quota (the volume driver's size)",
    "measured": "with a measured quota",
}


def _live(admin: str, token: str | None) -> int:
    """The running engine's view (``/api/sandbox``): sessions, managed processes, errors."""
    request = urllib.request.Request(
        f"{admin.rstrip('/')}/api/sandbox", headers={"Authorization": f"Bearer {token}"} if token else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            report = json.loads(response.read())
    except (OSError, ValueError) as error:
        print(f"live: {admin} did not answer: {error}")
        return 1
    sessions = report.get("sessions", [])
    if report.get("state") == "off":
        print(f"live: {admin} - sandboxes off: {report.get('reason')}")
        return 1
    print(
        f"live: {admin} - engine {report['state']}, {len(sessions)} of {report['max_sessions']} sessions, "
        f"idle TTL {report['idle_ttl']:g}s, {report['calls']} calls"
    )
    workspaces = report.get("workspaces")
    if workspaces:
        print(f"  workspaces: new ones get a {workspaces['kind']} quota ({workspaces['reason']})")
    for tenant, usage in sorted((report.get("tenants") or {}).items()):
        cpu = f"{usage['cpu_seconds']:g}" + (
            f" of {usage['max_cpu_seconds']:g}" if usage["max_cpu_seconds"] is not None else ""
        )
        limit = usage["max_disk"]
        if usage["disk"] is None:
            disk = "not measured" + (f" (budget {limit} bytes)" if limit is not None else "")
        else:
            disk = f"{usage['disk']}" + (f" of {limit}" if limit is not None else "") + " bytes"
        sessions_of = f"{usage['sessions']}" + (
            f" of {usage['max_sessions']}" if usage["max_sessions"] is not None else ""
        )
        print(
            f"  tenant {tenant}: {sessions_of} sessions, {cpu} CPU-seconds in {usage['cpu_window']:g}s, "
            f"disk {disk}" + (" - REFUSED" if usage["refused"] else "")
        )
    for session in sessions:
        reap = (
            "kept (busy or running processes)"
            if session["reaped_in"] is None
            else f"{session['reaped_in']:g}s"
        )
        container = session["container"] or "not created yet"
        print(f"  {session['scope']}: container {container}, idle {session['idle_for']:g}s, reaped in {reap}")
        for process in session["processes"]:
            env = ", ".join(process["env_keys"]) or "-"
            dropped = process.get("output_dropped") or 0
            lost = f", {dropped} output bytes dropped unread" if dropped else ""
            print(
                f"    process {process['process_id']}: {process['state']} (pid {process['pid']}, "
                f"{process['restarts']} restarts, exit {process['exit_code']}{lost}) env: {env}"
            )
    errors = report.get("errors", [])
    print(f"  recent errors: {len(errors)}" + (" (newest last)" if errors else ""))
    for recent in errors[-10:]:
        stamp = time.strftime("%H:%M:%S", time.localtime(recent["at"]))
        what = f"{recent['bot'] or '-'} {recent['tool']} {recent['status']}"
        print(f"    {stamp} {what}: {recent['message'][:200]}")
    return 1 if report["state"] != "up" else 0


def _build(endpoint: EngineEndpoint, settings: SandboxSettings, args: argparse.Namespace) -> int:
    name = args.name or settings.image
    backend = _connect(endpoint, settings)
    try:
        existing = image_id(backend.client, name)
        if existing and not args.rebuild:
            print(f"image {name} already exists ({existing[:19]}); use --rebuild to build it again")
            return 0
        started = time.monotonic()
        try:
            packages = (*DEFAULT_PACKAGES, *args.package)
            built = build_image(backend.client, name, suite=args.suite, mirror=args.mirror, packages=packages)
        except ImageBuildError as error:
            raise CliError(str(error)) from None
        print(f"built {name} ({built[:19]}) in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        backend.close()


def _prune(
    endpoint: EngineEndpoint, settings: SandboxSettings, fleet: str | None, older: str | None, dry_run: bool
) -> int:
    try:
        older_than = parse_duration(older) if older is not None else None
    except ValueError as error:
        raise CliError(f"--older-than: {error}") from None
    backend = _connect(endpoint, settings)
    try:
        removed, in_use = prune(backend.client, fleet, older_than, dry_run)
    except Exception as error:
        raise CliError(f"sandbox unavailable: {error}") from None
    finally:
        backend.close()
    scope = f"fleet {fleet!r}" if fleet else "all fleets"
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {len(removed)} workspace(s) of {scope}" + (f": {', '.join(removed)}" if removed else ""))
    if in_use:
        print(f"kept {len(in_use)} in use by a container: {', '.join(in_use)}")
    return 0


def _sweep(endpoint: EngineEndpoint, settings: SandboxSettings, fleet: str | None, dry_run: bool) -> int:
    backend = _connect(endpoint, settings)
    try:
        records = backend.list_containers(fleet)
        scope = f"fleet {fleet!r}" if fleet else "all fleets"
        if not records:
            print(f"no sandbox containers of {scope}")
            return 0
        names = ", ".join(sorted(record.name for record in records))
        if dry_run:
            print(f"would remove {len(records)} sandbox container(s) of {scope}: {names}")
            return 0
        removed = sum(backend.remove_container(record.id) for record in records)
        print(f"removed {removed} sandbox container(s) of {scope}: {names}")
        return 0
    except SandboxError as error:
        raise CliError(f"sandbox unavailable: {error}") from None
    finally:
        backend.close()
