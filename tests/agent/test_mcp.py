"""MCP tools without a sandbox: a URL server (the ``mcp`` SDK's own server over streamable HTTP
on 127.0.0.1) works, with its deadline; a stdio server is refused (never run on the host)."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import ValidationError

from callboard.handlers.agent.config import McpServerConfig
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def mcp_url() -> AsyncIterator[str]:
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
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(web.serve())
    while not web.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        web.should_exit = True
        await asyncio.wait_for(task, 10)


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
