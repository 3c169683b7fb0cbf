"""Helpers for tests that run a real fleet: config text, a started fleet, what its
journal stored, and a web-chat client speaking the websocket protocol."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import sqlite3
import subprocess
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiohttp
import orjson
import pytest

from callboard.actors.config import FleetConfig
from callboard.actors.config_file import parse_fleet
from callboard.adapters.web.config import WebAdapterConfig
from callboard.adapters.web.identity import Identity, Sessions
from callboard.app import Running, start
from callboard.bench.harness import engine_argv
from callboard.engine.clock import Clock
from callboard.engine.events import Event, SessionKey, decode_event
from callboard.testing.cluster import RATE_LIMITS_OFF as RATE_LIMITS_OFF

ROOT = Path(__file__).resolve().parents[1]

PIPELINE_ECHO = """
      - event_type: message.received
        handler_type: pipeline
        handler_config: {stages: [{type: command}, {type: echo}]}
"""


#: web adapter rate limits high enough for tests that are not about them
UNLIMITED = (
    "rate_per_connection: {per_second: 1000000, burst: 1000000}, "
    "rate_per_user: {per_second: 1000000, burst: 1000000}"
)
#: the session secret of test fleets' web bots, so a test can sign in as a user it names
SESSION_SECRET = "test-session-secret-0123456789"
#: the key of the fake OpenAI-compatible server (``model``), in the agents' runner_config
API_KEY = "sk-test-0123456789abcdef"
WEB = f"{UNLIMITED}, session_secret: {SESSION_SECRET}"


def session_token(user_id: str, bot: str = "demo", name: str = "") -> str:
    """A web chat session for ``user_id``, as the test fleets' web bots issue them."""
    config = WebAdapterConfig(session_secret=SESSION_SECRET)  # type: ignore[arg-type]

    def no_fleet_secret() -> bytes:
        raise AssertionError("the session secret is configured")

    sessions = Sessions(bot, config, no_fleet_secret)
    return sessions.issue(Identity(user_id=user_id, name=name or user_id, anonymous=False))


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
    web: str = WEB,
) -> FleetConfig:
    """A fleet of web bots; ``extra`` is YAML for the fleet level (e.g. a
    ``sandbox:`` block), ``bot_extra`` one line added to every bot, ``web`` the fields of
    the web ``adapter:`` block (by default: no rate limits to speak of, a known session secret)."""
    bot_blocks = "".join(
        textwrap.dedent(
            f"""
              - id: {bot}
                adapter: {{type: web, {web}}}
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


@dataclasses.dataclass(frozen=True)
class PlatformBot:
    """The one bot ``bot`` of a platform adapter's tests, in fleet files parsed as ``file``."""

    bot: str
    file: str

    def fleet(
        self, tmp_path: Path, adapter: str, *, handlers: str, port: int, window: str, session: str = ""
    ) -> FleetConfig:
        """A fleet with the bot alone: ``adapter`` is the YAML of its ``adapter:`` block,
        ``handlers`` of its handler list (empty: none), ``session`` one more line of its
        ``session:`` block."""
        adapter_lines = textwrap.indent(textwrap.dedent(adapter).strip() + "\n", " " * 6)
        text = (
            f"name: test\nengine:\n  journal: {tmp_path / 'journal.sqlite3'}\n"
            f"  admin: {{host: 127.0.0.1, port: {port}}}\n  shutdown_timeout: 10s\n"
            f"bots:\n  - id: {self.bot}\n    adapter:\n{adapter_lines}"
            f"    session:\n      debounce: {{window: {window}, max_wait: 10s}}\n"
            + (f"      {session}\n" if session else "")
            + "    handlers:"
            + ("\n" + textwrap.indent(textwrap.dedent(handlers).strip(), "      ") if handlers else " []")
            + "\n"
        )
        return parse_fleet(text, self.file)

    @staticmethod
    def running(config: FleetConfig) -> contextlib.AbstractAsyncContextManager[Running]:
        """The fleet on the port its file names (a webhook URL needs it up front)."""
        return running_fleet(config, port=None)

    async def stored_events(self, fleet: Running) -> list[Event]:
        return await stored_events(fleet, self.bot)


class _Fake(Protocol):
    async def close(self) -> None: ...


_F = TypeVar("_F", bound=_Fake)


@contextlib.asynccontextmanager
async def serving(started: Awaitable[_F]) -> AsyncIterator[_F]:
    """A fake platform, once ``started``, until the block ends (then closed)."""
    server = await started
    try:
        yield server
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def running_fleet(
    config: FleetConfig, clock: Clock | None = None, *, port: int | None = 0
) -> AsyncIterator[Running]:
    """The fleet, started and stopped; on any free port unless ``port`` says otherwise
    (``None``: the one its file names, as a platform's webhook URL needs it up front)."""
    running = await start(config, port=port, clock=clock)
    try:
        yield running
    finally:
        await running.stop()


async def stored_events(fleet: Running, bot: str) -> list[Event]:
    """Every event the journal stored for ``bot``, in order."""
    rows = await fleet.journal.query("SELECT payload FROM events WHERE bot=? ORDER BY seq", (bot,))
    return [decode_event(payload) for (payload,) in rows]


def crash_fleet(journal: Path, port: int, bot: str, adapter: str) -> str:
    """The fleet file of a kill -9 test: one bot ``bot`` whose ``adapter:`` block is
    ``adapter`` (YAML) with the outbound rate limits off, echoing each message at once."""
    adapter_lines = textwrap.indent(textwrap.dedent(adapter).strip(), " " * 6)
    return (
        f"name: crash\nengine:\n  journal: {journal}\n  admin: {{host: 127.0.0.1, port: {port}}}\n"
        f"bots:\n  - id: {bot}\n    adapter:\n{adapter_lines}\n"
        f"      {RATE_LIMITS_OFF}\n"
        "    session:\n      debounce: {window: 0}\n"
        "    handlers:\n"
        "      - event_type: message.received\n"
        "        handler_type: pipeline\n"
        "        handler_config: {stages: [{type: echo}]}\n"
    )


def engine_process(config: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``callboard run config`` as a child process a test may kill: its INFO log appended to
    ``log``, else its output (WARNING and up) dropped."""
    if log is None:
        return subprocess.Popen(
            engine_argv(config), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    with log.open("ab") as out:
        return subprocess.Popen(engine_argv(config, "INFO"), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def assert_stored_once(journal: Path, bot: str, key: Callable[[dict[str, Any]], object], count: int) -> None:
    """The SQLite journal kept ``count`` events of ``bot``, each once (told apart by ``key``
    of the stored payload), and every one was marked done."""
    with sqlite3.connect(journal) as db:
        rows = db.execute("SELECT payload, done_at FROM events WHERE bot=?", (bot,)).fetchall()
    stored = collections.Counter(key(orjson.loads(payload)) for payload, _ in rows)
    assert len(stored) == count and set(stored.values()) == {1}
    assert all(done is not None for _, done in rows)


def stall_appends(monkeypatch: pytest.MonkeyPatch, fleet: Running, *, seconds: float, count: int) -> None:
    """Fault injection: the next ``count`` journal appends take ``seconds`` to become durable."""
    loop = asyncio.get_running_loop()
    real_append = fleet.journal.append
    left = count

    def stalled_append(event: Event, session: SessionKey) -> asyncio.Future[int | None]:
        nonlocal left
        inner = real_append(event, session)
        if left == 0:
            return inner
        left -= 1
        outer: asyncio.Future[int | None] = loop.create_future()
        loop.call_later(seconds, inner.add_done_callback, lambda done: outer.set_result(done.result()))
        return outer

    monkeypatch.setattr(fleet.journal, "append", stalled_append)


class ChatClient:
    """A web-chat client: send ops, collect every frame the server sends.

    It connects with a session token when given one (``Authorization: Bearer``), else the
    server makes it a fresh anonymous user; either way ``user_id`` and ``token`` are what
    the ``hello`` frame said, so ``ChatClient.connect(url, token=old.token)`` is the same
    user again. Private chat names are qualified as the protocol wants them: ``"c1"`` is
    this user's ``"<user_id>:c1"`` (``chat("c1")``); group ids are used as given.
    """

    _ids = itertools.count(1)

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())
        self.user_id = ""
        self.token: str | None = None

    @classmethod
    async def connect(
        cls,
        base_url: str,
        bot: str = "demo",
        token: str | None = None,
        user: str | None = None,
        **headers: str,
    ) -> ChatClient:
        """``user``: signed in as that user (test fleets' session secret); else ``token``'s
        user, else a fresh anonymous one."""
        session = aiohttp.ClientSession()
        if user is not None:
            token = session_token(user, bot)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            ws = await session.ws_connect(f"{base_url}/web/{bot}/ws", headers=headers)
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws)
        hello = await client.wait_for(lambda f: f["op"] == "hello")
        client.user_id = hello["user_id"]
        client.token = hello.get("token") or token
        return client

    def chat(self, name: str) -> str:
        """This user's private chat called ``name``."""
        return name if ":" in name else f"{self.user_id}:{name}"

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
        private = fields.get("chat_type", "private") == "private" and fields.get("op") not in (
            "join",
            "leave",
        )
        if private and isinstance(fields.get("chat_id"), str):
            fields["chat_id"] = self.chat(fields["chat_id"])
        await self.ws.send_str(orjson.dumps(fields).decode())
        return str(fields["client_msg_id"])

    async def say(self, text: str, chat_id: str = "c1", **fields: Any) -> str:
        return await self.op(op="send", chat_id=chat_id, text=text, **fields)

    async def join(self, group: str, name: str = "") -> dict[str, Any]:
        """Join a group (the user may then read and write it); waits for its answer."""
        cid = await self.op(op="join", chat_id=group, group_name=name)
        return await self.wait_for(lambda f: f.get("client_msg_id") == cid)

    async def subscribe(self, chat_id: str = "c1", since: int = 0, group: bool = False) -> dict[str, Any]:
        chat_id = chat_id if group else self.chat(chat_id)
        await self.ws.send_str(orjson.dumps({"op": "subscribe", "chat_id": chat_id, "since": since}).decode())
        return await self.wait_for(
            lambda f: (
                (f["op"] == "subscribed" and f["chat_id"] == chat_id)
                or (f["op"] == "error" and f.get("code") == "forbidden")
            )
        )

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
async def chat_client(
    base_url: str, bot: str = "demo", token: str | None = None, user: str | None = None
) -> AsyncIterator[ChatClient]:
    client = await ChatClient.connect(base_url, bot, token, user)
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
