"""Backpressure end to end: one client flooding one chat is turned away with ``busy``
(nothing beyond the bound is stored or acknowledged), the backlog stays bounded, and
another client is still served. Before the fix the same flood got every frame
acknowledged and grew the backlog without limit (171,830 events, RSS 594 MB).

A manual clock holds the flooded chat's debounce window open, so its events stay in
flight for as long as the test wants: the bound is what refuses the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.engine.clock import ManualClock
from tests.support import chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)

FLOOD = 300
MAX_PENDING = 20


async def test_a_flooded_chat_gets_busy_while_the_backlog_stays_bounded_and_others_are_served(
    tmp_path: Path,
) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="10s", max_wait="10s")
    config.bots[0].session.max_pending = MAX_PENDING
    async with (
        running_fleet(config, clock) as fleet,
        chat_client(fleet.base_url) as flooder,
        chat_client(fleet.base_url) as other,
    ):
        in_flight = fleet.stats.runtimes["demo"].in_flight
        await flooder.subscribe("c1")
        for i in range(FLOOD):  # pipelined: no waiting for acks
            await flooder.say(f"m{i}")
        answers = await flooder.wait_count("ack", MAX_PENDING)
        await eventually(lambda: len(flooder.of("ack")) + len(flooder.of("error")) == FLOOD)
        busy = flooder.of("error")
        assert len(answers) == MAX_PENDING and len(busy) == FLOOD - MAX_PENDING
        assert {f["code"] for f in busy} == {"busy"}
        assert all(f["retry_after_ms"] > 0 and "too many events waiting" in f["reason"] for f in busy)
        # bounded: only what was acknowledged was stored, and that is all that is in flight
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(MAX_PENDING,)]
        assert in_flight.total == MAX_PENDING and fleet.stats.backlog.total == MAX_PENDING

        # another client, another chat: still served (a command runs at once, no window)
        await other.subscribe("c1")
        await other.say("/echo still here")
        assert (await other.wait_for(lambda f: f["op"] == "ack"))["client_msg_id"]
        assert (await other.wait_for(lambda f: f["op"] == "message"))["text"] == "still here"
        assert other.of("error") == []

        # the flooded chat drains, and then takes new events again
        await clock.advance(11)
        burst = await flooder.wait_for(lambda f: f["op"] == "message")
        assert burst["text"].split("\n") == [f"m{i}" for i in range(MAX_PENDING)]
        await eventually(lambda: in_flight.total == 0 and fleet.stats.backlog.total == 0)
        await flooder.say("after the flood", client_msg_id="retry-1")
        assert (await flooder.wait_for(lambda f: f.get("client_msg_id") == "retry-1"))["op"] == "ack"


async def test_the_engine_wide_ceiling_refuses_every_chat(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="10s", max_wait="10s")
    config.engine.backlog.max_events = 12
    config.engine.backlog.shed_at = 0.5
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        for chat in range(6):  # 6 chats x 3 events: 6 shed (past 6 in flight, chats holding 8+ are
            for i in range(3):  # refused first, but none holds that many), then the ceiling at 12
                await client.say(f"{chat}:{i}", chat_id=f"c{chat}")
        await eventually(lambda: len(client.of("ack")) + len(client.of("error")) == 18)
        assert len(client.of("ack")) == 12
        reasons = {f["reason"] for f in client.of("error")}
        assert reasons == {"the engine's backlog is full (12 events); retry later"}
        assert fleet.stats.backlog.total == 12
