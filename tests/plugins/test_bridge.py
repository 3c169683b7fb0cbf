"""The SDK's context against the host's bridge, in one process (no runner, no
socket): capabilities, chains, typed API results and sandbox tools."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from callboard.engine.clock import ManualClock
from callboard.engine.entities import ChatType, Group, MessageChain, User
from callboard.engine.events import MessageReceived
from callboard.engine.platform import MessageResult
from callboard.engine.plugin_protocol import Action, Code, RemoteError
from callboard.engine.sandbox_api import ExecArgs, ExecResult, SandboxOff
from callboard.handlers.context import HandlerContext
from callboard.handlers.plugin.bridge import Dispatch, PluginCounters, serve_call
from callboard.handlers.plugin.config import PluginRuntimeConfig, PluginSpec
from callboard.handlers.plugin.hub import PluginHub
from callboard.plugin.context import Context
from tests.plugins.support import FIXTURES


class RecordingAPI:
    """The bot's ``HandlerAPI`` as one run sees it, recording the calls (a unit-test double)."""

    max_text_length = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def supports(self, api: str) -> bool:
        return True

    async def send(self, chat_type: str, chat_id: str, message: MessageChain, **kw: Any) -> MessageResult:
        self.sent.append((chat_type, chat_id, message.text))
        return MessageResult(message_id=f"b{len(self.sent)}")

    async def call(self, api: str, **params: Any) -> Any:
        self.calls.append((api, params))
        if api == "get_group_info":
            return Group(id=params["group_id"], name="Team", member_count=3)
        return None


class FakeSandbox:
    tools = frozenset({"exec"})

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.args: list[ExecArgs] = []

    async def exec(self, args: ExecArgs) -> ExecResult:
        if self.error is not None:
            raise self.error
        self.args.append(args)
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


def handler_context(sandbox: Any = None) -> tuple[HandlerContext, RecordingAPI]:
    event = MessageReceived(
        bot_id="b",
        adapter="test",
        chat_type=ChatType.GROUP,
        chat_id="g1",
        message_id="m1",
        message_chain=MessageChain.of("hi"),
        sender=User(id="u1"),
    )
    api = RecordingAPI()
    state: dict[str, Any] = {}

    async def load() -> dict[str, Any]:
        return state

    async def save(_: dict[str, Any]) -> None:
        return None

    handler_ctx = HandlerContext(
        bot_id="b",
        session=event.session_key(),
        events=[event],
        run_id=1,
        api=api,  # type: ignore[arg-type]
        clock=ManualClock(),
        load_state=load,
        save_state=save,
        stats=dict,
        sandbox=sandbox,
    )
    return handler_ctx, api


def make(capabilities: set[str], sandbox: Any = None) -> tuple[Context, RecordingAPI, PluginCounters]:
    handler_ctx, api = handler_context(sandbox)
    event = handler_ctx.event
    counters = PluginCounters()
    dispatch = Dispatch(handler_ctx, "p", "p", frozenset(capabilities), counters)

    class Loopback:
        async def call(self, op: str, data: dict[str, Any]) -> Any:
            return await serve_call(dispatch, {"ctx": 1, "op": op, **data})

    ctx = Context(
        host=Loopback(),
        plugin="p",
        events=[event],
        bot_id="b",
        session=tuple(event.session_key()),  # type: ignore[arg-type]
        log=logging.getLogger("plugin.p"),
    )
    return ctx, api, counters


async def test_sends_api_calls_and_typed_results() -> None:
    ctx, api, counters = make({"send", "get_group_info", "edit_message"})
    assert await ctx.reply("hello", quote=True) == "b1"
    await ctx.api.send_message("private", "c9", MessageChain.of("direct"))
    group = await ctx.api.get_group_info("g1")
    assert isinstance(group, Group) and group.member_count == 3
    await ctx.api.edit_message("group", "g1", "m1", MessageChain.of("edited"))
    assert api.sent == [("group", "g1", "hello"), ("private", "c9", "direct")]
    name, params = api.calls[-1]
    assert name == "edit_message" and params["new_content"].text == "edited"
    assert counters.refused == 0


async def test_undeclared_calls_are_refused_and_counted() -> None:
    ctx, api, counters = make({"send"})
    with pytest.raises(RemoteError) as refused:
        await ctx.api.kick_member("g1", "u1")
    assert refused.value.code == Code.NOT_DECLARED
    with pytest.raises(RemoteError):
        await ctx.state()
    with pytest.raises(RemoteError):
        await ctx.sandbox.exec(argv=["true"])
    assert counters.refused == 3 and api.calls == []
    with pytest.raises(AttributeError):
        ctx.api.format_disk  # noqa: B018  (not a platform API: refused before anything is sent)


async def test_sandbox_tools_reach_the_sessions_sandbox() -> None:
    sandbox = FakeSandbox()
    ctx, _, _ = make({"sandbox:exec"}, sandbox)
    result = await ctx.sandbox.exec(argv=["python3", "-c", "print(6 * 7)"])
    assert isinstance(result, ExecResult) and result.stdout == "42\n" and result.ok
    assert sandbox.args[0].argv == ["python3", "-c", "print(6 * 7)"]
    with pytest.raises(RemoteError) as bad:
        await ctx.sandbox.exec(argv=["x"], colour="red")
    assert bad.value.code == Code.BAD_REQUEST
    off, _, _ = make({"sandbox:exec"}, FakeSandbox(SandboxOff("sandboxes are off for this bot")))
    with pytest.raises(RemoteError, match="sandbox_off"):
        await off.sandbox.exec(argv=["true"])
    none, _, _ = make({"sandbox:exec"})
    with pytest.raises(RemoteError) as unavailable:
        await none.sandbox.exec(argv=["true"])
    assert unavailable.value.code == Code.UNAVAILABLE


async def test_a_runner_may_act_only_for_its_own_events() -> None:
    hub = PluginHub(PluginRuntimeConfig())
    hub.configure([PluginSpec(path=str(FIXTURES / "echoer")), PluginSpec(path=str(FIXTURES / "crasher"))])
    handler_ctx, api = handler_context()
    hub.dispatches[7] = Dispatch(handler_ctx, "echoer", "echoer", frozenset({"send"}), PluginCounters())
    send = {
        "ctx": 7,
        "op": "send",
        "chat_type": "group",
        "chat_id": "g1",
        "chain": [{"type": "Plain", "text": "x"}],
    }
    with pytest.raises(RemoteError) as borrowed:
        await hub.serve("crasher", Action.CALL, send)
    assert borrowed.value.code == Code.UNKNOWN and api.sent == []
    assert await hub.serve("echoer", Action.CALL, send) == {"message_id": "b1"}
