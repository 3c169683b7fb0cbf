"""An agent's tool call runs code in a real sandbox container, end to end over the web chat."""

from __future__ import annotations

from pathlib import Path

import pytest

from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.sandbox.conftest import Engine, sandbox_agent_rule
from tests.support import chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(180)


async def test_agent_runs_python_in_the_sessions_container(
    tmp_path: Path, engine: Engine, fleet: str, model: FakeOpenAI
) -> None:
    code = "import platform; print(sum(range(10)), platform.system())"
    model.script(Reply(calls=[Call("exec", {"argv": ["python3", "-c", code]})]), Reply(text="the sum is 45"))
    handlers = sandbox_agent_rule(model.base_url, "{sandbox: [exec]}")
    config = fleet_config(
        tmp_path,
        handlers=handlers,
        extra=f"sandbox:\n  engine_url: {engine.url}\n  image: {engine.image}\n",
        bot_extra="sandbox: {enabled: true, tools: [exec], exec_handlers: [agent]}",
    )
    config = config.model_copy(update={"name": fleet})
    async with running_fleet(config) as running, chat_client(running.base_url) as client:
        await client.subscribe("c1")
        await client.say("what is the sum of 0..9?")
        answer = await client.wait_for(lambda f: f["op"] == "message", timeout=120)
        assert engine.containers(fleet), "the session's container exists while the fleet runs"
    assert answer["text"] == "the sum is 45"
    offered = [t["function"]["name"] for t in model.requests[0]["tools"]]
    assert offered == ["exec"]
    result = model.requests[1]["messages"][-1]
    assert result["role"] == "tool"
    assert '"stdout":"45 Linux\\n"' in result["content"] and '"exit_code":0' in result["content"]
