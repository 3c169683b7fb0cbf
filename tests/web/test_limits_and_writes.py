"""Rate limits per connection and per user (on a manual clock), and coalesced writes."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from callboard.adapters.web.adapter import WebAdapter
from callboard.adapters.web.client import ws_text_header
from callboard.app import Running
from callboard.engine.clock import ManualClock
from tests.support import SESSION_SECRET, ChatClient, chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)

UNLIMITED_RATE = "{per_second: 1000000, burst: 1000000}"


def _web(connection: str, user: str) -> str:
    return f"rate_per_connection: {connection}, rate_per_user: {user}, session_secret: {SESSION_SECRET}"


async def test_a_connection_over_its_rate_gets_busy_with_retry_advice(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, web=_web("{per_second: 2, burst: 3}", UNLIMITED_RATE))
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        for i in range(5):
            await client.say(f"m{i}")
        await client.wait_count("ack", 3)
        (busy,) = await client.wait_count("error", 1)
        assert busy["code"] == "busy" and "rate limit" in busy["reason"] and busy["retry_after_ms"] == 500
        # the connection is not read until then; then the next frame finds a token again
        await clock.advance(0.5)
        await client.wait_count("ack", 4)
        assert len(client.of("error")) == 1
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(4,)]


async def test_a_user_is_limited_across_connections(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, web=_web(UNLIMITED_RATE, "{per_second: 1, burst: 4}"))
    async with running_fleet(config, clock) as fleet:
        first = await ChatClient.connect(fleet.base_url, user="ann")
        second = await ChatClient.connect(fleet.base_url, user="ann")
        stranger = await ChatClient.connect(fleet.base_url, user="bob")
        try:
            for i in range(3):
                await first.say(f"a{i}")
            await first.wait_count("ack", 3)
            for i in range(3):
                await second.say(f"b{i}")
            await second.wait_count("ack", 1)  # the user's fourth: the burst is spent
            (busy,) = await second.wait_count("error", 1)
            assert busy["code"] == "busy" and busy["retry_after_ms"] == 1000
            await clock.advance(1)  # the user has one token again: the third send goes in
            await second.wait_count("ack", 2)
            await stranger.say("mine")  # another user has a bucket of their own
            assert (await stranger.wait_for(lambda f: f["op"] in ("ack", "error")))["op"] == "ack"
        finally:
            for client in (first, second, stranger):
                await client.close()


async def test_frames_queued_in_one_turn_go_out_in_one_socket_write(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path)) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        adapter = _adapter(fleet)
        (server_side,) = adapter.outbox.subscribers[client.chat("c1")]
        writes = server_side.writes
        for _ in range(25):  # one loop turn: 25 frames
            adapter.outbox.typing(client.chat("c1"))
        await client.wait_count("typing", 25)
        assert server_side.writes == writes + 1 and server_side.frames >= 25


def _adapter(fleet: Running) -> WebAdapter:
    api = fleet.stats.runtimes["demo"].api
    assert isinstance(api, WebAdapter)
    return api


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_ws_text_frame_headers(size: int) -> None:
    """RFC 6455 5.2: FIN + text opcode, unmasked, 7/16/64-bit payload length."""
    frame = ws_text_header(size) + b"x" * size
    assert frame[0] == 0x81 and frame[1] & 0x80 == 0
    if size < 126:
        assert frame[1] == size and len(frame) == 2 + size
    elif size < 65536:
        assert frame[1] == 126 and struct.unpack("!H", frame[2:4])[0] == size and len(frame) == 4 + size
    else:
        assert frame[1] == 127 and struct.unpack("!Q", frame[2:10])[0] == size and len(frame) == 10 + size
