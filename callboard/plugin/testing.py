"""Testing a plugin without an engine: its listeners run in this process
against a fake host that records every send and API call.

    tester = PluginTester(KeywordReply, config={"keywords": {"hi": "hello!"}})
    await tester.start()
    outcome = await tester.emit(tester.message("hi there"))
    assert outcome.replies == ["hello!"]

The listeners are chosen and ordered as the engine does (event patterns,
commands, priority, ``prevent_postorder``), the config is validated by the
plugin's model, and with ``capabilities`` given, a call the manifest would not
allow fails the same way it would in a runner.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from callboard.engine.entities import ChatType, Group, MessageChain, User
from callboard.engine.events import Event, MemberJoined, MessageReceived
from callboard.engine.plugin_protocol import Code, RemoteError, command_args
from callboard.handlers.routing import type_matches
from callboard.plugin.context import Context
from callboard.plugin.plugin import Plugin
from callboard.plugin.runner import validate_config


@dataclass
class Sent:
    chat_type: str
    chat_id: str
    text: str
    chain: list[Any]
    reply_to: str | None


@dataclass
class Outcome:
    """What one event made the plugin do."""

    sent: list[Sent] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    listeners: list[str] = field(default_factory=list)
    postorder_prevented: bool = False
    default_prevented: bool = False

    @property
    def replies(self) -> list[str]:
        return [s.text for s in self.sent]


class _FakeHost:
    def __init__(self, tester: PluginTester, outcome: Outcome, session: tuple[str, str, str, str]) -> None:
        self.tester = tester
        self.outcome = outcome
        self.session = session

    async def call(self, op: str, data: dict[str, Any]) -> Any:
        tester = self.tester
        if op == "send":
            tester.require("send")
            text = "".join(c.get("text", "") for c in data["chain"] if c.get("type") == "Plain")
            self.outcome.sent.append(
                Sent(data["chat_type"], data["chat_id"], text, data["chain"], data["reply_to"])
            )
            return {"message_id": f"sent-{next(tester.ids)}"}
        if op == "state":
            tester.require("state")
            return {"state": tester.states.setdefault(self.session, {})}
        if op == "sandbox":
            tester.require(f"sandbox:{data['tool']}")
            self.outcome.calls.append((f"sandbox:{data['tool']}", data["args"]))
            return tester.sandbox_results[data["tool"]]
        tester.require(data["method"])
        self.outcome.calls.append((data["method"], data["args"]))
        return tester.api_results.get(data["method"])


class PluginTester:
    def __init__(
        self,
        plugin: type[Plugin],
        *,
        config: dict[str, Any] | None = None,
        capabilities: Iterable[str] | None = None,
        name: str = "plugin",
        bot_id: str = "test",
    ) -> None:
        self.plugin_cls = plugin
        self.config = config or {}
        self.capabilities = None if capabilities is None else frozenset(capabilities)
        self.name = name
        self.bot_id = bot_id
        #: what an API call returns, by method name (a dict/list as the engine would send it)
        self.api_results: dict[str, Any] = {}
        #: what a sandbox tool returns, by tool name (its result model's fields as a dict)
        self.sandbox_results: dict[str, dict[str, Any]] = {}
        #: per-session state, as the engine would keep it between events
        self.states: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.instance: Plugin | None = None

    def require(self, capability: str) -> None:
        if self.capabilities is not None and capability not in self.capabilities:
            raise RemoteError(
                Code.NOT_DECLARED, f"{capability!r} is not declared in the capabilities of plugin.yaml"
            )

    async def start(self) -> Plugin:
        """Validate the config with the plugin's model and run ``on_load``."""
        instance = self.plugin_cls()
        instance.name = self.name
        instance.config = validate_config(self.plugin_cls, self.config)
        instance.log = logging.getLogger(f"plugin.{self.name}")
        await instance.on_load()
        self.instance = instance
        return instance

    async def emit(self, *events: Event) -> Outcome:
        """Deliver an event (or a burst: the last one routes) to the matching listeners."""
        assert self.instance is not None, "await tester.start() first"
        event = events[-1]
        session = event.session_key()
        outcome = Outcome()
        ctx = Context(
            host=_FakeHost(self, outcome, tuple(session)),  # type: ignore[arg-type]
            plugin=self.name,
            events=list(events),
            bot_id=self.bot_id,
            session=tuple(session),  # type: ignore[arg-type]
            log=self.instance.log,
        )
        listeners = sorted(type(self.instance).listeners().values(), key=lambda item: -item[0].priority)
        for info, attr in listeners:
            if not any(type_matches(pattern, event) for pattern in info.events):
                continue
            ctx.args = command_args(info.command, ctx.text) if info.command else None
            if info.command and ctx.args is None:
                continue
            outcome.listeners.append(info.id)
            await getattr(self.instance, attr)(ctx)
            if ctx.postorder_prevented:
                break
        outcome.postorder_prevented = ctx.postorder_prevented
        outcome.default_prevented = ctx.default_prevented
        if ctx.state_loaded is not None:
            self.states[tuple(session)] = ctx.state_loaded  # type: ignore[index]
        return outcome

    # ------------------------------------------------------------------ events to emit

    def message(
        self,
        text: str,
        *,
        chat_id: str = "c1",
        chat_type: str = "private",
        user_id: str = "u1",
        user_name: str = "",
    ) -> MessageReceived:
        return MessageReceived(
            bot_id=self.bot_id,
            adapter="test",
            chat_type=ChatType(chat_type),
            chat_id=chat_id,
            message_id=f"m{next(self.ids)}",
            message_chain=MessageChain.of(text),
            sender=User(id=user_id, nickname=user_name),
        )

    def member_joined(
        self, group_id: str, user_id: str, *, user_name: str = "", group_name: str = ""
    ) -> MemberJoined:
        return MemberJoined(
            bot_id=self.bot_id,
            adapter="test",
            group=Group(id=group_id, name=group_name),
            member=User(id=user_id, nickname=user_name),
        )
