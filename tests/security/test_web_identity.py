"""Web chat identity: each hole the reliability/security issue found, shown closed.

Before: any client could subscribe to any chat and read its history, send as any
``user_id`` into any chat, replay another client's ``client_msg_id`` to block its
message, and open the websocket from any page (no ``Origin`` check). Now the user is
the server-issued session's, and every one of those is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from callboard.adapters.web.config import WebAdapterConfig
from callboard.adapters.web.identity import Identity, Sessions, sign
from callboard.app import Running
from callboard.engine.events import MessageReceived, decode_event
from tests.support import SESSION_SECRET, UNLIMITED, ChatClient, chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)

SITE_SECRET = "site-secret-0123456789abcdef"


@pytest.fixture
async def fleet(tmp_path: Path) -> Running:
    async with running_fleet(fleet_config(tmp_path)) as running:
        yield running  # type: ignore[misc]


async def _senders(fleet: Running) -> list[tuple[str, str]]:
    """(sender id, text) of every stored message."""
    rows = await fleet.journal.query("SELECT payload FROM events WHERE type='message.received' ORDER BY seq")
    events = [decode_event(bytes(row[0])) for row in rows]
    return [(e.sender.id, e.text) for e in events if isinstance(e, MessageReceived)]


async def test_subscribing_to_another_users_chat_is_refused(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as victim, chat_client(fleet.base_url) as attacker:
        await victim.say("my secret")
        await victim.wait_count("ack", 1)
        answer = await attacker.subscribe(victim.chat("c1"))
        assert answer["op"] == "error" and answer["code"] == "forbidden"
        # a group the attacker did not join is closed too, even after the victim joined it
        await victim.join("team")
        answer = await attacker.subscribe("team", group=True)
        assert answer["op"] == "error" and answer["code"] == "forbidden"
        await victim.wait_count("message", 1)  # the victim got the reply...
        assert attacker.of("message") == []  # ...and the attacker saw none of it


async def test_sending_as_another_user_is_refused(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as victim, chat_client(fleet.base_url) as attacker:
        # naming the victim as user_id
        await attacker.say("I am the victim", user_id=victim.user_id)
        refused = await attacker.wait_for(lambda f: f["op"] == "error")
        assert refused["code"] == "forbidden" and "another user" in refused["reason"]
        # writing into the victim's private chat
        await attacker.op(op="send", chat_id=victim.chat("c1"), text="injected")
        refused = await attacker.wait_for(lambda f: f["op"] == "error" and f is not refused)
        assert refused["code"] == "forbidden"
        # writing into a group without joining it
        await victim.join("team")
        await attacker.say("drive-by", chat_id="team", chat_type="group")
        await attacker.wait_count("error", 3)
        # a display name is only a display name: the sender is the session's user
        await attacker.say("hello", user_name=victim.user_id)
        await attacker.wait_count("ack", 1)
    assert await _senders(fleet) == [(attacker.user_id, "hello")]


async def test_replaying_another_clients_client_msg_id_does_not_block_it(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as victim, chat_client(fleet.base_url) as attacker:
        await attacker.say("squatting", client_msg_id="their-id")
        await attacker.wait_count("ack", 1)
        await victim.subscribe("c1")
        await victim.say("mine", client_msg_id="their-id")
        answer = await victim.wait_for(lambda f: f.get("client_msg_id") == "their-id")
        assert answer["op"] == "ack"  # not "duplicate": dedup keys are per user
        assert (await victim.wait_for(lambda f: f["op"] == "message"))["text"] == "mine"
        # the same user repeating its own id is still a duplicate
        await victim.say("mine", client_msg_id="their-id")
        await victim.wait_for(lambda f: f["op"] == "duplicate")


async def _handshake(url: str, **headers: str) -> int:
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def test_a_foreign_origin_cannot_open_the_websocket_or_get_a_session(fleet: Running) -> None:
    url = f"{fleet.base_url}/web/demo/ws"
    assert await _handshake(url, Origin="http://evil.example") == 403
    assert await _handshake(url, Origin="null") == 403
    assert await _handshake(url, Origin=fleet.base_url) == 101  # the page's own origin
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fleet.base_url}/web/demo/session", headers={"Origin": "http://evil.example"}) as r,
    ):
        assert r.status == 403 and "origin" in (await r.json())["error"]


async def test_listed_origins_are_allowed(tmp_path: Path) -> None:
    web = f"{UNLIMITED}, allowed_origins: ['https://shop.example']"
    async with running_fleet(fleet_config(tmp_path, web=web)) as fleet:
        url = f"{fleet.base_url}/web/demo/ws"
        assert await _handshake(url, Origin="https://shop.example") == 101
        assert await _handshake(url, Origin="https://shop.example.evil.example") == 403


async def test_forged_expired_or_foreign_sessions_are_refused(fleet: Running) -> None:
    url = f"{fleet.base_url}/web/demo/ws"
    client = await ChatClient.connect(fleet.base_url, user="carol")  # a real session works
    assert client.user_id == "carol"
    token = client.token
    await client.close()
    assert token is not None
    body, _, signature = token.partition(".")
    claims = msgspec.json.decode(_unb64(body))
    claims["u"] = "mallory"  # rewrite the user, keep the signature
    forged = f"{_b64(msgspec.json.encode(claims))}.{signature}"
    assert await _handshake(url, Authorization=f"Bearer {forged}") == 401
    assert await _handshake(url, Cookie=f"callboard_session={forged}") == 401
    config = WebAdapterConfig(session_secret=SESSION_SECRET)  # type: ignore[arg-type]
    expired = Sessions("demo", config, bytes, wall=lambda: time.time() - 10 * config.session_ttl)
    old = expired.issue(Identity(user_id="carol", name="carol", anonymous=False))
    assert await _handshake(url, Authorization=f"Bearer {old}") == 401
    other_bot = Sessions("other", config, bytes).issue(Identity(user_id="carol", name="c", anonymous=False))
    assert await _handshake(url, Authorization=f"Bearer {other_bot}") == 401
    wrong_key = sign(b"not the secret", msgspec.json.encode({"b": "demo", "u": "carol", "e": 2e9}))
    assert await _handshake(url, Authorization=f"Bearer {wrong_key}") == 401


def _site_token(user: str, exp: float, secret: str = SITE_SECRET) -> str:
    """What the embedding site does (docs/web-protocol.md): sign {sub, name, exp}."""
    return sign(secret.encode(), msgspec.json.encode({"sub": user, "name": user.title(), "exp": exp}))


async def test_signed_token_mode_takes_only_the_sites_users(tmp_path: Path) -> None:
    web = f"{UNLIMITED}, auth: {{mode: signed_token, secret: {SITE_SECRET}}}"
    async with running_fleet(fleet_config(tmp_path, web=web)) as fleet, aiohttp.ClientSession() as http:
        session_url = f"{fleet.base_url}/web/demo/session"
        assert await _handshake(f"{fleet.base_url}/web/demo/ws") == 401  # no anonymous users here
        async with http.post(session_url, json={}) as r:
            assert r.status == 401 and "auth" in (await r.json())["error"]
        for bad in (
            _site_token("alice", time.time() - 1),  # expired
            _site_token("alice", time.time() + 60, secret="another-secret-0123456789"),
            _site_token("alice:x", time.time() + 60),  # not a user id
        ):
            async with http.post(session_url, json={"auth": bad}) as r:
                assert r.status == 401
        async with http.post(session_url, json={"auth": _site_token("alice", time.time() + 60)}) as r:
            assert r.status == 200
            issued = await r.json()
            assert issued["user_id"] == "alice" and issued["user_name"] == "Alice"
            assert "callboard_session" in r.cookies and r.cookies["callboard_session"]["httponly"]
        client = await ChatClient.connect(fleet.base_url, token=issued["token"])
        try:
            assert client.user_id == "alice"
            await client.say("hi")
            await client.wait_count("ack", 1)
        finally:
            await client.close()


async def test_shared_secret_mode_issues_sessions_to_the_backend_only(tmp_path: Path) -> None:
    web = f"{UNLIMITED}, auth: {{mode: shared_secret, secret: {SITE_SECRET}}}"
    async with running_fleet(fleet_config(tmp_path, web=web)) as fleet, aiohttp.ClientSession() as http:
        session_url = f"{fleet.base_url}/web/demo/session"
        body = {"user_id": "bob", "name": "Bob"}
        async with http.post(session_url, json=body, headers={"Authorization": "Bearer guess"}) as r:
            assert r.status == 401 and SITE_SECRET not in await r.text()
        async with http.post(session_url, json=body, headers={"Authorization": f"Bearer {SITE_SECRET}"}) as r:
            assert r.status == 200
            token = (await r.json())["token"]
        async with chat_client(fleet.base_url, token=token) as client:
            assert client.user_id == "bob"


async def test_leaving_a_group_closes_it(fleet: Running) -> None:
    async with chat_client(fleet.base_url) as client:
        await client.join("team")
        assert (await client.subscribe("team", group=True))["op"] == "subscribed"
        await client.op(op="leave", chat_id="team")
        await client.wait_count("ack", 2)
        client.frames.clear()
        answer = await client.subscribe("team", group=True)
        assert answer["op"] == "error" and answer["code"] == "forbidden"


def test_site_token_format_is_plain_hmac() -> None:
    """The documented recipe: base64url(JSON) '.' base64url(HMAC-SHA256(secret, that text))."""
    token = _site_token("alice", 2e9)
    body, _, signature = token.partition(".")
    expected = hmac.new(SITE_SECRET.encode(), body.encode(), hashlib.sha256).digest()
    assert _unb64(signature) == expected
    assert msgspec.json.decode(_unb64(body))["sub"] == "alice"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_the_session_endpoint_refuses_bad_bodies(fleet: Running) -> None:
    url = f"{fleet.base_url}/web/demo/session"
    async with aiohttp.ClientSession() as http:
        for body in (b"[1, 2]", b"{not json", b'{"name": "' + b"x" * 5000 + b'"}'):
            async with http.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400 and "JSON object" in (await r.json())["error"]
        async with http.post(url) as r:  # no body at all: an anonymous session
            assert r.status == 200 and (await r.json())["user_id"].startswith("guest-")
