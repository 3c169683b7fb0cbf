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
        await flooder.wait_count("ack", MAX_PENDING)
        (busy,) = await flooder.wait_count("error", 1)
        assert busy["code"] == "busy" and "too many events waiting" in busy["reason"]
        assert busy["retry_after_ms"] == 500
        # the connection is not read until then: one refusal per interval, not one per frame
        for refusals in (2, 3, 4):
            await clock.advance(0.5)
            await flooder.wait_count("error", refusals)
        assert {f["code"] for f in flooder.of("error")} == {"busy"}
        # bounded: only what was acknowledged was stored, and that is all that is in flight
        assert len(flooder.of("ack")) == MAX_PENDING
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(MAX_PENDING,)]
        assert in_flight.total == MAX_PENDING and fleet.stats.backlog.total == MAX_PENDING

        # another client, another chat: still served (a command runs at once, no window)
        await other.subscribe("c1")
        await other.say("/echo still here")
        assert (await other.wait_for(lambda f: f["op"] == "ack"))["client_msg_id"]
        assert (await other.wait_for(lambda f: f["op"] == "message"))["text"] == "still here"
        assert other.of("error") == []

        # the flooded chat drains (its window closes), then takes new events again
        await clock.advance(10)
        burst = await flooder.wait_for(lambda f: f["op"] == "message")
        assert burst["text"].split("\n") == [f"m{i}" for i in range(MAX_PENDING)]

        async def all_answered() -> bool:
            await clock.advance(5)  # hold-offs end, windows close: the flood drains at the chat's pace
            assert in_flight.total <= MAX_PENDING
            return len(flooder.of("ack")) + len(flooder.of("error")) == FLOOD

        await eventually(all_answered, timeout=30)
        # every frame got an answer; those acknowledged are exactly those stored and handled
        acked = len(flooder.of("ack"))
        assert acked > MAX_PENDING
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(acked + 1,)]  # + other's


async def test_the_engine_wide_ceiling_refuses_every_chat(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="10s", max_wait="10s")
    config.engine.backlog.max_events = 12
    config.engine.backlog.shed_at = 0.5
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        for chat in range(6):  # 6 chats x 3 events: no chat holds the 8 that shedding turns
            for i in range(3):  # away first, so the ceiling (12) is what refuses
                await client.say(f"{chat}:{i}", chat_id=f"c{chat}")
        await client.wait_count("ack", 12)
        (full,) = await client.wait_count("error", 1)
        assert (
            full["code"] == "busy"
            and full["reason"] == "the engine's backlog is full (12 events); retry later"
        )
        assert full["retry_after_ms"] == 5000
        assert fleet.stats.backlog.total == 12
        assert await fleet.journal.query("SELECT COUNT(*) FROM events") == [(12,)]

        async def all_answered() -> bool:
            await clock.advance(5)  # windows close, the backlog drains, the connection is read again
            return len(client.of("ack")) + len(client.of("error")) == 18

        await eventually(all_answered)
        assert fleet.stats.backlog.total <= 12
