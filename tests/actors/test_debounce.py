"""Debounce through the whole engine: real websockets, real journal, a manual clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.actors.messages import Due
from callboard.engine import ManualClock
from callboard.engine.journal import Journal
from tests.support import chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)

REACTION_TOO = """
      - event_type: message.received
        handler_type: pipeline
        handler_config: {stages: [{type: command}, {type: echo}]}
      - event_type: message.reaction
        handler_type: pipeline
        handler_config: {stages: [{type: reply, text: "reaction from {user}"}]}
"""


def replies(client) -> list[str]:  # type: ignore[no-untyped-def]
    return [f["text"] for f in client.of("message")]


async def test_a_burst_is_one_run(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="1s"), clock) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        for text in ("a", "b", "c"):
            await client.say(text)
        await client.wait_count("ack", 3)
        await clock.advance(0.9)
        assert replies(client) == []
        await clock.advance(0.2)
        await client.wait_count("message", 1)
        assert replies(client) == ["a\nb\nc"]
        await eventually(lambda: fleet.stats.runtimes["demo"].counters.runs == 1)
        assert fleet.stats.runtimes["demo"].counters.handled_events == 3


async def test_each_message_resets_the_window(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="1s"), clock) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("a")
        await client.wait_count("ack", 1)
        await clock.advance(0.8)
        await client.say("b")
        await client.wait_count("ack", 2)
        await clock.advance(0.9)  # 1.7 s after "a", 0.9 s after "b": still open
        assert replies(client) == []
        await clock.advance(0.2)
        await client.wait_count("message", 1)
        assert replies(client) == ["a\nb"]


async def test_sessions_debounce_independently(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="1s"), clock) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.subscribe("c2")
        await client.say("first", chat_id="c1")
        await client.wait_count("ack", 1)
        await clock.advance(0.6)
        await client.say("second", chat_id="c2")
        await client.wait_count("ack", 2)
        await clock.advance(0.5)
        await client.wait_count("message", 1)
        assert [(f["chat_id"], f["text"]) for f in client.of("message")] == [(client.chat("c1"), "first")]
        await clock.advance(0.6)
        await client.wait_count("message", 2)
        assert [(f["chat_id"], f["text"]) for f in client.of("message")][1] == (client.chat("c2"), "second")


async def test_max_wait_caps_a_never_ending_burst(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="1s", max_wait="3s")
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        for i in range(18):  # one message every 0.5 s for 9 s: never a quiet second
            await client.say(str(i))
            await client.wait_count("ack", i + 1)
            await clock.advance(0.5)
        await client.wait_count("message", 3)
        bursts = [r.split("\n") for r in replies(client)]
        assert [len(b) for b in bursts] == [6, 6, 6]  # flushed at 3 s, 6 s and 9 s
        assert [x for b in bursts for x in b] == [str(i) for i in range(18)]


async def test_non_message_event_flushes_first(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="10s", handlers=REACTION_TOO)
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("a")
        await client.say("b")
        await client.op(op="react", chat_id="c1", user_name="Ann", message_id="m1", reaction="+1")
        await client.wait_count("message", 2)
        assert replies(client) == ["a\nb", "reaction from Ann"]


async def test_command_flushes_the_burst_then_runs_alone(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="10s"), clock) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("a")
        await client.say("/echo hi")
        await client.wait_count("message", 2)
        assert replies(client) == ["a", "hi"]


async def test_group_chats_debounce_per_sender(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="1s"), clock) as fleet,
        chat_client(fleet.base_url) as ann,
        chat_client(fleet.base_url) as bob,
    ):
        await ann.join("g1")
        await bob.join("g1")
        await ann.subscribe("g1", group=True)
        await ann.say("a1", chat_id="g1", chat_type="group")
        await bob.say("b1", chat_id="g1", chat_type="group")
        await ann.say("a2", chat_id="g1", chat_type="group")
        await ann.wait_count("ack", 3)  # its join and two sends
        await bob.wait_count("ack", 2)
        await clock.advance(1.1)
        await ann.wait_count("message", 2)
        assert sorted(replies(ann)) == ["a1\na2", "b1"]


async def test_stale_due_is_a_no_op(tmp_path: Path) -> None:
    clock = ManualClock()
    async with (
        running_fleet(fleet_config(tmp_path, window="5s"), clock) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("a")
        await client.wait_count("ack", 1)
        session = await eventually(
            lambda: fleet.system.lookup(f"/fleet/demo/sessions/private:{client.chat('c1')}")
        )
        await fleet.system.quiesce()
        window = session._cell.actor.windows["w"]
        session.tell(Due("w", window.generation + 1))  # a generation that does not exist
        session.tell(Due("w", window.generation - 1))  # an older one
        await fleet.system.quiesce()
        assert replies(client) == [] and "w" in session._cell.actor.windows
        session.tell(Due("w", window.generation))  # the real one closes the burst
        await client.wait_count("message", 1)
        session.tell(Due("w", window.generation))  # arriving again after the flush: ignored
        await fleet.system.quiesce()
        assert replies(client) == ["a"]
        assert fleet.system.metrics.failures.get("SessionActor", 0) == 0


async def test_shutdown_flushes_open_windows(tmp_path: Path) -> None:
    clock = ManualClock()
    config = fleet_config(tmp_path, window="60s", max_wait="60s")
    async with running_fleet(config, clock) as fleet, chat_client(fleet.base_url) as client:
        chat = client.chat("c1")
        await client.say("pending-1")
        await client.say("pending-2")
        await client.wait_count("ack", 2)
    # the fleet has stopped: the open burst was handled, not dropped
    journal = Journal(config.engine.journal.path)
    await journal.open()
    try:
        outbox = await journal.read_outbox("demo", chat)
        assert [payload["text"] for _, payload in outbox] == ["pending-1\npending-2"]
        assert await journal.query("SELECT COUNT(*) FROM events WHERE done_at IS NULL") == [(0,)]
    finally:
        await journal.close()
