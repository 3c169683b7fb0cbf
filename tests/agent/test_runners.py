"""The dify and n8n runners against local fakes, end to end over the web chat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from callboard.testing.fake_openai import FakeDify
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def dify() -> AsyncIterator[FakeDify]:
    server = await FakeDify(api_key="app-secret-key").start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.parametrize("stream", [True, False])
async def test_dify_keeps_its_conversation_per_session(tmp_path: Path, dify: FakeDify, stream: bool) -> None:
    handlers = f"""
- event_type: message.received
  handler_type: agent
  handler_config:
    runner: dify
    runner_config: {{base_url: "{dify.base_url}", api_key: app-secret-key, inputs: {{tone: brief}}}}
    stream: {str(stream).lower()}
    stream_interval: 20ms
"""
    async with (
        running_fleet(fleet_config(tmp_path, handlers=handlers)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("one")
        await client.wait_for(
            lambda f: f["op"] in ("message", "edited") and f["text"] == "dify: one (turn 1)"
        )
        await client.say("two")
        await client.wait_for(
            lambda f: f["op"] in ("message", "edited") and f["text"] == "dify: two (turn 2)"
        )
    first, second = dify.requests
    assert "conversation_id" not in first and second["conversation_id"] == "conv-1"
    assert first["inputs"] == {"tone": "brief"} and first["response_mode"] == (
        "streaming" if stream else "blocking"
    )


@pytest.fixture
async def n8n() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-N8N-Key") != "n8n-secret":
            return web.json_response({"message": "unauthorized"}, status=403)
        body = orjson.loads(await request.read())
        seen.append(body)
        return web.json_response([{"output": f"n8n answered {body['chatInput']}"}])

    app = web.Application()
    app.router.add_post("/webhook/agent", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/webhook/agent", seen
    finally:
        await runner.cleanup()


async def test_n8n_workflow_answers(tmp_path: Path, n8n: tuple[str, list[dict[str, Any]]]) -> None:
    url, seen = n8n
    handlers = f"""
- event_type: message.received
  handler_type: agent
  handler_config:
    runner: n8n
    runner_config: {{url: "{url}", auth_header: X-N8N-Key, auth_value: n8n-secret}}
    prompt: "You help {{user_name}}."
"""
    async with (
        running_fleet(fleet_config(tmp_path, handlers=handlers)) as fleet,
        chat_client(fleet.base_url) as client,
    ):
        await client.subscribe("c1")
        await client.say("ping")
        answer = await client.wait_for(lambda f: f["op"] in ("message", "edited") and "n8n" in f["text"])
    assert answer["text"] == "n8n answered ping"
    assert seen[0]["chatInput"] == "ping" and seen[0]["system"].startswith("You help ")
    assert seen[0]["sessionId"]
