"""Serving a plugin's calls against the handler run it is answering.

Every call names its dispatch (one event delivered to one plugin); the call
runs on that run's ``HandlerContext``, so sends take the session's outbound
path (rate limits, retries, receipts) and API calls the bot's ``HandlerAPI``.
Each call is checked against the capabilities in the plugin's manifest first;
an undeclared one is refused with ``NOT_DECLARED`` and counted.
"""

from __future__ import annotations

import functools
import logging
import typing
from typing import Any

import msgspec
from pydantic import BaseModel, ValidationError

from callboard.engine.entities import Component, MessageChain, to_builtins
from callboard.engine.events import MessageReceived
from callboard.engine.platform import COMMON_APIS, NotSupportedError, PlatformAPI
from callboard.engine.plugin_protocol import Code, RemoteError
from callboard.engine.sandbox_api import (
    TOOL_NAMES,
    EditArgs,
    ExecArgs,
    GlobArgs,
    GrepArgs,
    ReadArgs,
    SandboxError,
    WriteArgs,
)
from callboard.handlers.context import HandlerContext

log = logging.getLogger("callboard.plugins")

#: sends ride on ``send``, not on their own names
_SENDS = frozenset({"send_message", "reply_message"})
_TOOL_ARGS: dict[str, type[BaseModel]] = {
    "exec": ExecArgs,
    "read": ReadArgs,
    "write": WriteArgs,
    "edit": EditArgs,
    "glob": GlobArgs,
    "grep": GrepArgs,
}


class PluginCounters:
    __slots__ = ("events", "failures", "refused", "retries", "timeouts")

    def __init__(self) -> None:
        self.events = 0
        self.failures = 0
        self.timeouts = 0
        self.retries = 0
        self.refused = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class Dispatch:
    """One event delivered to one plugin: the run it belongs to and what the plugin may do."""

    __slots__ = ("capabilities", "counters", "ctx", "plugin", "runner")

    def __init__(
        self,
        ctx: HandlerContext,
        plugin: str,
        runner: str,
        capabilities: frozenset[str],
        counters: PluginCounters,
    ) -> None:
        self.ctx = ctx
        self.plugin = plugin
        self.runner = runner
        self.capabilities = capabilities
        self.counters = counters

    @property
    def state_key(self) -> str:
        return f"plugin:{self.plugin}"


def _require(dispatch: Dispatch, capability: str) -> None:
    if capability not in dispatch.capabilities:
        dispatch.counters.refused += 1
        log.warning("plugin %s: refused %r: not declared in its manifest", dispatch.plugin, capability)
        raise RemoteError(
            Code.NOT_DECLARED, f"{capability!r} is not declared in the capabilities of plugin.yaml"
        )


_COMPONENTS = list[Component]  # one type object, so msgspec reuses what it learnt of it


def decode_chain(data: Any) -> MessageChain:
    try:
        return MessageChain.of(*msgspec.convert(data, _COMPONENTS))
    except msgspec.ValidationError as exc:
        raise RemoteError(Code.BAD_REQUEST, f"invalid message chain: {exc}") from None


@functools.cache
def _param_types(method: str) -> dict[str, Any]:
    return typing.get_type_hints(getattr(PlatformAPI, method))


def _decode_args(method: str, args: dict[str, Any]) -> dict[str, Any]:
    hints = _param_types(method)
    out: dict[str, Any] = {}
    for key, value in args.items():
        hint = hints.get(key)
        if hint is None or key == "return":
            raise RemoteError(Code.BAD_REQUEST, f"{method} has no argument {key!r}")
        if hint is MessageChain:
            out[key] = decode_chain(value)
            continue
        try:
            out[key] = msgspec.convert(value, hint)
        except msgspec.ValidationError as exc:
            raise RemoteError(Code.BAD_REQUEST, f"{method}: argument {key!r}: {exc}") from None
    return out


async def serve_call(dispatch: Dispatch, data: dict[str, Any]) -> Any:
    op = data.get("op")
    ctx = dispatch.ctx
    if op == "send":
        _require(dispatch, "send")
        return await _send(ctx, data)
    if op == "state":
        _require(dispatch, "state")
        state = await ctx.state()
        return {"state": state.get(dispatch.state_key) or {}}
    if op == "api":
        method = str(data.get("method"))
        if method not in COMMON_APIS and method != "call_platform_api":
            raise RemoteError(Code.UNKNOWN, f"no platform API {method!r}")
        if method in _SENDS:
            raise RemoteError(Code.BAD_REQUEST, f"{method} travels as a send")
        _require(dispatch, method)
        args = _decode_args(method, dict(data.get("args") or {}))
        try:
            result = await ctx.api.call(method, **args)
        except NotSupportedError as exc:
            raise RemoteError(Code.NOT_SUPPORTED, str(exc)) from None
        return to_builtins(result)
    if op == "sandbox":
        return await _sandbox(dispatch, str(data.get("tool")), dict(data.get("args") or {}))
    raise RemoteError(Code.UNKNOWN, f"unknown call {op!r}")


async def _sandbox(dispatch: Dispatch, tool: str, args: dict[str, Any]) -> Any:
    """A sandbox tool on the session's sandbox (the bot's policy applies as for any handler)."""
    if tool not in TOOL_NAMES:
        raise RemoteError(Code.UNKNOWN, f"no sandbox tool {tool!r}; tools: {', '.join(TOOL_NAMES)}")
    _require(dispatch, f"sandbox:{tool}")
    sandbox = dispatch.ctx.sandbox
    if sandbox is None:
        raise RemoteError(Code.UNAVAILABLE, "sandboxes are off for this bot")
    try:
        parsed = _TOOL_ARGS[tool].model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        )
        raise RemoteError(Code.BAD_REQUEST, f"sandbox {tool}: {problems}") from None
    try:
        result = await getattr(sandbox, tool)(parsed)
    except SandboxError as exc:
        raise RemoteError(Code.FAILED, f"{exc.code}: {exc}") from None
    return result.model_dump(mode="json")


async def _send(ctx: HandlerContext, data: dict[str, Any]) -> dict[str, Any]:
    chain = decode_chain(data.get("chain"))
    reply_to: MessageReceived | None = None
    if data.get("reply_to") is not None:
        wanted = str(data["reply_to"])
        reply_to = next((m for m in ctx.messages if m.message_id == wanted), None)
        if reply_to is None:
            raise RemoteError(Code.BAD_REQUEST, f"message {wanted!r} is not an event of this run")
    try:
        result = await ctx.send(
            str(data["chat_type"]),
            str(data["chat_id"]),
            chain,
            reply_to=reply_to,
            thread_id=data.get("thread_id"),
        )
    except NotSupportedError as exc:
        raise RemoteError(Code.NOT_SUPPORTED, str(exc)) from None
    return {"message_id": result.message_id}
