"""What a listener gets: the event and what it may do about it.

Every action goes to the host as one call; the host checks it against the
plugin's manifest and runs it on the bot's outbound path, so a plugin never
holds a platform connection. The same context runs inside a runner process
and inside ``callboard.plugin.testing``, whose fake host records the calls.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from callboard.engine.entities import MessageChain, to_builtins
from callboard.engine.events import Event, MessageReceived
from callboard.engine.platform import COMMON_APIS, PlatformAPI
from callboard.engine.sandbox_api import (
    TOOL_NAMES,
    EditResult,
    ExecResult,
    GlobResult,
    GrepResult,
    ReadResult,
    WriteResult,
)


class ContextHost(Protocol):
    """Where a context's calls go: ``op`` is "send", "api" or "state"."""

    async def call(self, op: str, data: dict[str, Any]) -> Any: ...


def chain_data(message: str | MessageChain) -> list[Any]:
    chain = MessageChain.of(message) if isinstance(message, str) else message
    return list(to_builtins(chain.parts))


def _wire(value: Any) -> Any:
    if isinstance(value, MessageChain):
        return chain_data(value)
    if isinstance(value, msgspec.Struct):
        return to_builtins(value)
    return value


@functools.cache
def _api_signature(name: str) -> tuple[inspect.Signature, Any]:
    method = getattr(PlatformAPI, name)
    return inspect.signature(method), typing.get_type_hints(method).get("return")


class Api:
    """``ctx.api.<method>(...)``: the unified platform API (``callboard.engine.platform``),
    with the same arguments; results come back as the same typed entities."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name not in COMMON_APIS and name != "call_platform_api":
            raise AttributeError(f"no platform API {name!r}; see callboard.engine.platform.COMMON_APIS")
        signature, returns = _api_signature(name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(None, *args, **kwargs)  # None stands for the adapter's self
            params = {k: _wire(v) for k, v in list(bound.arguments.items())[1:]}
            params.pop("idempotency_key", None)  # the host keys every send itself
            if name == "send_message":
                return await self._ctx._send_data(
                    chat_type=params["chat_type"],
                    chat_id=params["chat_id"],
                    chain=params["message"],
                    thread_id=params.get("thread_id"),
                )
            if name == "reply_message":
                event = args[0] if args else kwargs["event"]
                return await self._ctx._send_data(
                    chat_type=event.chat_type,
                    chat_id=event.chat_id,
                    chain=params["message"],
                    reply_to=event.message_id,
                )
            result = await self._ctx._host.call("api", {"method": name, "args": params})
            if returns is None or result is None:
                return result
            return msgspec.convert(result, returns)

        call.__name__ = name
        return call


_TOOL_RESULTS: dict[str, type[Any]] = {
    "exec": ExecResult,
    "read": ReadResult,
    "write": WriteResult,
    "edit": EditResult,
    "glob": GlobResult,
    "grep": GrepResult,
}


class Sandbox:
    """``ctx.sandbox.<tool>(**args)``: the session's sandbox (``exec``, ``read``,
    ``write``, ``edit``, ``glob``, ``grep``), with the arguments of
    ``callboard.engine.sandbox_api``'s ``ExecArgs``, ``ReadArgs``, ...; results
    come back as its ``ExecResult``, ``ReadResult``, ... Each tool needs its
    ``sandbox:<tool>`` capability."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def __getattr__(self, tool: str) -> Callable[..., Awaitable[Any]]:
        if tool not in TOOL_NAMES:
            raise AttributeError(f"no sandbox tool {tool!r}; tools: {', '.join(TOOL_NAMES)}")

        async def call(**args: Any) -> Any:
            result = await self._ctx._host.call("sandbox", {"tool": tool, "args": args})
            return _TOOL_RESULTS[tool].model_validate(result)

        call.__name__ = tool
        return call


class Context:
    """One event (or debounced burst) delivered to one listener."""

    def __init__(
        self,
        *,
        host: ContextHost,
        plugin: str,
        events: list[Event],
        bot_id: str,
        session: tuple[str, str, str, str],
        log: logging.Logger,
        args: str | None = None,
        replayed: bool = False,
    ) -> None:
        self._host = host
        self.plugin = plugin
        self.events = events
        self.bot_id = bot_id
        self.session = session
        self.log = log
        self.args = args
        self.replayed = replayed
        self.api = Api(self)
        self.sandbox = Sandbox(self)
        self._state: dict[str, Any] | None = None
        self.postorder_prevented = False
        self.default_prevented = False

    @property
    def event(self) -> Event:
        """The event the listener runs for (the last of a burst)."""
        return self.events[-1]

    @property
    def text(self) -> str:
        """The message text, or "" for events that are not messages."""
        event = self.event
        return event.text if isinstance(event, MessageReceived) else ""

    @property
    def chat_type(self) -> str:
        return self.session[1]

    @property
    def chat_id(self) -> str:
        return self.session[2]

    def prevent_postorder(self) -> None:
        """Listeners after this one (in this and later plugins) do not see the event."""
        self.postorder_prevented = True

    def prevent_default(self) -> None:
        """The bot's fallback (the next routing rule that matches) does not run."""
        self.default_prevented = True

    async def reply(self, message: str | MessageChain, *, quote: bool = False) -> str | None:
        """Answer in the event's chat (a group event's group); ``quote`` replies to the message."""
        event = self.event
        reply_to = event.message_id if quote and isinstance(event, MessageReceived) else None
        return await self._send_data(
            chat_type=self.chat_type,
            chat_id=self.chat_id,
            chain=chain_data(message),
            thread_id=self.session[3] or None,
            reply_to=reply_to,
        )

    async def send(
        self, chat_type: str, chat_id: str, message: str | MessageChain, *, thread_id: str | None = None
    ) -> str | None:
        """Send to any chat of this bot; returns the platform's message id."""
        return await self._send_data(
            chat_type=chat_type, chat_id=chat_id, chain=chain_data(message), thread_id=thread_id
        )

    async def _send_data(
        self,
        *,
        chat_type: str,
        chat_id: str,
        chain: list[Any],
        thread_id: str | None = None,
        reply_to: str | None = None,
    ) -> str | None:
        data = {
            "chat_type": chat_type,
            "chat_id": chat_id,
            "chain": chain,
            "thread_id": thread_id,
            "reply_to": reply_to,
        }
        result = await self._host.call("send", data)
        return result.get("message_id") if isinstance(result, dict) else None

    async def state(self) -> dict[str, Any]:
        """This plugin's state for this session; changes are saved when the listener returns."""
        if self._state is None:
            result = await self._host.call("state", {})
            self._state = dict(result.get("state") or {}) if isinstance(result, dict) else {}
        return self._state

    @property
    def state_loaded(self) -> dict[str, Any] | None:
        return self._state
