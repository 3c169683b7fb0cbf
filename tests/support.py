"""Helpers for tests that run a real fleet: config text, a started fleet, and a
web-chat client speaking the websocket protocol."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import parse_fleet
from callboard.app import Running, start
from callboard.engine.clock import Clock

PIPELINE_ECHO = """
      - event_type: message.received
        handler_type: pipeline
        handler_config: {stages: [{type: command}, {type: echo}]}
"""


def fleet_config(
    tmp_path: Path,
    *,
    window: str = "0",
    max_wait: str = "10s",
    idle_ttl: str = "10m",
    handlers: str = PIPELINE_ECHO,
    bots: tuple[str, ...] = ("demo",),
    extra: str = "",
    bot_extra: str = "",
) -> FleetConfig:
    """A fleet of web bots; ``extra`` is YAML for the fleet level (e.g. a
    ``sandbox:`` block), ``bot_extra`` one line added to every bot."""
    bot_blocks = "".join(
        textwrap.dedent(
            f"""
              - id: {bot}
                adapter: {{type: web}}
                session:
                  idle_ttl: {idle_ttl}
                  debounce: {{window: {window}, max_wait: {max_wait}}}
                {bot_extra}
                handlers:
            """
        )
        + textwrap.indent(textwrap.dedent(handlers).strip("\n"), "      ")
        + "\n"
        for bot in bots
    )
    text = (
        f"name: test\nengine:\n  journal: {tmp_path / 'journal.sqlite3'}\n"
        f"  admin: {{host: 127.0.0.1, port: 0}}\n  shutdown_timeout: 10s\n{extra}bots:\n"
        + textwrap.indent(bot_blocks, "  ")
    )
    return parse_fleet(text, "test.yaml")


@contextlib.asynccontextmanager
async def running_fleet(config: FleetConfig, clock: Clock | None = None) -> AsyncIterator[Running]:
    running = await start(config, port=0, clock=clock)
    try:
        yield running
    finally:
        await running.stop()


class ChatClient:
    """A web-chat client: send ops, collect every frame the server sends."""

    _ids = itertools.count(1)

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, base_url: str, bot: str = "demo") -> ChatClient:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"{base_url}/web/{bot}/ws")
        return cls(session, ws)

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append(orjson.loads(message.data))
                self._arrived.set()

    async def raw(self, data: str | bytes) -> None:
        if isinstance(data, bytes):
            await self.ws.send_bytes(data)
        else:
            await self.ws.send_str(data)

    async def op(self, **fields: Any) -> str:
        fields.setdefault("client_msg_id", f"c{next(self._ids)}")
        await self.ws.send_str(orjson.dumps(fields).decode())
        return str(fields["client_msg_id"])

    async def say(self, text: str, chat_id: str = "c1", user_id: str = "u1", **fields: Any) -> str:
        return await self.op(op="send", chat_id=chat_id, user_id=user_id, text=text, **fields)

    async def subscribe(self, chat_id: str = "c1", since: int = 0) -> dict[str, Any]:
        await self.ws.send_str(orjson.dumps({"op": "subscribe", "chat_id": chat_id, "since": since}).decode())
        return await self.wait_for(lambda f: f["op"] == "subscribed" and f["chat_id"] == chat_id)

    def of(self, op: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["op"] == op]

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        seen = 0
        while True:
            for frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no matching frame; got {self.frames[-5:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def wait_count(self, op: str, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.of(op)) < count:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{len(self.of(op))} {op} frames of {count}; last {self.frames[-3:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return self.of(op)

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        await self.session.close()


@contextlib.asynccontextmanager
async def chat_client(base_url: str, bot: str = "demo") -> AsyncIterator[ChatClient]:
    client = await ChatClient.connect(base_url, bot)
    try:
        yield client
    finally:
        await client.close()


async def eventually(check: Any, timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``check()`` until it returns something truthy (real time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
