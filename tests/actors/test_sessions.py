"""Sessions: ordering under concurrency, failing and slow handlers, passivation, state."""

from __future__ import annotations

import asyncio
import logging
import random
from pathlib import Path
from typing import Any

import pytest

from callboard.engine import ManualClock
from callboard.handlers.context import HandlerContext
from callboard.handlers.pipeline import EchoStage, Flow
from tests.support import ChatClient, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(90)


def _statuses(fleet: Any, count: int) -> Any:
    """A poll for the done statuses once ``count`` events are all marked."""

    async def check() -> Any:
        rows = await fleet.journal.query("SELECT status FROM events ORDER BY seq")
        return rows if len(rows) == count and all(r[0] for r in rows) else None

    return check


async def test_per_session_order_with_random_handler_delays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure every task-per-event design shows: with sends taking random
    time, replies come back out of order. Here each session stays in order."""
    original = EchoStage.run

    async def slow_echo(self: EchoStage, ctx: HandlerContext) -> Flow:
        await asyncio.sleep(random.random() * 0.004)
        return await original(self, ctx)

    monkeypatch.setattr(EchoStage, "run", slow_echo)
    chats, per_chat, connections = 40, 25, 4
    async with running_fleet(fleet_config(tmp_path)) as fleet:
        clients = [await ChatClient.connect(fleet.base_url) for _ in range(connections)]
        try:
            for chat in range(chats):
                await clients[chat % connections].subscribe(f"c{chat}")
            for i in range(per_chat):
                for chat in range(chats):
                    await clients[chat % connections].say(f"{chat}:{i}", chat_id=f"c{chat}")
            for n, client in enumerate(clients):
                expected = per_chat * len(range(n, chats, connections))
                await client.wait_count("message", expected, timeout=60)
            for chat in range(chats):
                got = [
                    f["text"]
                    for f in clients[chat % connections].of("message")
                    if f["chat_id"] == clients[chat % connections].chat(f"c{chat}")
                ]
                assert got == [f"{chat}:{i}" for i in range(per_chat)]
        finally:
            for client in clients:
                await client.close()


async def test_failing_run_is_logged_counted_and_the_session_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original = EchoStage.run

    async def flaky(self: EchoStage, ctx: HandlerContext) -> Flow:
        if ctx.texts == ["fail"]:
            raise RuntimeError("handler bug")
        return await original(self, ctx)

    monkeypatch.setattr(EchoStage, "run", flaky)
    async with running_fleet(fleet_config(tmp_path)) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        with caplog.at_level(logging.ERROR, logger="callboard.session"):
            await client.say("fail")
            ack = await client.wait_for(lambda f: f["op"] == "ack")
            await client.say("after")
            assert (await client.wait_for(lambda f: f["op"] == "message"))["text"] == "after"
        counters = fleet.stats.runtimes["demo"].counters
        assert counters.failed_runs == 1
        assert any(ack["event_id"] in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
        statuses = await eventually(_statuses(fleet, 2))
        assert statuses == [("failed",), ("done",)]
        assert fleet.system.metrics.restarts.get("SessionActor", 0) == 0


async def test_crash_loop_restarts_the_session_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = EchoStage.run

    async def flaky(self: EchoStage, ctx: HandlerContext) -> Flow:
        if any(t.startswith("fail") for t in ctx.texts):
            raise RuntimeError("handler bug")
        return await original(self, ctx)

    monkeypatch.setattr(EchoStage, "run", flaky)
    config = fleet_config(tmp_path)
    config.bots[0].session.crash_loop_after = 2
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("fail 1")
        await client.say("fail 2")  # second failure in a row: the session is restarted
        await client.say("ok")  # queued during the backoff, handled by the fresh instance
        assert (await client.wait_for(lambda f: f["op"] == "message", timeout=15))["text"] == "ok"
        assert fleet.system.metrics.restarts["SessionActor"] == 1
        assert fleet.stats.runtimes["demo"].counters.failed_runs == 2


async def test_handler_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = EchoStage.run

    async def stuck(self: EchoStage, ctx: HandlerContext) -> Flow:
        if ctx.texts == ["hang"]:
            await asyncio.sleep(30)
        return await original(self, ctx)

    monkeypatch.setattr(EchoStage, "run", stuck)
    config = fleet_config(tmp_path)
    config.bots[0].session.handler_timeout = 0.2
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("hang")
        await client.say("next")
        assert (await client.wait_for(lambda f: f["op"] == "message"))["text"] == "next"
        assert fleet.stats.runtimes["demo"].counters.timed_out_runs == 1
        assert await eventually(_statuses(fleet, 2)) == [("timeout",), ("done",)]


COUNTER = """
      - event_type: message.received
        handler_type: pipeline
        handler_config: {stages: [{type: reply, text: "turn {turn}: {text}"}]}
"""


async def test_idle_sessions_passivate_and_keep_their_state(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, idle_ttl="30s", handlers=COUNTER)
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        runtime = fleet.stats.runtimes["demo"]
        for n in range(1, 4):
            await client.say(f"m{n}")
            await client.wait_count("message", n)
            await eventually(lambda n=n: runtime.counters.runs == n)
            session = fleet.system.lookup(f"/fleet/demo/sessions/private:{client.chat('c1')}")
            await eventually(lambda s=session: s is not None and not s._cell.scheduled)
            await clock.advance(31)  # idle past the TTL: the session actor stops
            await eventually(lambda: runtime.live_sessions == 0)
            assert fleet.system.lookup(f"/fleet/demo/sessions/private:{client.chat('c1')}") is None
        assert [f["text"] for f in client.of("message")] == ["turn 1: m1", "turn 2: m2", "turn 3: m3"]


async def test_a_message_racing_passivation_is_not_lost(tmp_path: Path) -> None:
    """The session is stopping (idle) when a new event arrives: the router
    holds it and hands it to a fresh session."""
    clock = ManualClock()
    config = fleet_config(tmp_path, idle_ttl="30s")
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("one")
        await client.wait_count("message", 1)
        session = fleet.system.lookup(f"/fleet/demo/sessions/private:{client.chat('c1')}")
        assert session is not None
        session._cell.request_stop("idle")  # passivation has begun
        await client.say("two")
        await client.wait_count("message", 2)
        assert [f["text"] for f in client.of("message")] == ["one", "two"]


async def test_stats_command_shows_live_counts(tmp_path: Path) -> None:
    async with running_fleet(fleet_config(tmp_path)) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("/stats")
        text: Any = (await client.wait_for(lambda f: f["op"] == "message"))["text"]
        assert "sessions (this bot): 1" in text
        assert f"actors: {fleet.system.metrics.live_actors()}" in text or "actors:" in text
