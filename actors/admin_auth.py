"""Who may use the admin API: a bearer token and a Host allow-list.

The token guards everything an operator sees (actors and their chat ids, bots,
metrics unless opened); ``/healthz`` and ``/readyz`` stay open for probes. The
Host check defeats DNS rebinding: a page on ``attacker.example`` that resolves
to 127.0.0.1 reaches the engine with ``Host: attacker.example`` and is
refused. Both are built once here and applied by the HTTP server to every
engine-owned path (the dashboard's and the run routes' too) except the ones
declared open with ``HttpServer.allow_open``.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from aiohttp import web

from callboard.actors.config import LOOPBACK_HOSTS, AdminConfig

log = logging.getLogger("callboard.admin")

TOKEN_FILE = "admin-token"
_WILDCARD = frozenset({"0.0.0.0", "::", ""})


def token_path(journal_path: str) -> Path:
    """Where a generated admin token is kept: next to the journal."""
    return Path(journal_path).resolve().parent / TOKEN_FILE


def resolve_token(config: AdminConfig, journal_path: str) -> tuple[str | None, Path | None]:
    """The token the admin API requires (None: open), and the file it was read from
    or generated into (None when it came from the config). A generated token is
    written once with mode 0600 and read back at every later start."""
    if not config.needs_token:
        return None, None
    if config.token is not None:
        return config.token.get_secret_value(), None
    path = token_path(journal_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path), path
    except OSError as exc:
        raise SystemExit(
            f"{path}: cannot store a generated admin token ({exc.strerror}); "
            "set engine.admin.token or make the journal's directory writable"
        ) from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(token + "\n")
    log.warning("admin token generated and stored in %s (mode 0600)", path)
    return token, path


def _read_token(path: Path) -> str:
    if path.stat().st_mode & 0o077:
        raise SystemExit(f"{path}: the admin token file must not be readable by others (chmod 600)")
    try:
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        raise SystemExit(f"{path}: cannot read the admin token file; delete it to regenerate") from None
    if len(token) < 16:
        raise SystemExit(f"{path}: the admin token file is empty or too short; delete it to regenerate")
    return token


class AdminGuard:
    """Checks the Host header and the bearer token of admin requests."""

    def __init__(self, config: AdminConfig, token: str | None) -> None:
        self._token = token.encode() if token is not None else None
        self.metrics_open = config.metrics_open
        hosts = {h.lower() for h in config.allowed_hosts}
        self._any_host = config.host in _WILDCARD and not hosts
        self._hosts = hosts | LOOPBACK_HOSTS | {config.host.lower()}

    @property
    def token_required(self) -> bool:
        return self._token is not None

    def host_allowed(self, request: web.Request) -> bool:
        if self._any_host:
            return True
        return _host_name(request.headers.get("Host", "")) in self._hosts

    def authorized(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "surrogatepass"), self._token)

    def check(self, request: web.Request) -> web.StreamResponse | None:
        """The refusal for a request that may not use the admin API, else None
        (``HttpServer.guard``: applied to every engine path but the open ones)."""
        if not self.host_allowed(request):
            log.warning("admin request from %s refused: Host not allowed", request.remote)
            return web.json_response(
                {"error": "this Host is not allowed (engine.admin.allowed_hosts)"}, status=403
            )
        if not self.authorized(request):
            return web.json_response(
                {"error": "admin token required: send 'Authorization: Bearer TOKEN'"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="callboard admin"'},
            )
        return None


def _host_name(header: str) -> str:
    """The name in a Host header, without the port ('[::1]:80' -> '::1')."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header
