"""Agent conversations over the web chat against the fake OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callboard.testing.fake_openai import FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import API_KEY, chat_client, eventually, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


async def test_answer_streams_into_one_edited_message(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(text="The quick brown fox jumps over the lazy dog.", chunk_size=3, chunk_delay=0.02))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("tell me something")
        await client.wait_for(lambda f: f["op"] == "edited" and f["text"].endswith("lazy dog."))
        messages = client.of("message")
        edits = client.of("edited")
        assert len(messages) == 1
        assert len(edits) >= 2  # streamed: several edits of the one message
        assert all(e["message_id"] == messages[0]["message_id"] for e in edits)
        assert len(messages[0]["text"]) < len(edits[-1]["text"])
    system = model.requests[0]["messages"][0]
    assert system == {"role": "system", "content": "You are demo in a private chat."}
    assert model.requests[0]["stream"] is True


async def test_memory_survives_passivation_and_reset_clears_it(tmp_path: Path, model: FakeOpenAI) -> None:
    config = fleet_config(tmp_path, idle_ttl="200ms", handlers=agent_rule(model.base_url, "stream: false"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("my name is Ann")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "echo: my name is Ann")
        await eventually(lambda: fleet.stats.sessions() == 0, timeout=5)  # passivated
        await client.say("what is my name?")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "echo: what is my name?")
        sent = model.requests[1]["messages"]
        assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
        assert sent[1]["content"] == "my name is Ann" and sent[2]["content"] == "echo: my name is Ann"
        await client.say("/reset")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "Memory cleared.")
        await client.say("hello again")
        await client.wait_count("message", 4)
    assert [m["role"] for m in model.requests[-1]["messages"]] == ["system", "user"]
    assert model.requests[0]["stream"] is False


async def test_memory_is_bounded_by_turns(tmp_path: Path, model: FakeOpenAI) -> None:
    config = fleet_config(
        tmp_path, handlers=agent_rule(model.base_url, "stream: false\nmemory: {max_turns: 2}")
    )
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        for i in range(4):
            await client.say(f"m{i}")
            await client.wait_count("message", i + 1)
    sent = model.requests[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["m1", "m2", "m3"]


async def test_transient_errors_are_retried_then_a_failure_message(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(
        Reply(status=429, retry_after=0.05),
        Reply(status=503),
        Reply(text="finally"),
        *[Reply(status=500)] * 50,
    )
    extra = 'stream: false\ndeadline: 1500ms\nfailure_message: "The model is unavailable."'
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, extra))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("first")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "finally")
        await client.say("second")
        failure = await client.wait_for(lambda f: f["op"] == "message" and f["text"] != "finally")
        assert failure["text"] == "The model is unavailable."
        counters = fleet.stats.runtimes["demo"].counters
        await eventually(lambda: counters.failed_runs == 1)
        assert counters.usage["agent_retries"] >= 3
        assert counters.usage["agent_failures"] == 1
        listed = await _get(f"{fleet.base_url}/api/bots/demo/failed")
        async with aiohttp.ClientSession() as session, session.get(f"{fleet.base_url}/metrics") as response:
            metrics = await response.text()
        bots = await _get(f"{fleet.base_url}/api/bots")
    assert 'callboard_bot_handler_usage_total{bot="demo",name="agent_failures"} 1.0' in metrics
    assert bots[0]["counters"]["usage"]["agent_runs"] == 2
    assert API_KEY not in str(client.frames)
    assert len(listed) == 1 and "HTTP 500" in listed[0]["error"] and API_KEY not in listed[0]["error"]


async def test_non_message_event_gets_an_answer_in_its_chat(tmp_path: Path, model: FakeOpenAI) -> None:
    rule = agent_rule(
        model.base_url,
        'stream: false\nevent_prompt: "Welcome {user_name} to {group_name}: {event_summary}"',
        event_type="group.member_joined",
    )
    config = fleet_config(tmp_path, handlers=rule)
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.op(op="join", chat_id="g1", user_name="Zoe", group_name="Dev")
        await client.subscribe("g1", group=True)
        welcome = await client.wait_for(lambda f: f["op"] == "message")
    assert welcome["chat_id"] == "g1"
    assert welcome["text"] == "echo: Welcome Zoe to Dev: Zoe joined the group Dev"


async def _get(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_rejected_key_echoed_by_the_service_is_masked(tmp_path: Path, model: FakeOpenAI) -> None:
    model.script(Reply(status=401, error=f"Incorrect API key provided: {API_KEY}"))
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, "stream: false"))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("hi")
        failure = await client.wait_for(lambda f: f["op"] == "message")
        (listed,) = await eventually(lambda: _get(f"{fleet.base_url}/api/bots/demo/failed"))
    assert failure["text"].startswith("Sorry")  # the configured failure message, no detail
    assert "HTTP 401" in listed["error"] and "Incorrect API key provided: ***" in listed["error"]
    assert API_KEY not in listed["error"]
    assert len(model.requests) == 1  # 401 is not retried
