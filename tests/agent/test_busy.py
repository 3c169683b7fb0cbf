"""What a busy chat does while an agent run is in progress: queue, collect, interrupt."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.testing.fake_openai import FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import ChatClient, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


def user_turns(model: FakeOpenAI) -> list[str]:
    return [r["messages"][-1]["content"] for r in model.requests]


async def busy_chat(client: ChatClient, model: FakeOpenAI) -> None:
    """m1 starts a run the model holds; m2 and m3 arrive while it runs."""
    await client.subscribe("c1")
    await client.say("m1")
    await eventually(lambda: model.in_flight == 1)
    await client.say("m2")
    await client.say("m3")
    await client.wait_count("ack", 3)


async def test_queue_runs_each_message_after_the_active_run(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(text="first", hold=True))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, "stream: false\nbusy: queue"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await busy_chat(client, model)
        model.release()
        replies = await client.wait_count("message", 3)
    assert [r["text"] for r in replies] == ["first", "echo: m2", "echo: m3"]
    assert user_turns(model) == ["m1", "m2", "m3"]


async def test_collect_makes_what_arrived_one_next_run(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(text="first", hold=True))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, "stream: false\nbusy: collect"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await busy_chat(client, model)
        model.release()
        replies = await client.wait_count("message", 2)
        await eventually(lambda: fleet.stats.runtimes["demo"].counters.runs == 2)
    assert [r["text"] for r in replies] == ["first", "echo: m2\nm3"]
    assert user_turns(model) == ["m1", "m2\nm3"]
    history = model.requests[1]["messages"]
    assert [m["content"] for m in history[1:3]] == ["m1", "first"]  # the first run is remembered


async def test_interrupt_cancels_the_run_and_starts_over(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(text="never sent", hold=True))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, "stream: false\nbusy: interrupt"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await busy_chat(client, model)
        reply = await client.wait_for(lambda f: f["op"] == "message")
        await eventually(lambda: fleet.stats.runtimes["demo"].counters.runs >= 1)
        model.release()
        done = await fleet.journal.query("SELECT status FROM events ORDER BY seq")
    assert reply["text"] in ("echo: m1\nm2\nm3", "echo: m1\nm2")
    assert all(r["text"] != "never sent" for r in client.of("message"))
    assert {status for (status,) in done} == {"done"}


async def test_an_interrupted_streamed_answer_says_it_stopped(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(text="Thinking about it at length", chunk_size=8, chunk_delay=5.0))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, "busy: interrupt"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("m1")
        first = await client.wait_for(lambda f: f["op"] == "message")  # "Thinking", then a long pause
        await client.say("m2")
        stopped = await client.wait_for(
            lambda f: f["op"] == "edited" and f["message_id"] == first["message_id"]
        )
        answer = await client.wait_for(
            lambda f: (
                f["op"] in ("message", "edited")
                and f["message_id"] != first["message_id"]
                and f["text"] == "echo: m1\nm2"
            )
        )
    assert first["text"] == "Thinking"
    assert stopped["text"] == "Thinking … (stopped)"
    assert answer  # the new run answered in a message of its own
