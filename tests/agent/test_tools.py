"""Tool calling: platform tools through the outbound path, sandbox tools through
the SandboxTools contract, the round cap, and replay from the run record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from callboard.engine.clock import LoopClock
from callboard.engine.entities import MessageChain, User
from callboard.engine.events import MessageReceived, SessionKey
from callboard.engine.platform import MessageResult
from callboard.engine.sandbox_api import ExecArgs, ExecResult, ToolName
from callboard.handlers.agent.config import AgentConfig
from callboard.handlers.agent.handler import AgentHandler
from callboard.handlers.context import HandlerContext
from callboard.testing.fake_openai import Call, FakeOpenAI, Reply
from tests.agent.conftest import agent_rule
from tests.support import API_KEY, chat_client, fleet_config, running_fleet

pytestmark = pytest.mark.timeout(60)


async def test_platform_tool_reacts_through_the_outbound_path(tmp_path: Path, model: FakeOpenAI) -> None:
    config = fleet_config(
        tmp_path, handlers=agent_rule(model.base_url, "stream: false\ntools: {platform: [add_reaction]}")
    )
    async with running_fleet(config) as fleet, chat_client(fleet.base_url) as client:
        await client.subscribe("c1")
        cid = await client.say("react to this")
        ack = await client.wait_for(lambda f: f["op"] == "ack" and f["client_msg_id"] == cid)
        await client.wait_for(lambda f: f["op"] == "message")  # its answer: the model is idle again
        model.script(
            Reply(calls=[Call("add_reaction", {"message_id": ack["message_id"], "reaction": "👍"})]),
            Reply(text="done"),
        )
        await client.say("please react to my last message")
        reaction = await client.wait_for(lambda f: f["op"] == "reaction")
        answer = await client.wait_for(lambda f: f["op"] == "message" and f["text"] == "done")
    assert reaction["message_id"] == ack["message_id"] and reaction["reaction"] == "👍"
    tools = model.requests[-2]["tools"]
    assert [t["function"]["name"] for t in tools] == ["add_reaction"]
    tool_result = model.requests[-1]["messages"][-1]
    assert tool_result["role"] == "tool" and tool_result["content"] == '{"ok":true}'
    assert answer


class FakeSandbox:
    """SandboxTools for a unit test: counts exec calls."""

    def __init__(self) -> None:
        self.calls: list[ExecArgs] = []

    @property
    def tools(self) -> frozenset[ToolName]:
        return frozenset({"exec"})

    async def exec(self, args: ExecArgs) -> ExecResult:
        self.calls.append(args)
        return ExecResult(
            exit_code=0,
            stdout="42\n",
            stderr="",
            truncated=False,
            timed_out=False,
            duration=0.01,
            stdout_bytes=3,
            stderr_bytes=0,
        )


class FakeAPI:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def supports(self, api: str) -> bool:
        return False

    @property
    def max_text_length(self) -> int | None:
        return None

    async def send(self, chat_type: str, chat_id: str, message: MessageChain, **_: Any) -> MessageResult:
        self.sent.append(message.text)
        return MessageResult(message_id=f"b{len(self.sent)}")

    @property
    def calls_made(self) -> int:
        return len(self.sent)

    def resume_after(self, calls: int) -> None:
        return None

    async def call(self, api: str, **params: Any) -> Any:
        raise AssertionError("no calls expected")


def _context(state: dict[str, Any], api: FakeAPI, sandbox: FakeSandbox, run_id: int = 7) -> HandlerContext:
    async def load() -> dict[str, Any]:
        return state

    async def save(value: dict[str, Any]) -> None:
        saved.append(value)

    saved: list[dict[str, Any]] = []
    event = MessageReceived(
        bot_id="b",
        adapter="web",
        chat_type="private",
        chat_id="c1",
        message_id="m1",
        message_chain=MessageChain.of("compute"),
        sender=User(id="u1"),
    )
    return HandlerContext(
        bot_id="b",
        session=SessionKey("b", "private", "c1"),
        events=[event],
        run_id=run_id,
        api=api,
        clock=LoopClock(),
        load_state=load,
        save_state=save,
        stats=dict,
        sandbox=sandbox,
    )


def _agent(base_url: str, rounds: int = 16) -> AgentHandler:
    return AgentHandler(
        AgentConfig.model_validate(
            {
                "runner": "openai",
                "runner_config": {"base_url": base_url, "api_key": API_KEY, "model": "m"},
                "stream": False,
                "tools": {"sandbox": ["exec"], "max_rounds": rounds},
            }
        )
    )


async def test_sandbox_tool_result_goes_back_to_the_model(model: FakeOpenAI) -> None:
    model.script(Reply(calls=[Call("exec", {"command": "echo $((6*7))"})]), Reply(text="it is 42"))
    api, sandbox, state = FakeAPI(), FakeSandbox(), {}
    agent = _agent(model.base_url)
    try:
        await agent.handle(_context(state, api, sandbox))
    finally:
        await agent.close()
    assert [c.command for c in sandbox.calls] == ["echo $((6*7))"]
    assert api.sent == ["it is 42"]
    result = model.requests[1]["messages"][-1]
    assert result["role"] == "tool" and '"stdout":"42\\n"' in result["content"]
    assert "run" not in state["agent"]  # the run record is gone once the exchange is kept


async def test_a_replayed_run_resumes_from_recorded_tool_results(model: FakeOpenAI) -> None:
    recorded = [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "exec", "arguments": '{"command": "x"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"stdout": "recorded"}'},
    ]
    state: dict[str, Any] = {
        "agent": {"turns": [], "conversation": {}, "run": {"id": 7, "messages": recorded}}
    }
    model.script(Reply(text="answer from the record"))
    api, sandbox = FakeAPI(), FakeSandbox()
    agent = _agent(model.base_url)
    try:
        await agent.handle(_context(state, api, sandbox, run_id=7))
    finally:
        await agent.close()
    assert sandbox.calls == []  # not run again
    assert model.requests[0]["messages"][-2:] == recorded
    assert api.sent == ["answer from the record"]


async def test_tool_rounds_are_capped(model: FakeOpenAI) -> None:
    model.script(*[Reply(calls=[Call("exec", {"command": "true"})])] * 5)
    api, sandbox = FakeAPI(), FakeSandbox()
    agent = _agent(model.base_url, rounds=2)
    try:
        await agent.handle(_context({}, api, sandbox))
    finally:
        await agent.close()
    assert len(sandbox.calls) == 2 and len(model.requests) == 3
    assert api.sent == ["(stopped after 2 tool rounds)"]
