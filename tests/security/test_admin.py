"""The admin API: bearer token, Host allow-list (DNS rebinding), open probes."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import aiohttp
import pytest

from callboard.actors.config_file import ConfigError, parse_fleet
from tests.support import running_fleet

pytestmark = pytest.mark.timeout(60)

TOKEN = "0123456789abcdef-admin-token"
ADMIN_ROUTES = ["/api/actors", "/api/bots", "/metrics", "/api/sandbox", "/api/sandbox/audit"]


def fleet(tmp_path: Path, admin: str) -> str:
    return (
        f"name: t\nengine:\n  journal: {tmp_path / 'j.sqlite3'}\n  admin: {{{admin}}}\n"
        "bots:\n  - id: demo\n    adapter: {type: web}\n"
    )


async def get(url: str, *, token: str | None = None, host: str | None = None) -> int:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if host is not None:
        headers["Host"] = host
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status


async def test_loopback_without_token_is_open_but_checks_host(tmp_path: Path) -> None:
    config = parse_fleet(fleet(tmp_path, "host: 127.0.0.1, port: 0"))
    async with running_fleet(config) as running:
        base = running.base_url
        for route in ADMIN_ROUTES:
            assert await get(base + route) == 200
            assert await get(base + route, host=f"localhost:{running.http.port}") == 200
            assert await get(base + route, host="attacker.example") == 403, route
            assert await get(base + route, host=f"attacker.example:{running.http.port}") == 403
        for probe in ("/healthz", "/readyz"):
            assert await get(base + probe, host="attacker.example") == 200
        assert await get(base + "/nothing-here", host="attacker.example") == 403


async def test_token_is_required_and_compared(tmp_path: Path) -> None:
    config = parse_fleet(fleet(tmp_path, f"host: 127.0.0.1, port: 0, token: {TOKEN}"))
    async with running_fleet(config) as running:
        base = running.base_url
        for route in ADMIN_ROUTES:
            assert await get(base + route) == 401
            assert await get(base + route, token=TOKEN + "x") == 401
            assert await get(base + route, token=TOKEN[:-1]) == 401
            assert await get(base + route, token=TOKEN) == 200
            assert await get(base + route, token=TOKEN, host="attacker.example") == 403
        assert await get(base + "/healthz") == 200
        assert await get(base + "/readyz") == 200
        # a bot's own routes (the web chat) are not admin routes
        assert await get(base + "/web/demo/") == 200


async def test_metrics_can_be_opened(tmp_path: Path) -> None:
    config = parse_fleet(fleet(tmp_path, f"host: 127.0.0.1, port: 0, token: {TOKEN}, metrics_open: true"))
    async with running_fleet(config) as running:
        assert await get(running.base_url + "/metrics") == 200
        assert await get(running.base_url + "/api/bots") == 401


async def test_token_generated_when_not_on_loopback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # 127.0.0.2 is loopback to the kernel but not one of the names that opens the API
    config = parse_fleet(fleet(tmp_path, "host: 127.0.0.2, port: 0"))
    caplog.set_level(logging.DEBUG)
    async with running_fleet(config) as running:
        path = tmp_path / "admin-token"
        token = path.read_text().strip()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(token) >= 32
        base = running.base_url
        assert await get(base + "/api/bots", host="127.0.0.2") == 401
        assert await get(base + "/api/bots", token=token, host="127.0.0.2") == 200
    async with running_fleet(config):  # kept across restarts
        assert path.read_text().strip() == token
    assert token not in caplog.text


async def test_a_readable_token_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "admin-token").write_text("x" * 40)
    (tmp_path / "admin-token").chmod(0o644)
    config = parse_fleet(fleet(tmp_path, "host: 127.0.0.2, port: 0"))
    with pytest.raises(SystemExit, match="chmod 600"):
        async with running_fleet(config):
            pass


def test_auth_none_only_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="auth: none is allowed only"):
        parse_fleet(fleet(tmp_path, "host: 0.0.0.0, port: 0, auth: none"))
    assert parse_fleet(fleet(tmp_path, "host: '::1', port: 0, auth: none")).engine.admin.auth == "none"


def test_short_token_refused_without_echo(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        parse_fleet(fleet(tmp_path, "host: 127.0.0.1, port: 0, token: shortsecret"))
    assert "shortsecret" not in str(error.value)


async def test_readyz_write_probe_cannot_be_used_to_force_syncs(tmp_path: Path) -> None:
    config = parse_fleet(fleet(tmp_path, "host: 127.0.0.1, port: 0"))
    async with running_fleet(config) as running:
        before = running.journal.commits
        statuses = await asyncio.gather(*(get(running.base_url + "/readyz") for _ in range(50)))
        for _ in range(20):
            statuses.append(await get(running.base_url + "/readyz"))
        assert set(statuses) == {200}
        assert running.journal.commits - before <= 3, running.journal.commits - before
