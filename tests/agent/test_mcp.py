"""MCP tools without a sandbox: a URL server (the ``mcp`` SDK's own server over streamable HTTP
on 127.0.0.1) works, with its deadline; a stdio server is refused (never run on the host); the
initialised session is kept across runs and closed when the bot stops; the pool opens one session
for concurrent runs and closes it when idle."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import ValidationError

from callboard.handlers.agent.config import McpServerConfig
from callboard.handlers.agent.mcp import McpPool, http_opener
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


@dataclass
class Remote:
    url: str
    #: each HTTP request the server got: (method, JSON-RPC method or "")
    requests: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
async def remote() -> AsyncIterator[Remote]:
    server = MCPServer("remote-test")

    @server.tool()
    def multiply(a: int, b: int) -> int:
        """multiply two integers"""
        return a * b

    @server.tool(name="lookup.v2")
    def lookup(word: str) -> str:
        """a tool whose MCP name is not a valid function name"""
        return word[::-1]

    @server.tool()
    async def nap(seconds: float) -> str:
        """answer after a while"""
        await asyncio.sleep(seconds)
        return "rested"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = server.streamable_http_app()
    seen = Remote(f"http://127.0.0.1:{port}/mcp")

    async def counting(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Notes each request's JSON-RPC method on its way to the SDK's app."""
        if scope["type"] != "http":  # the lifespan
            await app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        try:
            method = json.loads(body).get("method", "") if body else ""
        except (ValueError, AttributeError):
            method = ""
        seen.requests.append((scope["method"], method))
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, replay, send)

    config = uvicorn.Config(counting, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    web = uvicorn.Server(config)
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.02)
    try:
        yield seen
    finally:
        web.should_exit = True
        await asyncio.wait_for(task, 10)


@pytest.fixture
def mcp_url(remote: Remote) -> str:
    return remote.url


async def test_url_server_works_without_a_sandbox_and_stdio_is_refused(
    tmp_path: Path, model: FakeOpenAI, mcp_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    model.script(
        Reply(
            calls=[
                Call("mcp_remote_multiply", {"a": 6, "b": 7}),
                Call("mcp_remote_nap", {"seconds": 2}),
                Call("mcp_remote_lookup_v2", {"word": "stressed"}),
            ]
        ),
        Reply(text="6 x 7 = 42"),
    )
    extra = f"""stream: false
tools:
  mcp:
    - {{name: remote, url: "{mcp_url}", timeout: 500ms}}
    - {{name: local, command: [python3, -c, "print(1)"], env: {{LOCAL_SECRET: s3cr3t-value}}}}
"""
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, extra))
    with caplog.at_level(logging.WARNING):
        async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
            await client.subscribe("c1")
            await client.say("multiply, please")
            answer = await client.wait_for(lambda f: f["op"] == "message", timeout=30)
    assert answer["text"] == "6 x 7 = 42"
    offered = sorted(t["function"]["name"] for t in model.requests[0]["tools"])
    assert offered == ["mcp_remote_lookup_v2", "mcp_remote_multiply", "mcp_remote_nap"]  # no stdio server
    product, napped, looked_up = (m for m in model.requests[1]["messages"] if m["role"] == "tool")
    assert json.loads(looked_up["content"])["content"] == "desserts"
    assert json.loads(product["content"])["content"] == "42"
    assert json.loads(napped["content"]) == {"error": "MCP tool nap did not answer within 0.5s"}
    refusal = [r.getMessage() for r in caplog.records if "MCP server local unavailable" in r.getMessage()]
    assert refusal and "never run on the host" in refusal[0]
    assert "s3cr3t-value" not in caplog.text


def test_a_server_needs_exactly_one_transport() -> None:
    with pytest.raises(ValidationError, match="exactly one of command"):
        McpServerConfig(name="both", command=["x"], url="http://127.0.0.1/mcp")
    with pytest.raises(ValidationError, match="exactly one of command"):
        McpServerConfig(name="neither")


async def test_the_initialised_session_is_kept_across_runs_and_closed_when_the_bot_stops(
    tmp_path: Path, model: FakeOpenAI, remote: Remote
) -> None:
    model.script(
        Reply(calls=[Call("mcp_remote_multiply", {"a": 6, "b": 7})]),
        Reply(text="42"),
        Reply(calls=[Call("mcp_remote_multiply", {"a": 2, "b": 3})]),
        Reply(text="6"),
    )
    extra = f"""stream: false
tools:
  mcp:
    - {{name: remote, url: "{remote.url}"}}
"""
    config = fleet_config(tmp_path, handlers=agent_rule(model.base_url, extra))
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        await client.say("6 x 7?")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "42", timeout=30)
        await client.say("2 x 3?")
        await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "6", timeout=30)
        methods = [method for _, method in remote.requests]
    assert methods.count("initialize") == 1 and methods.count("tools/list") == 1
    assert methods.count("tools/call") == 2
    assert [verb for verb, _ in remote.requests].count("DELETE") == 1  # closed with the bot


async def test_the_pool_opens_one_session_for_concurrent_runs_and_closes_it_when_idle(remote: Remote) -> None:
    server = McpServerConfig(name="remote", url=remote.url)
    pool = McpPool(idle=0.2)
    key = ("url", "demo", "remote")
    opening = (pool.connect(key, server, http_opener(server)) for _ in range(3))
    first, second, third = await asyncio.gather(*opening)
    assert first is second is third and first.alive
    assert await first.call("multiply", {"a": 3, "b": 4}) == {"content": "12", "structured": {"result": 12}}
    await asyncio.sleep(1.5)  # idle past 0.2 s: closed (its DELETE sent), and left the pool
    assert not first.alive
    again = await pool.connect(key, server, http_opener(server))
    assert again is not first and again.alive
    await pool.close()
    methods = [method for _, method in remote.requests]
    assert methods.count("initialize") == 2 and [verb for verb, _ in remote.requests].count("DELETE") == 2
    assert pool._connections == {} and pool._locks == {}
