"""An agent calls an MCP server's tools, end to end over the web chat: the fake OpenAI server
scripts the tool calls, the stdio MCP server (``callboard.testing.stdio_mcp_server``, standard
library only) runs as a managed process in the session's real container, and the official
``mcp`` client talks to it over the attached stdin/stdout. The initialised client session is
kept across runs, and reconnected after the server was killed inside the container."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from callboard.sandbox import cli
from callboard.testing import stdio_mcp_server
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.sandbox.conftest import Engine, sandbox_agent_rule
from tests.sandbox.helpers import eventually
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(180)
SERVER = Path(stdio_mcp_server.__file__).read_text()


async def test_agent_calls_a_stdio_mcp_server_running_in_the_sandbox(
    tmp_path: Path, engine: Engine, fleet: str, model: FakeOpenAI
) -> None:
    model.script(
        Reply(calls=[Call("mcp_calc_add", {"a": 2, "b": 40}), Call("mcp_calc_whoami", {})]),
        Reply(text="2 + 40 = 42"),
        Reply(calls=[Call("mcp_calc_shout", {"text": "hey", "times": 400})]),
        Reply(text="shouted"),
        Reply(calls=[Call("mcp_calc_add", {"a": 1, "b": 1})]),
        Reply(text="two"),
    )
    command = json.dumps(["python3", "-c", SERVER])
    tools = f"""
      result_limit: 200
      mcp:
        - name: calc
          command: {command}
          env: {{CALC_TOKEN: not-for-logs}}
          tools: [add, whoami, shout]"""
    handlers = sandbox_agent_rule(model.base_url, tools)
    config = fleet_config(
        tmp_path,
        handlers=handlers,
        extra=f"sandbox:\n  engine_url: {engine.url}\n  image: {engine.image}\n",
        bot_extra="sandbox: {enabled: true, exec_handlers: [agent]}",
    )
    config = config.model_copy(update={"name": fleet})
    async with running_fleet(config) as running, chat_client(running.base_url) as client:
        await client.subscribe("c1")
        await client.say("what is 2 + 40, and where do you run?")
        first = await client.wait_for(lambda f: f["op"] == "message", timeout=120)
        await client.say("shout hey")
        second = await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "shouted", timeout=60)
        containers = engine.containers(fleet)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.base_url}/api/sandbox") as response:
                status = await response.json()

            # Killed inside the container: restarted by its policy, and the next run reconnects.
            pid = status["sessions"][0]["processes"][0]["pid"]
            killer = engine.client.api.exec_create(
                containers[0].id, ["sh", "-c", f"kill -9 {pid}"], user="1000"
            )
            engine.client.api.exec_start(killer["Id"])

            async def restarted() -> bool:
                async with http.get(f"{running.base_url}/api/sandbox") as response:
                    (process,) = (await response.json())["sessions"][0]["processes"]
                return bool(process["state"] == "running" and process["restarts"] == 1)

            await eventually(restarted, what="the MCP server restarted")
            await client.say("1 + 1?")
            await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "two", timeout=60)
            async with http.get(f"{running.base_url}/api/sandbox/audit?format=jsonl") as response:
                assert response.content_type == "application/x-ndjson"
                audit = [json.loads(line) for line in (await response.text()).splitlines()]
            async with http.get(f"{running.base_url}/api/sandbox/audit?limit=many") as response:
                assert response.status == 400 and "limit" in (await response.json())["error"]
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            live = ["status", "--engine-url", engine.url, "--admin", running.base_url]
            assert await asyncio.to_thread(cli.main, live) == 0
    assert first["text"] == "2 + 40 = 42" and second

    offered = sorted(t["function"]["name"] for t in model.requests[0]["tools"])
    assert offered == ["mcp_calc_add", "mcp_calc_shout", "mcp_calc_whoami"]
    add_result, whoami_result = (m for m in model.requests[1]["messages"] if m["role"] == "tool")
    assert json.loads(add_result["content"]) == {"content": "42"}
    where = json.loads(json.loads(whoami_result["content"])["content"])
    assert where["uid"] == 1000 and where["cwd"] == "/workspace"
    assert where["hostname"] != socket.gethostname()  # it ran in the container, not on this host
    assert len(containers) == 1 and where["hostname"] == "sandbox"  # the name every sandbox gets

    # The server kept running between the two runs, and the second run reused the first's
    # initialised session (no new start, attach or initialize); after the kill, one reconnect.
    (session,) = status["sessions"]
    (server,) = session["processes"]
    assert server["process_id"] == "mcp-calc" and server["state"] == "running" and server["restarts"] == 0
    assert server["env_keys"] == ["CALC_TOKEN"] and "not-for-logs" not in json.dumps(status)
    rows = list(reversed(audit))
    assert [row["tool"] for row in rows] == [
        "process.start",
        "process.attach",
        "process.call",
        "process.call",
        "process.call",
        "process.start",
        "process.attach",
        "process.call",
    ]
    calls = [row for row in rows if row["tool"] == "process.call"]
    assert [row["target"] for row in calls] == [
        "mcp-calc: add",
        "mcp-calc: whoami",
        "mcp-calc: shout",
        "mcp-calc: add",
    ]
    assert json.loads(model.requests[5]["messages"][-1]["content"]) == {"content": "2"}
    assert calls[0]["bytes_in"] == len('{"a":2,"b":40}') and calls[2]["bytes_out"] > 1000
    assert "hey" not in json.dumps(audit).lower()  # arguments and answers are not stored
    assert all(row["bot"] == "demo" and row["handler"] == "agent" and row["status"] == "ok" for row in audit)

    text = printed.getvalue()
    assert "live: " in text and "1 of 20 sessions" in text, text
    assert "process mcp-calc: running" in text and "env: CALC_TOKEN" in text, text

    shouted = model.requests[3]["messages"][-1]["content"]
    assert shouted.startswith('{"content":"HEY HEY') and "[truncated " in shouted  # the toolbox's limit
