"""Agent conversations over the web chat against the fake OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.testing.fake_openai import FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import chat_client, fleet_config, running_fleet

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
